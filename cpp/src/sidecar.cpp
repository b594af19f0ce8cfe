// Reads <artifact>.json and checks it against the artifact, like read_sidecar in mp_deploy/artifacts.py.
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "mp_deploy/engine.h"
#include "sha256.h"

namespace mp {
namespace {

const char* kFormat = "mp-deploy-artifact/1";
const std::map<std::string, std::string> kSuffix = {
    {"onnx", ".onnx"}, {"aoti", ".pt2"}, {"tensorrt", ".engine"}, {"torch-tensorrt", ".pt2"}};

std::string suffix_of(const std::string& path) {
  size_t slash = path.find_last_of('/'), dot = path.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return "";
  return path.substr(dot);
}

std::string folder_of(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

bool is_file(const std::string& path, int64_t* size = nullptr) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  if (size) *size = st.st_size;
  return true;
}

// "string" / 1.5 fields with a default, so an older sidecar without a key still loads.
std::string str(const nlohmann::json& j, const char* key, const std::string& fallback = "") {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : fallback;
}

double num(const nlohmann::json& j, const char* key, double fallback = 0) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : fallback;
}

void read_range(const nlohmann::json& shapes, const char* key, int out[3], const std::string& where) {
  auto it = shapes.find(key);
  if (it == shapes.end() || !it->is_array() || it->size() != 3)
    throw Error(where + ": shapes." + key + " must be [min, opt, max]");
  for (int i = 0; i < 3; ++i) out[i] = (*it)[i].get<int>();
}

// A `plugins` entry that names a shared library (as opposed to a plugin embedded in the engine).
bool is_library(const std::string& s) {
  return s.find(".so") != std::string::npos || s.find(".dll") != std::string::npos ||
         s.find(".dylib") != std::string::npos;
}

}  // namespace

Sidecar read_sidecar(const std::string& artifact, const LoadOptions& options) {
  int64_t size = 0;
  if (!is_file(artifact, &size)) throw Error("artifact not found: " + artifact);
  Sidecar s;
  s.path = artifact + ".json";
  if (!is_file(s.path))
    throw Error(artifact + " has no sidecar " + s.path + ": re-export it with export/build_engine.py");

  nlohmann::json j;
  try {
    std::ifstream in(s.path);
    j = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw Error("sidecar " + s.path + " is not valid JSON: " + e.what());
  }
  try {
    if (str(j, "format") != kFormat)
      throw Error("sidecar " + s.path + " has format '" + str(j, "format") + "', expected '" + kFormat + "'");
    s.backend = str(j, "backend");
    auto expected = kSuffix.find(s.backend);
    if (expected == kSuffix.end()) throw Error("unknown backend '" + s.backend + "' in " + s.path);
    if (expected->second != suffix_of(artifact))
      throw Error(artifact + ": sidecar says backend '" + s.backend + "' (" + expected->second + "), file is " +
                  (suffix_of(artifact).empty() ? "without a suffix" : suffix_of(artifact)));
    s.task = str(j, "task");
    s.device = str(j, "device", "cpu");
    s.precision = str(j, "precision", "fp32");
    s.size = str(j, "size");

    auto shapes = j.find("shapes");
    if (shapes != j.end() && shapes->is_object()) {
      s.has_shapes = true;
      read_range(*shapes, "batch", s.batch, s.path);
      read_range(*shapes, "height", s.height, s.path);
      read_range(*shapes, "width", s.width, s.path);
      s.multiple_of = std::max(1, int(num(*shapes, "multiple_of", 1)));
    }

    const auto& in = j.at("input");
    s.input_name = str(in, "name", "images");
    s.input_dtype = str(in, "dtype", "float32");
    s.layout = str(in, "layout", "NCHW");
    s.color = str(in, "color", "RGB");
    s.scale = float(num(in, "scale", 1.0 / 255.0));
    for (int c = 0; c < 3; ++c) {
      if (in.contains("mean")) s.mean[c] = in["mean"].at(c).get<float>();
      if (in.contains("std")) s.std[c] = in["std"].at(c).get<float>();
    }

    const auto& out = j.at("output");
    s.output_name = str(out, "name");
    s.output_kind = str(out, "kind");
    s.output_dtype = str(out, "dtype", "float32");
    s.stride = int(num(out, "stride", 1));
    s.num_classes = int(num(out, "num_classes"));
    s.num_keypoints = int(num(out, "num_keypoints"));
    s.max_depth = num(out, "max_depth");
    s.png16_scale = num(out, "png16_scale", 1000.0);

    s.file_sha256 = str(j, "file_sha256");
    s.file_bytes = int64_t(num(j, "file_bytes", -1));
    if (j.contains("versions") && j["versions"].is_object()) {
      s.torch_version = str(j["versions"], "torch");
      s.tensorrt_version = str(j["versions"], "tensorrt");
    }
    if (j.contains("gpu") && j["gpu"].is_object()) {
      s.gpu_name = str(j["gpu"], "name");
      s.gpu_compute_capability = str(j["gpu"], "compute_capability");
    }
    // `plugins`: a list of plugin ids (embedded in the engine, nothing to load) and / or shared libraries
    // (plain paths or {"library": path}); relative library paths are next to the artifact.
    if (j.contains("plugins") && j["plugins"].is_array()) {
      for (const auto& p : j["plugins"]) {
        std::string lib = p.is_string() ? p.get<std::string>() : p.is_object() ? str(p, "library") : "";
        if (lib.empty() || !is_library(lib)) continue;
        if (lib[0] != '/' && is_file(folder_of(artifact) + "/" + lib)) lib = folder_of(artifact) + "/" + lib;
        s.plugin_libraries.push_back(lib);
      }
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error("sidecar " + s.path + " is incomplete: " + e.what());
  }

  if (s.task != "depth" && s.task != "seg" && s.task != "pose")
    throw Error("sidecar " + s.path + " has unknown task '" + s.task + "'");
  if (s.file_bytes >= 0 && size != s.file_bytes)
    throw Error(artifact + " is " + std::to_string(size) + " bytes, sidecar says " + std::to_string(s.file_bytes) +
                ": truncated or replaced");
  if (options.verify_checksum) {
    if (s.file_sha256.empty()) throw Error("sidecar " + s.path + " has no file_sha256");
    if (sha256_file(artifact) != s.file_sha256)
      throw Error(artifact + " does not match the checksum in its sidecar: corrupted or replaced");
    for (const auto& extra : j.value("extra_files", nlohmann::json::array())) {
      std::string p = folder_of(artifact) + "/" + str(extra, "name");
      if (!is_file(p) || sha256_file(p) != str(extra, "sha256"))
        throw Error(p + " (external data of " + artifact + ") is missing or does not match its checksum");
    }
  }
  return s;
}

}  // namespace mp
