// Image files for mp_deploy_cpp: PNG / JPEG in, PNG (8/16-bit) and .npy out, written atomically.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace mp {

// 8-bit interleaved pixels, row-major (channels = 1 gray, 3 RGB).
struct Image {
  int width = 0, height = 0, channels = 3;
  std::vector<uint8_t> pixels;
};

// PNG or JPEG (detected from the file's first bytes), converted to RGB as Python's read_image does
// (mp_deploy/images.py, Pillow's conversions: 16-bit gray divided by 257, other 16-bit to the high byte, alpha
// dropped, CMYK JPEGs as Pillow reads them). Throws mp::Error for a path that is not a regular file (refused
// without blocking: a FIFO, a folder, a device), and for an image of more than max_pixels() pixels or with a
// side under min_side() (mp_deploy/engine.h), from its header before anything is decoded.
Image read_image(const std::string& path);

// Nothing at `path`, or a regular file: else (a device, FIFO, socket, folder or symbolic link: lstat, links not
// followed) mp::Error "<what> <path>: a FIFO is there; refusing to replace what is not a regular file". An
// OutputFile checks its path when created and right before its rename; mp_infer checks every output first.
void check_replaceable(const std::string& path, const std::string& what);

class OutputFile;
// Renames every file onto its path, or none: when one rename fails, the ones already done are undone (a
// file that was at a path before is put back) and mp::Error is thrown.
void commit_all(std::vector<OutputFile>& files);

// A file written under a temporary name in the destination folder (a short one of its own, .mp_infer-XXXXXX:
// it fits wherever the final name fits) and renamed onto it by commit() (or commit_all): a failed run leaves
// no partial output. Without a commit the temporary is removed.
class OutputFile {
 public:
  explicit OutputFile(const std::string& path);
  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;
  OutputFile(OutputFile&& other) noexcept;

  FILE* file() { return file_; }
  const std::string& path() const { return path_; }
  void commit();  // flush, close, rename

 private:
  friend void commit_all(std::vector<OutputFile>& files);
  void finish();              // flush, fsync, close: the temporary is complete
  std::string install();      // rename it onto path_; returns the backup of a file that was there ("" if none)
  void undo(const std::string& backup);  // after install(): put back what was at path_ before
  std::string path_, tmp_;
  FILE* file_ = nullptr;
};

void write_png(FILE* f, const Image& image);  // 8-bit gray or RGB
void write_png16(FILE* f, int width, int height, const std::vector<uint16_t>& gray);
void write_npy(FILE* f, const std::vector<int64_t>& shape, const std::vector<float>& data);  // float32

// Visualisations.
Image colorize_depth(const std::vector<float>& depth, int width, int height, bool colormap);
Image colorize_labels(const std::vector<int32_t>& labels, int width, int height);
void draw_dot(Image& image, float x, float y, int radius, const uint8_t rgb[3]);
void palette_color(int index, uint8_t rgb[3]);

}  // namespace mp
