// Reads <artifact>.json and checks it against the schema and the artifact, like read_sidecar in
// mp_deploy/artifacts.py (machine checks are the backends').
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>

#include "contract.h"
#include "files.h"
#include "mp_deploy/engine.h"
#include "schema.h"
#include "sha256.h"

namespace mp {
namespace {

using json = nlohmann::json;

const int64_t kMaxSidecarBytes = 1 << 20;

std::string suffix_of(const std::string& path) {
  size_t slash = path.find_last_of('/'), dot = path.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return "";
  return path.substr(dot);
}

std::string folder_of(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : path.substr(0, slash == 0 ? 1 : slash);
}

// false when nothing is at `path`; mp::Error naming what is there when it is not a regular file (a FIFO, a
// folder, a device, a symbolic link loop: never opened); true with its size for a regular file (links followed).
bool is_file(const std::string& path, const std::string& what, int64_t* size = nullptr) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return false;
    if (errno == ELOOP) throw Error(what + " " + path + ": not a regular file (a symbolic link loop)");
    throw Error(what + " " + path + ": " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) throw Error(what + " " + path + ": not a regular file (" + file_kind(st.st_mode) + ")");
  if (size) *size = st.st_size;
  return true;
}

json parse_sidecar(const std::string& path) {
  // read through a descriptor checked to be a regular file, at most kMaxSidecarBytes + 1 bytes: the size is
  // what was read, not what stat said
  int fd = open_regular(path, "sidecar");
  std::string text;
  char buf[1 << 16];
  ssize_t got;
  while (int64_t(text.size()) <= kMaxSidecarBytes && (got = read(fd, buf, sizeof buf)) != 0) {
    if (got < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      close(fd);
      throw Error("cannot read sidecar " + path + ": " + std::strerror(err));
    }
    text.append(buf, size_t(got));
  }
  close(fd);
  if (int64_t(text.size()) > kMaxSidecarBytes)
    throw Error("sidecar " + path + " is more than " + std::to_string(kMaxSidecarBytes) +
                " bytes: too large to be a sidecar");
  check_json_text(text, "sidecar " + path);  // what Python's parse_json refuses too
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw Error("sidecar " + path + " is not valid JSON: " + shortened(e.what()));
  }
}

// A byte count from a validated sidecar (schema: an integer >= 0), whatever its size: 2**63 or more is not
// wrapped to a negative int64 (which would read as "unchecked").
uint64_t byte_count(const json& value) { return value.is_number_unsigned() ? value.get<uint64_t>() : ~uint64_t(0); }

// A file named by the sidecar: a plain name (the schema's pattern says so too; checked again before the
// name becomes a path), in the artifact's folder, with the recorded size and sha256.
std::string check_beside(const std::string& artifact, const std::string& name, const std::string& field,
                         const std::string& sha256, std::optional<uint64_t> bytes, bool verify_checksum) {
  if (name.empty() || name[0] == '.' || name.find_first_of("/\\") != std::string::npos)
    throw Error(field + " '" + printable(name) + "' is not a plain file name beside " + artifact);
  std::string path = folder_of(artifact) + "/" + name;
  int64_t size = 0;
  if (!is_file(path, field, &size)) throw Error(path + " (" + field + " of " + artifact + ") is missing");
  if (bytes && uint64_t(size) != *bytes)
    throw Error(path + " (" + field + ") is " + std::to_string(size) + " bytes, sidecar says " +
                std::to_string(*bytes) + ": truncated or replaced");
  if (verify_checksum && sha256_file(path) != sha256)
    throw Error(path + " (" + field + ") does not match the checksum in its sidecar: corrupted or replaced");
  return path;
}

