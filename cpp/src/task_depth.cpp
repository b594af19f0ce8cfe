// Depth (mp_deploy/tasks/depth.py): one channel of metres, resized to the image; mp_infer writes a preview and
// the 16-bit PNG at the preset's scale.
#include <cmath>

#include "process.h"
#include "task.h"

namespace mp {
namespace {

std::vector<uint16_t> depth_png16(const std::vector<float>& depth, double scale) {
  std::vector<uint16_t> out(depth.size());
  for (size_t i = 0; i < depth.size(); ++i)
    out[i] = uint16_t(std::lround(std::fmin(std::fmax(depth[i] * scale, 0.0), 65535.0)));
  return out;
}

class DepthTask : public Task {
 public:
  int64_t channels(const Sidecar&) const override { return 1; }

  void postprocess(const float* first, int, int h, int w, int, int, Result* r) const override {
    r->depth = (h == r->height && w == r->width) ? std::vector<float>(first, first + size_t(h) * w)
                                                 : resize_bilinear(first, 1, h, w, r->height, r->width);
  }

  void write(const Result& r, const Image&, const Sidecar& s, const OutputPaths& paths,
             std::vector<OutputFile>* files) const override {
    if (!paths.output.empty()) {
      files->emplace_back(paths.output);
      write_png(files->back().file(), colorize_depth(r.depth, r.width, r.height, paths.colormap));
    }
    if (!paths.raw.empty()) {
      files->emplace_back(paths.raw);
      write_png16(files->back().file(), r.width, r.height, depth_png16(r.depth, s.png16_scale));
    }
  }
};

}  // namespace

const Task& depth_task() {
  static const DepthTask task;
  return task;
}

}  // namespace mp
