// Pre / post-processing shared by every backend (the C++ twin of Engine.preprocess / postprocess).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mp_deploy/engine.h"

namespace mp {

// " is WxH: N pixels, more than the max_pixels() an engine takes (resize it first)", for either check of the cap.
std::string too_many_pixels(int64_t width, int64_t height);

// Bilinear resize of `channels` float planes (align_corners=False, like torch's interpolate).
std::vector<float> resize_bilinear(const float* src, int channels, int h, int w, int out_h, int out_w);

// Argmax over the class planes of a (C, h, w) block.
std::vector<int32_t> argmax_planes(const float* logits, int classes, int h, int w);

// Nearest-neighbour resize of a label map.
std::vector<int32_t> resize_nearest(const std::vector<int32_t>& src, int h, int w, int out_h, int out_w);

}  // namespace mp
