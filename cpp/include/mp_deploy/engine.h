// mp_deploy_cpp: run an exported Meta Prompts engine (AOTInductor .pt2 or TensorRT .engine) from C++.
//
// The artifact's JSON sidecar (<artifact>.json, written by mp_deploy/artifacts.py) is the contract:
// it says which backend built the file, its checksum, the allowed input shapes and the pre/post-processing
// constants. Engine::load checks all of it before anything runs.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "mp_deploy/image.h"

namespace mp {

// Anything that stops a run: missing or corrupt artifact, wrong machine, bad image, backend failure.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A dense float32 tensor on the host, row-major.
struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
  int64_t numel() const;
};

// The shape range an artifact was built for: [min, opt, max] per dimension; height and width are multiples
// of multiple_of where their range is dynamic.
struct ShapeRange {
  int batch[3] = {1, 1, 1}, height[3] = {0, 0, 0}, width[3] = {0, 0, 0};
  int multiple_of = 1;
  // "" when a (batch, height, width) input is one the artifact was built for, else what is wrong with it.
  std::string why_not(int64_t batch, int64_t height, int64_t width) const;
};

// The parts of the sidecar the C++ side uses (see describe_io in mp_deploy/artifacts.py), read after every
// field was validated against mp_deploy/artifact_schema.json and against the contract inside the artifact.
struct Sidecar {
  std::string path;  // of the sidecar itself
  std::string task, backend, device, precision, size;
  ShapeRange shapes;
  // input
  std::string input_name = "images", input_dtype = "float32", layout = "NCHW", color = "RGB";
  float scale = 1.0f / 255.0f;
  float mean[3] = {0, 0, 0}, std[3] = {1, 1, 1};
  // output
  std::string output_name, output_kind, output_dtype = "float32";
  int stride = 1, num_classes = 0, num_keypoints = 0;
  double max_depth = 0, png16_scale = 0;
  // integrity and provenance
  std::string file_sha256;
  int64_t file_bytes = -1;
  std::vector<std::string> plugin_libraries;  // paths of verified `plugins`: plain names in the artifact's folder
  std::string torch_version, tensorrt_version, gpu_name, gpu_compute_capability;  // "" when null
};

struct LoadOptions {
  bool verify_checksum = true;  // SHA-256 of the artifact and its extra files (reads them whole); plugins always
  bool check_machine = true;    // CUDA present, same GPU / compute capability, same torch / TensorRT version
  int device_index = 0;         // CUDA device for cuda artifacts
  int cpu_threads = 0;          // CPU artifacts: intra-op threads; 0 = MP_DEPLOY_CPU_THREADS, else half the CPUs
                                // this process may run on (at least 1), as the Python side (cpu_threads.py)
};

// The thread count a CPU artifact runs with: `requested` when > 0, else MP_DEPLOY_CPU_THREADS (1..4096; Error
// naming it otherwise), else half the CPUs in this process's affinity mask (at least 1). Set OMP_WAIT_POLICY=PASSIVE
// in the environment before the process starts when more than one thread runs: libgomp reads it once, at load.
int cpu_threads(int requested = 0);

struct Keypoint {
  float x, y, score;  // in input image pixels
};

struct Result {
  std::string task;           // the sidecar's task: depth | seg | pose
  Tensor raw;                 // the network's output (B, C, h, w), float32, exactly as the backend returned it
  int width = 0, height = 0;  // of the input image; the fields below are at this size
  std::vector<float> depth;       // depth: metres, height * width
  std::vector<int32_t> labels;    // seg: argmax class ids, height * width
  std::vector<Keypoint> keypoints;  // pose: one per keypoint
};

// Reads <artifact>.json and checks it: every field against the schema (mp_deploy/artifact_schema.json,
// compiled in) and the cross-field rules, the backend against the suffix, the artifact's size and checksum,
// its extra files and plugin libraries (plain names in its folder, sha256), and the contract inside the
// artifact field by field. ONNX models are refused (their contract is protobuf metadata: use the Python
// runtime). Throws mp::Error naming the field or file.
Sidecar read_sidecar(const std::string& artifact, const LoadOptions& options = {});

// The most pixels (height * width) an image may have, checked before decoding or converting it; the
// schema's max_pixels, equal to Python's mp_deploy.artifacts.MAX_PIXELS.
int64_t max_pixels();

// The shortest side an image may have (read_image refuses smaller ones from the header): Python's
// mp_deploy.images.MIN_SIDE, which check_rgb applies to every image predict reads (a test holds them equal).
int min_side();

class Backend;

class Engine {
 public:
  static std::unique_ptr<Engine> load(const std::string& path, const LoadOptions& options = {});
  ~Engine();

  const Sidecar& sidecar() const { return sidecar_; }
  const std::string& task() const { return sidecar_.task; }

  // The network input size used for an image: its own size if the engine accepts it, else the sidecar's
  // optimal size (the image is then resized, and the outputs resized back). The backend checks the final
  // input against the shape range again, right before it runs.
  void network_size(int image_height, int image_width, int* height, int* width) const;
  // RGB uint8 image (at most max_pixels()) -> float NCHW network input (resize, colour order, scale, mean / std).
  Tensor preprocess(const Image& image) const;
  Result run(const Image& image);

 private:
  Engine(Sidecar sidecar, std::unique_ptr<Backend> backend);
  Sidecar sidecar_;
  std::unique_ptr<Backend> backend_;
};

// Compiled-in backends, e.g. {"aoti", "tensorrt"}.
std::vector<std::string> available_backends();

// The files mp_infer writes for a result ("" = not written): --output (the task's picture), --raw (depth: the
// 16-bit PNG; seg: the label PNG), --npy (the raw output).
struct OutputPaths {
  std::string output, raw, npy;
  bool colormap = false;  // depth preview in viridis (else grayscale)
};
// mp::Error, before anything runs, for outputs the artifact's task cannot write (pose has no --raw).
void check_outputs(const Sidecar& sidecar, const OutputPaths& paths);
// The task's files for a result, each opened as an OutputFile and appended to `files`; commit_all publishes them.
void write_outputs(const Result& result, const Image& image, const Sidecar& sidecar, const OutputPaths& paths,
                   std::vector<OutputFile>* files);

// Heatmaps (k, h, w) of a whole network input of input_h x input_w -> keypoints in input pixels, decoded as
// mp_deploy.tasks.pose.decode_heatmaps does (mmpose: argmax, a quarter pixel towards the higher neighbour).
std::vector<Keypoint> decode_heatmaps(const float* heatmaps, int k, int h, int w, int input_h, int input_w);

}  // namespace mp
