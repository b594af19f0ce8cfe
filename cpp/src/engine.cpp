// Engine: sidecar checks, backend choice, and the image -> network -> task output path.
#include <algorithm>
#include <cmath>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sched.h>

#include "backend.h"
#include "mp_deploy/engine.h"
#include "process.h"
#include "task.h"

namespace mp {

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int cpu_threads(int requested) {
  constexpr long kMaxThreads = 4096;  // as MAX_THREADS in mp_deploy/cpu_threads.py
  if (requested > 0) {
    if (requested > kMaxThreads) throw Error("cpu_threads must be from 1 to 4096, got " + std::to_string(requested));
    return requested;
  }
  if (const char* text = std::getenv("MP_DEPLOY_CPU_THREADS"); text && *text) {
    char* end = nullptr;
    errno = 0;
    long n = std::strtol(text, &end, 10);
    if (errno || *end || n < 1 || n > kMaxThreads)
      throw Error("MP_DEPLOY_CPU_THREADS must be a whole number from 1 to 4096, got '" +
                  std::string(text).substr(0, 40) + "'");
    return int(n);
  }
  cpu_set_t mask;
  int cpus = sched_getaffinity(0, sizeof(mask), &mask) == 0 ? CPU_COUNT(&mask) : 1;
  return std::max(1, cpus / 2);
}

// The compiled-in backends by the sidecar's backend name (mp_deploy/backends: one C++ file per backend).
using BackendFactory = std::unique_ptr<Backend> (*)(const std::string&, const Sidecar&, const LoadOptions&);
static const std::vector<std::pair<std::string, BackendFactory>>& backend_factories() {
  static const std::vector<std::pair<std::string, BackendFactory>> table = {
#ifdef MP_DEPLOY_WITH_TORCH
      {"aoti", make_aoti_backend}, {"torch-tensorrt", make_aoti_backend},
#endif
#ifdef MP_DEPLOY_WITH_TENSORRT
      {"tensorrt", make_tensorrt_backend},
#endif
  };
  return table;
}

// What a build without a backend tells its user.
static std::string missing_backend(const std::string& path, const std::string& backend) {
  if (backend == "tensorrt")
    return path + " is a TensorRT engine; this build of mp_deploy_cpp has no TensorRT (configure with "
                  "-DTensorRT_ROOT=<TensorRT folder>)";
  if (backend == "aoti" || backend == "torch-tensorrt")
    return path + " is an AOTInductor package; this build of mp_deploy_cpp has no libtorch (configure with "
                  "-DCMAKE_PREFIX_PATH=<torch cmake prefix>)";
  return path + ": backend '" + backend + "' has no C++ runner";  // read_sidecar refuses ONNX already
}

std::vector<std::string> available_backends() {
  std::vector<std::string> names;
  for (const auto& [name, factory] : backend_factories())
    if (name != "torch-tensorrt") names.push_back(name);
  return names;
}

bool same_version(const std::string& a, const std::string& b, int parts) {
  auto head = [parts](const std::string& v) {
    std::string s = v.substr(0, v.find('+'));  // 2.13.0+cpu -> 2.13.0
    size_t pos = 0;
    for (int i = 0; i < parts && pos != std::string::npos; ++i) pos = s.find('.', pos ? pos + 1 : 0);
    return pos == std::string::npos ? s : s.substr(0, pos);
  };
  return head(a) == head(b);
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  int32_t exp = int32_t((x >> 23) & 0xFF) - 127 + 15;
  uint32_t mant = x & 0x7FFFFF;
  if (((x >> 23) & 0xFF) == 0xFF) return uint16_t(sign | 0x7C00 | (mant ? 0x200 : 0));  // inf / nan
  if (exp >= 31) return uint16_t(sign | 0x7C00);                                       // overflow -> inf
  if (exp <= 0) {                                                                      // subnormal or zero
    if (exp < -10) return uint16_t(sign);
    mant |= 0x800000;
    int shift = 14 - exp;
    uint32_t half = mant >> shift, rest = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
    if (rest > mid || (rest == mid && (half & 1))) ++half;
    return uint16_t(sign | half);
  }
  uint32_t half = sign | uint32_t(exp) << 10 | mant >> 13, rest = mant & 0x1FFF;
  if (rest > 0x1000 || (rest == 0x1000 && (half & 1))) ++half;  // a carry into the exponent is still right
  return uint16_t(half);
}

float half_to_float(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, mant = h & 0x3FF, x;
  if (exp == 0x1F)
    x = sign | 0x7F800000 | mant << 13;
  else if (exp)
    x = sign | (exp + 112) << 23 | mant << 13;
  else if (!mant)
    x = sign;
  else {  // subnormal: normalise
    int e = -1;
    do { ++e; mant <<= 1; } while (!(mant & 0x400));
    x = sign | uint32_t(112 - e) << 23 | (mant & 0x3FF) << 13;
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

Tensor Backend::run(const Tensor& input) {
  const auto& d = input.shape;
  if (d.size() != 4 || d[1] != 3) throw Error("the network input must be (B, 3, H, W)");
  std::string why = shapes_.why_not(d[0], d[2], d[3]);
  if (!why.empty()) throw Error("refused network input: " + why);
  if (input.data.size() != size_t(input.numel())) throw Error("the network input holds too few or too many values");
  return forward(input);
}

Engine::Engine(Sidecar sidecar, std::unique_ptr<Backend> backend)
    : sidecar_(std::move(sidecar)), backend_(std::move(backend)) {}

Engine::~Engine() = default;

std::unique_ptr<Engine> Engine::load(const std::string& path, const LoadOptions& options) {
  Sidecar s = read_sidecar(path, options);  // layout, colour order and the rest: known values (the schema)
  find_task(s.task);  // a task this library can postprocess
  for (const auto& [name, factory] : backend_factories())
    if (name == s.backend) return std::unique_ptr<Engine>(new Engine(s, factory(path, s, options)));
  throw Error(missing_backend(path, s.backend));
}


void Engine::network_size(int image_height, int image_width, int* height, int* width) const {
  const ShapeRange& r = sidecar_.shapes;
  bool ok = r.why_not(r.batch[0], image_height, image_width).empty();
  *height = ok ? image_height : r.height[1];
  *width = ok ? image_width : r.width[1];
}

Tensor Engine::preprocess(const Image& image) const {
  const Sidecar& s = sidecar_;
  int h = image.height, w = image.width, net_h, net_w;
  if (image.channels != 3) throw Error("expected an RGB image");
  if (h <= 0 || w <= 0) throw Error("the image is empty");
  if (int64_t(h) * w > max_pixels()) throw Error("the image" + too_many_pixels(w, h));
  if (image.pixels.size() != size_t(h) * w * 3) throw Error("the image holds too few or too many pixels for its size");
  network_size(h, w, &net_h, &net_w);
  // Planes first (x * scale - mean) / std, as in Engine.preprocess (mean 0, std 1: exactly pixels * scale).
  std::vector<float> planes(size_t(3) * h * w);
  size_t plane = size_t(h) * w;
  for (int c = 0; c < 3; ++c) {
    int src = s.color == "BGR" ? 2 - c : c;
    for (size_t i = 0; i < plane; ++i)
      planes[c * plane + i] = (float(image.pixels[3 * i + src]) * s.scale - s.mean[c]) / s.std[c];
  }
  if (net_h != h || net_w != w) planes = resize_bilinear(planes.data(), 3, h, w, net_h, net_w);
  // The engine's minimum batch (the image repeated; only the first result is used).
  int batch = s.shapes.batch[0];
  Tensor t;
  t.shape = {batch, 3, net_h, net_w};
  t.data.reserve(size_t(batch) * planes.size());
  for (int b = 0; b < batch; ++b) t.data.insert(t.data.end(), planes.begin(), planes.end());
  return t;
}

Result Engine::run(const Image& image) {
  const Sidecar& s = sidecar_;
  const Task& task = find_task(s.task);
  Tensor input = preprocess(image);
  int net_h = int(input.shape[2]), net_w = int(input.shape[3]);
  Result r;
  r.task = s.task;
  r.width = image.width;
  r.height = image.height;
  r.raw = backend_->run(input);
  const auto& d = r.raw.shape;
  if (d.size() != 4 || d[0] != input.shape[0] || d[1] != task.channels(s) || d[2] <= 0 || d[3] <= 0 ||
      d[2] > net_h || d[3] > net_w || r.raw.data.size() != size_t(r.raw.numel()))
    throw Error("unexpected output shape from " + s.output_name + " (expected (" + std::to_string(input.shape[0]) +
                ", " + std::to_string(task.channels(s)) + ", h, w))");
  for (float v : r.raw.data)
    if (!std::isfinite(v)) throw Error("the " + s.precision + " output contains NaN or inf");
  int c = int(r.raw.shape[1]), h = int(r.raw.shape[2]), w = int(r.raw.shape[3]);
  const float* first = r.raw.data.data();  // batch item 0
  task.postprocess(first, c, h, w, net_h, net_w, &r);
  return r;
}

}  // namespace mp
