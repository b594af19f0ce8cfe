// AOTInductor .pt2 packages through libtorch (CPU or CUDA, whichever the package was compiled for).
#include <dlfcn.h>

#include <ATen/Parallel.h>

#include <ATen/ops/from_blob.h>
#include <torch/types.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include "backend.h"

namespace mp {
namespace {

const std::string kTorchVersion = std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR);

// Custom-op libraries register their ops when loaded; the package needs them. The sidecar's plugins are
// verified files in the artifact's folder (read_sidecar: plain names, sha256); a torch-tensorrt package also
// needs Torch-TensorRT's runtime, found by name on the library path as any system library (never from the
// sidecar).
void load_op_libraries(const Sidecar& s) {
  for (const auto& lib : s.plugin_libraries)
    if (!dlopen(lib.c_str(), RTLD_NOW | RTLD_GLOBAL)) {
      const char* why = dlerror();
      throw Error("cannot load op library " + lib + " listed in " + s.path + ": " + (why ? why : "?"));
    }
  if (s.backend == "torch-tensorrt" && !dlopen("libtorchtrt_runtime.so", RTLD_NOW | RTLD_GLOBAL)) {
    const char* why = dlerror();
    throw Error("a torch-tensorrt package needs libtorchtrt_runtime.so on the library path: " +
                std::string(why ? why : "?"));
  }
}

class AotiBackend : public Backend {
 public:
  AotiBackend(const std::string& path, const Sidecar& s, const LoadOptions& options)
      : Backend(s.shapes), device_(c10::kCPU), dtype_(s.input_dtype == "float16" ? at::kHalf : at::kFloat) {
    if (options.check_machine && !same_version(s.torch_version, kTorchVersion, 2))
      throw Error(path + " is an AOTInductor package from torch " +
                  (s.torch_version.empty() ? "unknown (versions.torch is null)" : s.torch_version) +
                  ", this is libtorch " + kTorchVersion + ": re-export it with this torch");
    c10::DeviceIndex index = -1;
    if (s.device == "cuda") {
      if (!torch::cuda::is_available())
        throw Error(path + " was built for CUDA" + (s.gpu_name.empty() ? "" : " (" + s.gpu_name + ")") +
                    "; this libtorch has no CUDA device");
      index = c10::DeviceIndex(options.device_index);
      device_ = c10::Device(c10::kCUDA, index);
    }
    load_op_libraries(s);
    // a CPU package's kernels run on torch's OpenMP pool: the policy's count (more threads than cores to spare
    // makes a busy machine's fork/join regions wait on preempted threads: cpu_threads in engine.h)
    if (!device_.is_cuda()) at::set_num_threads(cpu_threads(options.cpu_threads));
    // the package's model container is created right away: give it this device's CUDA context first (a fresh
    // process has none until a first CUDA allocation)
    if (device_.is_cuda()) torch::empty({1}, torch::TensorOptions().device(device_));
    try {
      loader_ = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path, "model", false, 1, index);
    } catch (const c10::Error& e) {  // a corrupt zip, a package for another platform, a missing op
      throw Error("cannot load AOTInductor package " + path + ": " + e.what_without_backtrace());
    }
  }

  Tensor forward(const Tensor& input) override {
    c10::InferenceMode guard;
    at::Tensor x = at::from_blob(const_cast<float*>(input.data.data()), input.shape, at::kFloat);
    std::vector<at::Tensor> outputs;
    try {
      outputs = loader_->run({x.to(device_, dtype_)});
    } catch (const c10::Error& e) {
      throw Error(std::string("AOTInductor run failed: ") + e.what_without_backtrace());
    }
    if (outputs.empty()) throw Error("AOTInductor package returned no outputs");
    at::Tensor y = outputs[0].to(c10::kCPU, at::kFloat).contiguous();
    Tensor out;
    out.shape = y.sizes().vec();
    out.data.assign(y.data_ptr<float>(), y.data_ptr<float>() + y.numel());
    return out;
  }

 private:
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader_;
  c10::Device device_;
  at::ScalarType dtype_;
};

}  // namespace

std::unique_ptr<Backend> make_aoti_backend(const std::string& path, const Sidecar& sidecar,
                                           const LoadOptions& options) {
  return std::make_unique<AotiBackend>(path, sidecar, options);
}

}  // namespace mp
