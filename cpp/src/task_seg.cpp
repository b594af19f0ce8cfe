// Segmentation (mp_deploy/tasks/seg.py): class logits, their argmax resized to the image (nearest); mp_infer
// writes the palette picture and the label PNG (16-bit above 256 classes).
#include "process.h"
#include "task.h"

namespace mp {
namespace {

class SegTask : public Task {
 public:
  int64_t channels(const Sidecar& s) const override { return s.num_classes; }

  void postprocess(const float* first, int c, int h, int w, int, int, Result* r) const override {
    std::vector<int32_t> labels = argmax_planes(first, c, h, w);
    r->labels = (h == r->height && w == r->width) ? labels : resize_nearest(labels, h, w, r->height, r->width);
  }

  void write(const Result& r, const Image&, const Sidecar& s, const OutputPaths& paths,
             std::vector<OutputFile>* files) const override {
    if (!paths.output.empty()) {
      files->emplace_back(paths.output);
      write_png(files->back().file(), colorize_labels(r.labels, r.width, r.height));
    }
    if (!paths.raw.empty()) {
      files->emplace_back(paths.raw);
      int classes = s.num_classes > 0 ? s.num_classes : int(r.raw.shape[1]);
      if (classes <= 256) {
        Image labels{r.width, r.height, 1, std::vector<uint8_t>(r.labels.begin(), r.labels.end())};
        write_png(files->back().file(), labels);
      } else {
        write_png16(files->back().file(), r.width, r.height, std::vector<uint16_t>(r.labels.begin(), r.labels.end()));
      }
    }
  }
};

}  // namespace

const Task& seg_task() {
  static const SegTask task;
  return task;
}

}  // namespace mp
