// A backend runs the network: float32 NCHW in, float32 output out (it converts to / from fp16 itself).
#pragma once

#include <memory>
#include <string>

#include "mp_deploy/engine.h"

namespace mp {

class Backend {
 public:
  explicit Backend(const ShapeRange& shapes) : shapes_(shapes) {}
  virtual ~Backend() = default;
  // The shape guard, where the compiled graph is: an input of a shape the artifact was not built for never
  // reaches it (a package reads out of bounds on one), whoever called.
  Tensor run(const Tensor& input);

 protected:
  virtual Tensor forward(const Tensor& input) = 0;

 private:
  ShapeRange shapes_;  // verified against the contract inside the artifact
};

#ifdef MP_DEPLOY_WITH_TORCH
std::unique_ptr<Backend> make_aoti_backend(const std::string& path, const Sidecar& sidecar,
                                           const LoadOptions& options);
#endif
#ifdef MP_DEPLOY_WITH_TENSORRT
std::unique_ptr<Backend> make_tensorrt_backend(const std::string& path, const Sidecar& sidecar,
                                               const LoadOptions& options);
#endif

// "10.8.0.43" vs "10.8" -> true when the first `parts` components agree.
bool same_version(const std::string& a, const std::string& b, int parts);

// IEEE half <-> float for fp16 engines (round to nearest even).
uint16_t float_to_half(float f);
float half_to_float(uint16_t h);

}  // namespace mp
