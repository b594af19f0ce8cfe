// Test program: image files through mp::read_image, as mp_infer reads its --input.
//   mp_read_image IN OUT [IN OUT ...]   writes each OUT as a binary PPM (P6: the RGB pixels mp_infer would use)
// An image it refuses: one line "mp_read_image: error: ..." (as mp_infer's), the others still read; exit 1 if
// any was refused.
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>

#include "mp_deploy/image.h"

int main(int argc, char** argv) {
  if (argc < 3 || argc % 2 == 0) {
    std::fprintf(stderr, "usage: mp_read_image IN OUT.ppm [IN OUT.ppm ...]\n");
    return 2;
  }
  int status = 0;
  for (int i = 1; i + 1 < argc; i += 2) try {
      mp::Image img = mp::read_image(argv[i]);
      FILE* f = std::fopen(argv[i + 1], "wb");
      if (!f) throw std::runtime_error(std::string("cannot write ") + argv[i + 1]);
      std::fprintf(f, "P6\n%d %d\n255\n", img.width, img.height);
      bool ok = std::fwrite(img.pixels.data(), 1, img.pixels.size(), f) == img.pixels.size();
      if (std::fclose(f) != 0 || !ok) throw std::runtime_error(std::string("cannot write ") + argv[i + 1]);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mp_read_image: error: %s\n", e.what());
      status = 1;
    }
  return status;
}
