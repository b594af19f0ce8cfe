// Test program: decode heatmaps with the library's pose decoder, as Engine::run does.
//   mp_decode_heatmaps FILE K H W INPUT_H INPUT_W   (FILE: K*H*W little-endian float32)
// prints one line per keypoint: "x y score" in input pixels.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "mp_deploy/engine.h"

int main(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: mp_decode_heatmaps FILE K H W INPUT_H INPUT_W\n");
    return 2;
  }
  int k = std::atoi(argv[2]), h = std::atoi(argv[3]), w = std::atoi(argv[4]);
  std::vector<float> heat(size_t(k) * h * w);
  FILE* f = std::fopen(argv[1], "rb");
  if (!f || std::fread(heat.data(), sizeof(float), heat.size(), f) != heat.size()) {
    std::fprintf(stderr, "cannot read %zu floats from %s\n", heat.size(), argv[1]);
    return 1;
  }
  std::fclose(f);
  for (const mp::Keypoint& p : mp::decode_heatmaps(heat.data(), k, h, w, std::atoi(argv[5]), std::atoi(argv[6])))
    std::printf("%.6f %.6f %.6f\n", p.x, p.y, p.score);
  return 0;
}
