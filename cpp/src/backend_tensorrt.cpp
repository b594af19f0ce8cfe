// TensorRT .engine files through the TensorRT 10 C++ runtime (deserializeCudaEngine, setInputShape,
// setTensorAddress, enqueueV3). Compiled only when CMake finds TensorRT and the CUDA toolkit.
#include <NvInfer.h>
#include <NvInferPlugin.h>
#include <NvInferVersion.h>
#include <cuda_runtime_api.h>

#include <fstream>
#include <iostream>
#include <iterator>
#include <mutex>
#include <set>

#include "backend.h"

namespace mp {
namespace {

const std::string kTensorRTVersion = std::to_string(NV_TENSORRT_MAJOR) + "." + std::to_string(NV_TENSORRT_MINOR) +
                                     "." + std::to_string(NV_TENSORRT_PATCH);

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw Error(std::string(what) + " failed: " + cudaGetErrorString(status));
}

class Logger : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kWARNING) std::cerr << "[TensorRT] " << msg << "\n";
    if (severity <= Severity::kERROR) last_error = msg;
  }
  std::string last_error;
};

Logger& logger() {  // TensorRT keeps a pointer to the logger of initLibNvInferPlugins: it must outlive everything
  static Logger instance;
  return instance;
}

struct CudaFree {
  void operator()(void* p) const { cudaFree(p); }
};
using DevicePtr = std::unique_ptr<void, CudaFree>;

DevicePtr device_alloc(size_t bytes) {
  void* p = nullptr;
  check_cuda(cudaMalloc(&p, bytes), "cudaMalloc");
  return DevicePtr(p);
}

size_t element_size(nvinfer1::DataType t, const std::string& name) {
  if (t == nvinfer1::DataType::kFLOAT) return 4;
  if (t == nvinfer1::DataType::kHALF) return 2;
  throw Error("TensorRT tensor " + name + " is neither float32 nor float16");
}

