// mp_infer: run one image through an exported engine and write the task's outputs.
//
//   mp_infer --engine FILE --input IMAGE --output OUT.png [--raw OUT16.png] [--npy OUT.npy] [--colormap]
//
// Every output is written under a temporary name and renamed only once all of them are complete, all or
// none (a failed rename undoes the others), so a failed run leaves none behind. An output path where something
// other than a regular file is (a device, FIFO, socket, folder or symbolic link) is refused before anything
// runs, and again right before the rename; inputs that are not regular files are refused without blocking.
// Errors are one line on stderr, `mp_infer: error: ...`, with exit status 1 (2 for bad arguments).
#include <limits.h>
#include <signal.h>
#include <stdlib.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "mp_deploy/engine.h"
#include "mp_deploy/image.h"

namespace {

const char* kUsage =
    "usage: mp_infer --engine FILE --input IMAGE [--output OUT.png] [--raw OUT16.png] [--npy OUT.npy] [--colormap]\n"
    "                [--threads N]\n"
    "  --engine    an exported .pt2 (AOTInductor) or .engine (TensorRT) with its .json sidecar\n"
    "  --input     a PNG or JPEG image (resized to the engine's optimal size if it does not fit the engine)\n"
    "  --output    depth: 8-bit PNG (near is bright; viridis with --colormap, else grayscale);\n"
    "              seg: colour palette PNG of the labels; pose: the image with keypoint dots\n"
    "  --raw       depth: 16-bit PNG of depth * png16_scale (sidecar); seg: 8/16-bit label PNG\n"
    "  --npy       the network's raw float32 output (B, C, h, w) as a NumPy .npy file\n"
    "  --colormap  colour-map the depth preview\n"
    "  --threads   CPU artifacts: intra-op threads (1-4096; default MP_DEPLOY_CPU_THREADS, else half the CPUs)\n"
    "Pose keypoints are printed to stdout as 'index x y score' in image pixels.\n";

void usage(std::ostream& out) {
  out << kUsage << "Images of more than " << mp::max_pixels() << " pixels (the artifact schema's max_pixels) or "
      << "with a side under " << mp::min_side() << " pixels are refused from their header.\n";
}

struct Args {
  std::string engine, input, output, raw, npy, threads;
  bool colormap = false;
};

// The file an output path names: its folder resolved (links, ., ..), its own name kept (it may not exist
// yet; a link there is refused, never followed or replaced).
std::string as_output(const std::string& path) {
  size_t slash = path.find_last_of('/');
  std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  char buf[PATH_MAX];
  if (!realpath(dir.c_str(), buf)) return path;  // a missing folder: creating the output says so
  return std::string(buf) + (buf[1] ? "/" : "") + path.substr(slash == std::string::npos ? 0 : slash + 1);
}

// Two outputs on one file would overwrite each other; an output on an input would destroy it.
bool distinct_paths(const Args& a) {
  std::vector<std::pair<std::string, std::string>> taken;  // resolved path, option
  for (const auto& [path, option] : {std::pair{a.engine, "--engine"}, {a.engine + ".json", "--engine's sidecar"},
                                     {a.input, "--input"}}) {
    taken.push_back({as_output(path), option});
    char buf[PATH_MAX];
    if (realpath(path.c_str(), buf)) taken.push_back({buf, option});
  }
  for (const auto& [path, option] : {std::pair{a.output, "--output"}, {a.raw, "--raw"}, {a.npy, "--npy"}}) {
    if (path.empty()) continue;
    std::string file = as_output(path);
    for (const auto& [other, other_option] : taken)
      if (file == other) {
        std::cerr << "mp_infer: " << option << " and " << other_option << " are the same file: " << path << "\n";
        return false;
      }
    taken.push_back({file, option});
  }
  return true;
}

bool parse(int argc, char** argv, Args* a) {
  std::map<std::string, std::string*> values = {{"--engine", &a->engine}, {"--input", &a->input},
                                                {"--output", &a->output}, {"--raw", &a->raw}, {"--npy", &a->npy},
                                                {"--threads", &a->threads}};
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      usage(std::cout);
      std::exit(0);
    }
    if (arg == "--colormap") {
      a->colormap = true;
    } else if (values.count(arg) && i + 1 < argc) {
      *values[arg] = argv[++i];
    } else {
      std::cerr << "mp_infer: unknown or incomplete argument " << arg << "\n";
      return false;
    }
  }
  if (a->engine.empty() || a->input.empty()) {
    std::cerr << "mp_infer: --engine and --input are required\n";
    return false;
  }
  if (!a->threads.empty() && (a->threads.size() > 4 || a->threads.find_first_not_of("0123456789") != std::string::npos ||
                              std::stoi(a->threads) < 1 || std::stoi(a->threads) > 4096)) {
    std::cerr << "mp_infer: --threads must be a whole number from 1 to 4096, got '" << a->threads.substr(0, 40)
              << "'\n";
    return false;
  }
  if (a->output.empty() && a->raw.empty() && a->npy.empty()) {
    std::cerr << "mp_infer: give at least one of --output, --raw, --npy\n";
    return false;
  }
  return distinct_paths(*a);
}

int run(const Args& a) {
  // before any work: an output path where a device, FIFO, socket, folder or link is (checked again at the rename)
  for (const auto& [path, option] : {std::pair{a.output, "--output"}, {a.raw, "--raw"}, {a.npy, "--npy"}})
    if (!path.empty()) mp::check_replaceable(path, option);
  mp::LoadOptions options;
  options.cpu_threads = mp::cpu_threads(a.threads.empty() ? 0 : std::stoi(a.threads));  // a bad environment: now
  mp::Image image = mp::read_image(a.input);  // first: cheap, while loading hashes the whole engine
  std::unique_ptr<mp::Engine> engine = mp::Engine::load(a.engine, options);
  mp::OutputPaths paths{a.output, a.raw, a.npy, a.colormap};
  mp::check_outputs(engine->sidecar(), paths);  // before running: outputs the task cannot write
  mp::Result r = engine->run(image);
  std::vector<mp::OutputFile> files;  // all written first, renamed together at the end
  mp::write_outputs(r, image, engine->sidecar(), paths, &files);
  mp::commit_all(files);
  for (size_t k = 0; k < r.keypoints.size(); ++k)
    std::printf("%zu %.2f %.2f %.5f\n", k, r.keypoints[k].x, r.keypoints[k].y, r.keypoints[k].score);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // SIGTERM stops a run wherever it is, also when the parent left it ignored or blocked (both are inherited
  // through exec); mp_infer has nothing to clean up that a kill would leave half done (outputs are renamed last)
  signal(SIGTERM, SIG_DFL);
  sigset_t term;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  sigprocmask(SIG_UNBLOCK, &term, nullptr);
  Args args;
  if (!parse(argc, argv, &args)) {
    usage(std::cerr);
    return 2;
  }
  try {
    return run(args);
  } catch (const std::exception& e) {  // mp::Error, and anything a backend lets through
    std::string message = e.what();
    for (char& c : message)  // one line (a backend's message may span several)
      if (c == '\n' || c == '\r') c = ' ';
    std::cerr << "mp_infer: error: " << message << "\n";
  } catch (...) {
    std::cerr << "mp_infer: error: an unknown exception\n";
  }
  return 1;
}
