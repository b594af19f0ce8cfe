// Visualisations: depth (grayscale or viridis), label palette, keypoint dots.
#include <algorithm>
#include <cmath>

#include "mp_deploy/image.h"

namespace mp {
namespace {

// viridis at 8 evenly spaced points (matplotlib's values); linear in between is close enough for a preview.
const uint8_t kViridis[8][3] = {{68, 1, 84},   {70, 51, 126},  {54, 92, 141},  {39, 127, 142},
                                {31, 161, 135}, {74, 193, 109}, {159, 218, 58}, {253, 231, 37}};

void viridis(float t, uint8_t* rgb) {
  float x = std::clamp(t, 0.0f, 1.0f) * 7.0f;
  int i = std::min(int(x), 6);
  float f = x - i;
  for (int c = 0; c < 3; ++c) rgb[c] = uint8_t(std::lround(kViridis[i][c] * (1 - f) + kViridis[i + 1][c] * f));
}

}  // namespace

Image colorize_depth(const std::vector<float>& depth, int width, int height, bool colormap) {
  // Normalised to this image's own range; near is bright (reads like a disparity map).
  float lo = INFINITY, hi = -INFINITY;
  for (float d : depth) {
    lo = std::min(lo, d);
    hi = std::max(hi, d);
  }
  float span = hi > lo ? hi - lo : 1.0f;
  Image img;
  img.width = width;
  img.height = height;
  img.channels = colormap ? 3 : 1;
  img.pixels.resize(size_t(width) * height * img.channels);
  for (size_t i = 0; i < depth.size(); ++i) {
    float t = 1.0f - (depth[i] - lo) / span;
    if (colormap)
      viridis(t, &img.pixels[3 * i]);
    else
      img.pixels[i] = uint8_t(std::lround(std::clamp(t, 0.0f, 1.0f) * 255.0f));
  }
  return img;
}

void palette_color(int index, uint8_t rgb[3]) {
  // The PASCAL VOC palette rule: spread the bits of the index over the high bits of R, G, B.
  rgb[0] = rgb[1] = rgb[2] = 0;
  for (int bit = 7, i = index; bit >= 0 && i; --bit, i >>= 3) {
    rgb[0] |= ((i >> 0) & 1) << bit;
    rgb[1] |= ((i >> 1) & 1) << bit;
    rgb[2] |= ((i >> 2) & 1) << bit;
  }
}

Image colorize_labels(const std::vector<int32_t>& labels, int width, int height) {
  Image img;
  img.width = width;
  img.height = height;
  img.pixels.resize(size_t(width) * height * 3);
  for (size_t i = 0; i < labels.size(); ++i) palette_color(labels[i], &img.pixels[3 * i]);
  return img;
}

void draw_dot(Image& image, float x, float y, int radius, const uint8_t rgb[3]) {
  int cx = int(std::floor(x)), cy = int(std::floor(y));
  for (int dy = -radius; dy <= radius; ++dy)
    for (int dx = -radius; dx <= radius; ++dx) {
      int px = cx + dx, py = cy + dy;
      if (dx * dx + dy * dy > radius * radius || px < 0 || py < 0 || px >= image.width || py >= image.height)
        continue;
      uint8_t* p = &image.pixels[(size_t(py) * image.width + px) * image.channels];
      for (int c = 0; c < image.channels; ++c) p[c] = rgb[c % 3];
    }
}

}  // namespace mp
