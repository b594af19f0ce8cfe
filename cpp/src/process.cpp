#include "process.h"

#include <algorithm>
#include <cmath>

namespace mp {

std::string too_many_pixels(int64_t width, int64_t height) {
  return " is " + std::to_string(width) + "x" + std::to_string(height) + ": " + std::to_string(width * height) +
         " pixels, more than the " + std::to_string(max_pixels()) + " an engine takes (resize it first)";
}

std::vector<float> resize_bilinear(const float* src, int channels, int h, int w, int out_h, int out_w) {
  std::vector<float> out(size_t(channels) * out_h * out_w);
  float sy = float(h) / out_h, sx = float(w) / out_w;
  for (int y = 0; y < out_h; ++y) {
    float fy = std::max((y + 0.5f) * sy - 0.5f, 0.0f);
    int y0 = std::min(int(fy), h - 1), y1 = std::min(y0 + 1, h - 1);
    float ly = fy - y0;
    for (int x = 0; x < out_w; ++x) {
      float fx = std::max((x + 0.5f) * sx - 0.5f, 0.0f);
      int x0 = std::min(int(fx), w - 1), x1 = std::min(x0 + 1, w - 1);
      float lx = fx - x0;
      for (int c = 0; c < channels; ++c) {
        const float* p = src + size_t(c) * h * w;
        float top = p[y0 * w + x0] * (1 - lx) + p[y0 * w + x1] * lx;
        float bottom = p[y1 * w + x0] * (1 - lx) + p[y1 * w + x1] * lx;
        out[(size_t(c) * out_h + y) * out_w + x] = top * (1 - ly) + bottom * ly;
      }
    }
  }
  return out;
}

std::vector<int32_t> argmax_planes(const float* logits, int classes, int h, int w) {
  size_t plane = size_t(h) * w;
  std::vector<int32_t> labels(plane, 0);
  for (size_t i = 0; i < plane; ++i) {
    float best = logits[i];
    for (int c = 1; c < classes; ++c)
      if (logits[c * plane + i] > best) {  // first maximum wins, as torch.argmax
        best = logits[c * plane + i];
        labels[i] = c;
      }
  }
  return labels;
}

std::vector<int32_t> resize_nearest(const std::vector<int32_t>& src, int h, int w, int out_h, int out_w) {
  std::vector<int32_t> out(size_t(out_h) * out_w);
  for (int y = 0; y < out_h; ++y) {
    int sy = std::min(int(std::floor(y * float(h) / out_h)), h - 1);
    for (int x = 0; x < out_w; ++x) {
      int sx = std::min(int(std::floor(x * float(w) / out_w)), w - 1);
      out[size_t(y) * out_w + x] = src[size_t(sy) * w + sx];
    }
  }
  return out;
}

}  // namespace mp