class TensorRTBackend : public Backend {
 public:
  TensorRTBackend(const std::string& path, const Sidecar& s, const LoadOptions& options)
      : Backend(s.shapes), input_(s.input_name), output_(s.output_name) {
    if (options.check_machine) check_machine(path, s, options.device_index);
    check_cuda(cudaSetDevice(options.device_index), "cudaSetDevice");
    register_plugins(s);

    std::ifstream in(path, std::ios::binary);
    std::vector<char> blob((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) throw Error("cannot read " + path);
    runtime_.reset(nvinfer1::createInferRuntime(logger()));
    if (!runtime_) throw Error("cannot create the TensorRT runtime");
    logger().last_error.clear();
    engine_.reset(runtime_->deserializeCudaEngine(blob.data(), blob.size()));
    if (!engine_)
      throw Error("TensorRT could not deserialize " + path + " (corrupt, built by another TensorRT version, or a "
                  "plugin is missing): " + logger().last_error);
    context_.reset(engine_->createExecutionContext());
    if (!context_) throw Error("cannot create a TensorRT execution context for " + path);
    check_tensors(path);
    check_profile(path, s.shapes);
    check_cuda(cudaStreamCreate(&stream_), "cudaStreamCreate");
  }

  ~TensorRTBackend() override {
    if (stream_) cudaStreamDestroy(stream_);
  }

  Tensor forward(const Tensor& input) override {
    nvinfer1::Dims dims{};
    dims.nbDims = int(input.shape.size());
    for (int i = 0; i < dims.nbDims; ++i) dims.d[i] = input.shape[i];
    if (!context_->setInputShape(input_.c_str(), dims))
      throw Error("TensorRT rejected input shape (outside the engine's optimization profile)");
    nvinfer1::Dims out_dims = context_->getTensorShape(output_.c_str());
    Tensor out;
    for (int i = 0; i < out_dims.nbDims; ++i) {
      if (out_dims.d[i] < 0) throw Error("TensorRT output " + output_ + " has an unresolved dimension");
      out.shape.push_back(out_dims.d[i]);
    }
    size_t n_in = input.data.size(), n_out = size_t(out.numel());

    // Host staging in the engine's own dtypes (fp16 engines take and give half).
    nvinfer1::DataType in_type = engine_->getTensorDataType(input_.c_str());
    nvinfer1::DataType out_type = engine_->getTensorDataType(output_.c_str());
    size_t in_size = element_size(in_type, input_), out_size = element_size(out_type, output_);
    std::vector<uint16_t> half;
    const void* host_in = input.data.data();
    if (in_type == nvinfer1::DataType::kHALF) {
      half.resize(n_in);
      for (size_t i = 0; i < n_in; ++i) half[i] = float_to_half(input.data[i]);
      host_in = half.data();
    }
    DevicePtr d_in = device_alloc(n_in * in_size), d_out = device_alloc(n_out * out_size);
    check_cuda(cudaMemcpyAsync(d_in.get(), host_in, n_in * in_size, cudaMemcpyHostToDevice, stream_), "copy in");
    if (!context_->setTensorAddress(input_.c_str(), d_in.get()) ||
        !context_->setTensorAddress(output_.c_str(), d_out.get()))
      throw Error("TensorRT setTensorAddress failed");
    if (!context_->enqueueV3(stream_)) throw Error("TensorRT execution failed: " + logger().last_error);
    out.data.resize(n_out);
    if (out_type == nvinfer1::DataType::kHALF) {
      std::vector<uint16_t> h(n_out);
      check_cuda(cudaMemcpyAsync(h.data(), d_out.get(), n_out * 2, cudaMemcpyDeviceToHost, stream_), "copy out");
      check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
      for (size_t i = 0; i < n_out; ++i) out.data[i] = half_to_float(h[i]);
    } else {
      check_cuda(cudaMemcpyAsync(out.data.data(), d_out.get(), n_out * 4, cudaMemcpyDeviceToHost, stream_),
                 "copy out");
      check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    }
    return out;
  }

 private:
  // A plan holds no contract: its tensors must at least be exactly the contract's input and output.
  void check_tensors(const std::string& path) const {
    int count = engine_->getNbIOTensors();
    bool has_in = false, has_out = false;
    for (int i = 0; i < count; ++i) {
      std::string name = engine_->getIOTensorName(i);
      has_in |= name == input_ && engine_->getTensorIOMode(name.c_str()) == nvinfer1::TensorIOMode::kINPUT;
      has_out |= name == output_ && engine_->getTensorIOMode(name.c_str()) == nvinfer1::TensorIOMode::kOUTPUT;
    }
    if (count != 2 || !has_in || !has_out)
      throw Error(path + ": the engine's " + std::to_string(count) + " I/O tensors are not the sidecar's input '" +
                  input_ + "' and output '" + output_ + "' (input.name, output.name)");
  }

  // ...and the shapes it was built for must be the sidecar's: each static dimension equal to a fixed range,
  // each dynamic one with the range of the engine's optimization profile.
  void check_profile(const std::string& path, const ShapeRange& shapes) const {
    nvinfer1::Dims dims = engine_->getTensorShape(input_.c_str());
    if (dims.nbDims != 4 || (dims.d[1] != 3 && dims.d[1] != -1))
      throw Error(path + ": the engine's input '" + input_ + "' is not (B, 3, H, W)");
    const std::pair<int, const int*> axes[3] = {{0, shapes.batch}, {2, shapes.height}, {3, shapes.width}};
    const char* names[4] = {"shapes.batch", "", "shapes.height", "shapes.width"};
    for (const auto& [axis, range] : axes) {
      int64_t lo = dims.d[axis], hi = dims.d[axis];
      if (lo < 0) {
        if (engine_->getNbOptimizationProfiles() < 1)
          throw Error(path + ": the engine has a dynamic input and no optimization profile");
        lo = engine_->getProfileShape(input_.c_str(), 0, nvinfer1::OptProfileSelector::kMIN).d[axis];
        hi = engine_->getProfileShape(input_.c_str(), 0, nvinfer1::OptProfileSelector::kMAX).d[axis];
      }
      if (lo != range[0] || hi != range[2])
        throw Error(path + ": the engine was built for " + names[axis] + " [" + std::to_string(lo) + ", " +
                    std::to_string(hi) + "], its sidecar says [" + std::to_string(range[0]) + ", " +
                    std::to_string(range[2]) + "]");
    }
  }

  static void check_machine(const std::string& path, const Sidecar& s, int device) {
    if (!same_version(s.tensorrt_version, kTensorRTVersion, 3))
      throw Error(path + " was built with TensorRT " +
                  (s.tensorrt_version.empty() ? "unknown (versions.tensorrt is null)" : s.tensorrt_version) +
                  ", this library uses TensorRT " + kTensorRTVersion +
                  ": engines do not carry across versions, rebuild it");
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count <= device)
      throw Error(path + " is a TensorRT engine; this machine has no CUDA device " + std::to_string(device));
    cudaDeviceProp prop;
    check_cuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    std::string cc = std::to_string(prop.major) + "." + std::to_string(prop.minor);
    if (!s.gpu_name.empty() && s.gpu_name != prop.name)
      throw Error(path + " was built for " + s.gpu_name + ", this GPU is " + prop.name +
                  ": TensorRT engines are GPU-specific, rebuild it here");
    if (!s.gpu_compute_capability.empty() && s.gpu_compute_capability != cc)
      throw Error(path + " was built for compute capability " + s.gpu_compute_capability + ", this GPU is " + cc);
  }

  // TensorRT's own plugins, then the sidecar's plugin libraries, verified by read_sidecar (plain names in the
  // artifact's folder, sha256) before this loads them (plugins embedded in the engine, such as the AOT
  // Python plugins of kernels/tensorrt_plugins.py, need nothing here).
  static void register_plugins(const Sidecar& s) {
    static std::once_flag once;
    std::call_once(once, [] { initLibNvInferPlugins(&logger(), ""); });
    static std::mutex mutex;
    static std::set<std::string> loaded;  // loading a library twice would register its creators twice
    std::lock_guard<std::mutex> lock(mutex);
    for (const auto& lib : s.plugin_libraries) {
      if (loaded.count(lib)) continue;
      if (!getPluginRegistry()->loadLibrary(lib.c_str()))
        throw Error("cannot load TensorRT plugin library " + lib + " listed in " + s.path);
      loaded.insert(lib);
    }
  }

  std::string input_, output_;
  std::unique_ptr<nvinfer1::IRuntime> runtime_;  // declared before engine_: destroyed after it
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

std::unique_ptr<Backend> make_tensorrt_backend(const std::string& path, const Sidecar& sidecar,
                                               const LoadOptions& options) {
  return std::make_unique<TensorRTBackend>(path, sidecar, options);
}

}  // namespace mp