std::string str_or_empty(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

// The struct from a validated sidecar: every field read here has its type and range from the schema.
Sidecar to_struct(const json& j, const std::string& path) {
  Sidecar s;
  s.path = path;
  s.task = j["task"];
  s.backend = j["backend"];
  s.device = j["device"];
  s.precision = j["precision"];
  s.size = j["size"];
  const json& shapes = j["shapes"];
  for (int i = 0; i < 3; ++i) {
    s.shapes.batch[i] = shapes["batch"][i];
    s.shapes.height[i] = shapes["height"][i];
    s.shapes.width[i] = shapes["width"][i];
  }
  s.shapes.multiple_of = shapes["multiple_of"];
  const json& in = j["input"];
  s.input_name = in["name"];
  s.input_dtype = in["dtype"];
  s.layout = in["layout"];
  s.color = in["color"];
  s.scale = in["scale"].get<float>();
  for (int c = 0; c < 3; ++c) {
    s.mean[c] = in["mean"][c].get<float>();
    s.std[c] = in["std"][c].get<float>();
  }
  const json& out = j["output"];
  s.output_name = out["name"];
  s.output_kind = out["kind"];
  s.output_dtype = out["dtype"];
  s.stride = out["stride"];
  s.num_classes = out.value("num_classes", 0);
  s.num_keypoints = out.value("num_keypoints", 0);
  s.max_depth = out.value("max_depth", 0.0);
  s.png16_scale = out.value("png16_scale", 0.0);
  s.file_sha256 = j["file_sha256"];
  s.file_bytes = int64_t(std::min<uint64_t>(byte_count(j["file_bytes"]), INT64_MAX));
  s.torch_version = str_or_empty(j["versions"], "torch");
  s.tensorrt_version = str_or_empty(j["versions"], "tensorrt");
  if (!j["gpu"].is_null()) {
    s.gpu_name = j["gpu"]["name"];
    s.gpu_compute_capability = j["gpu"]["compute_capability"];
  }
  return s;
}

}  // namespace

int64_t max_pixels() {
  static const int64_t cap = artifact_schema()["max_pixels"].get<int64_t>();
  return cap;
}

std::string ShapeRange::why_not(int64_t b, int64_t h, int64_t w) const {
  // As Engine.check_shape: within [min, max], and a multiple of multiple_of where the range is dynamic.
  auto check = [this](const char* name, int64_t value, const int range[3], bool spatial) -> std::string {
    if (value < range[0] || value > range[2])
      return std::string(name) + " " + std::to_string(value) + " is outside the range the artifact was built for [" +
             std::to_string(range[0]) + ", " + std::to_string(range[2]) + "]";
    if (spatial && range[0] != range[2] && value % multiple_of)
      return std::string(name) + " " + std::to_string(value) + " is not a multiple of " + std::to_string(multiple_of) +
             " (dynamic range)";
    return "";
  };
  std::string why = check("batch", b, batch, false);
  if (why.empty()) why = check("height", h, height, true);
  if (why.empty()) why = check("width", w, width, true);
  return why;
}

Sidecar read_sidecar(const std::string& artifact, const LoadOptions& options) {
  int64_t size = 0;
  if (!is_file(artifact, "artifact", &size)) throw Error("artifact not found: " + artifact);
  const std::string side = artifact + ".json";
  if (!is_file(side, "sidecar"))
    throw Error(artifact + " has no sidecar " + side + ": re-export it with `mp-deploy build`");
  json j = parse_sidecar(side);
  const json& schema = artifact_schema();
  if (j.is_object() && j.value("format", json()) != schema["format"])
    throw Error("sidecar " + side + " has format " + printable(j.value("format", json()).dump()) + ", expected " +
                schema["format"].dump() + ": re-export it with `mp-deploy build`");
  try {
    check_schema(schema["sidecar"], j);
    check_consistency(j);
  } catch (const Error& e) {
    throw Error("sidecar " + side + ": " + e.what());
  }
  const std::string backend = j["backend"], expected = schema["backend_suffix"].value(backend, "");
  if (expected != suffix_of(artifact))
    throw Error(artifact + ": sidecar says backend '" + backend + "' (" + expected + "), file is " +
                (suffix_of(artifact).empty() ? "without a suffix" : suffix_of(artifact)));
  if (backend == "onnx")
    throw Error(artifact + ": this C++ library cannot read the contract inside an ONNX model (protobuf metadata) "
                "and runs none; use the Python runtime (ONNX Runtime)");
  if (uint64_t(size) != byte_count(j["file_bytes"]))
    throw Error(artifact + " is " + std::to_string(size) + " bytes, sidecar says " + j["file_bytes"].dump() +
                ": truncated or replaced");
  if (options.verify_checksum && sha256_file(artifact) != j["file_sha256"])
    throw Error(artifact + " does not match the checksum in its sidecar: corrupted or replaced");
  for (const auto& extra : j["extra_files"])
    check_beside(artifact, extra["name"], "external data", extra["sha256"], byte_count(extra["bytes"]),
                 options.verify_checksum);
  Sidecar s = to_struct(j, side);
  for (const auto& plugin : j["plugins"])  // always hashed: these are loaded as native code
    s.plugin_libraries.push_back(
        check_beside(artifact, plugin["name"], "plugin library", plugin["sha256"], std::nullopt, true));
  if (backend == "aoti" || backend == "torch-tensorrt") check_embedded_contract(artifact, j);
  // a TensorRT plan cannot hold the contract: its checksum binds it, and the backend checks its tensors
  return s;
}

}  // namespace mp
