// Pose (mp_deploy/tasks/pose.py): keypoint heatmaps at stride 4, decoded as the Python side decodes them
// (decode_heatmaps: mmpose's keypoints_from_heatmaps, post_process 'default'): the first maximum of each map,
// moved a quarter pixel towards the higher neighbour when it is not on the border, -1 where the maximum is not
// positive, then mapped to the network input (the whole input is the crop) and to the image; mp_infer draws
// the keypoints and prints them.
#include <algorithm>

#include "task.h"

namespace mp {

std::vector<Keypoint> decode_heatmaps(const float* heatmaps, int k, int h, int w, int input_h, int input_w) {
  std::vector<Keypoint> points;
  double sx = double(input_w) / w, sy = double(input_h) / h;
  for (int j = 0; j < k; ++j) {
    const float* p = heatmaps + size_t(j) * h * w;
    size_t best = std::max_element(p, p + size_t(h) * w) - p;  // first maximum, as numpy's argmax
    int px = int(best % w), py = int(best / w);
    double x = px, y = py;
    if (px > 1 && px < w - 1 && py > 1 && py < h - 1) {
      auto sign = [](float v) { return double((v > 0) - (v < 0)); };
      x += 0.25 * sign(p[py * w + px + 1] - p[py * w + px - 1]);
      y += 0.25 * sign(p[(py + 1) * w + px] - p[(py - 1) * w + px]);
    }
    if (!(p[best] > 0)) x = y = -1.0;
    points.push_back({float(x * sx), float(y * sy), p[best]});
  }
  return points;
}

namespace {

class PoseTask : public Task {
 public:
  int64_t channels(const Sidecar& s) const override { return s.num_keypoints; }

  void postprocess(const float* first, int c, int h, int w, int net_h, int net_w, Result* r) const override {
    r->keypoints = decode_heatmaps(first, c, h, w, net_h, net_w);
    for (auto& k : r->keypoints) {  // network pixels -> image pixels
      k.x *= float(r->width) / net_w;
      k.y *= float(r->height) / net_h;
    }
  }

  void check(const OutputPaths& paths) const override {
    if (!paths.raw.empty()) throw Error("--raw is for depth and seg engines; use --npy for the pose heatmaps");
  }

  void write(const Result& r, const Image& image, const Sidecar&, const OutputPaths& paths,
             std::vector<OutputFile>* files) const override {
    if (paths.output.empty()) return;
    Image drawn = image;
    int radius = std::max(2, std::min(image.width, image.height) / 100);
    for (size_t k = 0; k < r.keypoints.size(); ++k) {
      uint8_t rgb[3];
      palette_color(int(k) + 1, rgb);
      draw_dot(drawn, r.keypoints[k].x, r.keypoints[k].y, radius, rgb);
    }
    files->emplace_back(paths.output);
    write_png(files->back().file(), drawn);
  }
};

}  // namespace

const Task& pose_task() {
  static const PoseTask task;
  return task;
}

}  // namespace mp
