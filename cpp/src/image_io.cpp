// PNG (libpng) and JPEG (libjpeg) reading, PNG / .npy writing (output files: output_file.cpp).
#include <cerrno>
#include <csetjmp>
#include <cstdio>  // before jpeglib.h, which uses FILE without including it
#include <cstring>
#include <memory>

#include <jpeglib.h>
#include <png.h>

#include "mp_deploy/engine.h"
#include "mp_deploy/image.h"
#include "process.h"

namespace mp {
namespace {

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<FILE, FileCloser>;

void png_error_fn(png_structp png, png_const_charp message) {  // keep the message, jump back to read_png
  std::snprintf(static_cast<char*>(png_get_error_ptr(png)), 256, "%s", message);
  png_longjmp(png, 1);
}

void png_warning_fn(png_structp, png_const_charp) {}  // e.g. "known incorrect sRGB profile": harmless

Image read_png(const std::string& path) {
  // The classic API, not the simplified one: that one composites alpha on a background and takes 16-bit
  // files for linear light. Here, as PIL's convert("RGB"): alpha dropped, 16-bit to its high byte.
  FilePtr f(std::fopen(path.c_str(), "rb"));
  if (!f) throw Error("cannot read image " + path + ": " + std::strerror(errno));
  Image img;  // constructed before setjmp: nothing with a destructor is skipped by the longjmp
  std::vector<png_bytep> rows;
  char message[256] = "";
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, message, png_error_fn, png_warning_fn);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    throw Error("out of memory reading " + path);
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw Error("cannot decode PNG " + path + ": " + message);
  }
  png_init_io(png, f.get());
  png_read_info(png, info);
  png_uint_32 width = png_get_image_width(png, info), height = png_get_image_height(png, info);
  if (int64_t(width) * height > max_pixels()) {  // from the header, before any pixel buffer exists
    png_destroy_read_struct(&png, &info, nullptr);
    throw Error("image " + path + too_many_pixels(width, height));
  }
  png_set_strip_16(png);
  png_set_packing(png);                 // 1, 2, 4-bit -> 8-bit
  png_set_palette_to_rgb(png);
  png_set_expand_gray_1_2_4_to_8(png);
  png_set_gray_to_rgb(png);
  png_set_strip_alpha(png);             // also drops tRNS transparency (not expanded to alpha)
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_channels(png, info) != 3 || png_get_rowbytes(png, info) != size_t(width) * 3)
    png_error(png, "unexpected pixel format after conversion");
  img.width = int(width);
  img.height = int(height);
  img.pixels.resize(size_t(width) * height * 3);
  rows.resize(height);
  for (png_uint_32 y = 0; y < height; ++y) rows[y] = img.pixels.data() + size_t(y) * width * 3;
  png_read_image(png, rows.data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return img;
}

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_error_exit(j_common_ptr cinfo) {  // libjpeg's default calls exit(): jump back instead
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  cinfo->err->format_message(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

void jpeg_output_message(j_common_ptr cinfo) {  // keep warnings (e.g. truncated data) for our own error
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  cinfo->err->format_message(cinfo, err->message);
}

Image read_jpeg(const std::string& path) {
  FilePtr f(std::fopen(path.c_str(), "rb"));
  if (!f) throw Error("cannot read " + path + ": " + std::strerror(errno));
  Image img;  // constructed before setjmp: nothing with a destructor is skipped by the longjmp
  std::vector<JSAMPROW> rows;
  jpeg_decompress_struct cinfo;
  JpegError err;
  err.message[0] = '\0';
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_exit;
  err.mgr.output_message = jpeg_output_message;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    throw Error("cannot decode JPEG " + path + ": " + err.message);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_stdio_src(&cinfo, f.get());
  jpeg_read_header(&cinfo, TRUE);
  if (int64_t(cinfo.image_width) * cinfo.image_height > max_pixels()) {  // before any decoding buffer exists
    jpeg_destroy_decompress(&cinfo);
    throw Error("image " + path + too_many_pixels(cinfo.image_width, cinfo.image_height));
  }
  cinfo.out_color_space = JCS_RGB;  // gray and YCbCr both come out as RGB
  jpeg_start_decompress(&cinfo);
  img.width = int(cinfo.output_width);
  img.height = int(cinfo.output_height);
  img.pixels.resize(size_t(img.width) * img.height * 3);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = img.pixels.data() + size_t(cinfo.output_scanline) * img.width * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  // libjpeg pads a truncated or damaged file with gray and only warns: refuse it instead
  bool damaged = err.mgr.num_warnings > 0;
  jpeg_destroy_decompress(&cinfo);
  if (damaged) throw Error("cannot decode JPEG " + path + ": " + err.message);
  return img;
}

// Classic libpng writer (the simplified one tags 16-bit data as linear light, wrong for depth).
void write_png_rows(FILE* f, int width, int height, int color_type, int bit_depth, const uint8_t* data,
                    size_t row_bytes) {
  std::vector<png_bytep> rows(height);
  for (int y = 0; y < height; ++y) rows[y] = const_cast<uint8_t*>(data) + y * row_bytes;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_write_struct(&png, nullptr);
    throw Error("out of memory writing a PNG");
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw Error("cannot write PNG (disk full?)");
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, width, height, bit_depth, color_type, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  if (bit_depth == 16) {
    uint16_t probe = 1;
    if (*reinterpret_cast<uint8_t*>(&probe) == 1) png_set_swap(png);  // PNG is big-endian
  }
  png_write_image(png, rows.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
}

}  // namespace

Image read_image(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw Error("cannot read image " + path + ": " + std::strerror(errno));
  unsigned char magic[8] = {0};
  size_t n = std::fread(magic, 1, sizeof magic, f);
  std::fclose(f);
  Image img;
  if (n == 8 && png_sig_cmp(magic, 0, 8) == 0)
    img = read_png(path);
  else if (n >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF)
    img = read_jpeg(path);
  else
    throw Error("cannot read image " + path + ": not a PNG or JPEG file");
  if (img.width <= 0 || img.height <= 0) throw Error("image " + path + " is empty");
  return img;
}

void write_png(FILE* f, const Image& image) {
  int type = image.channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB;
  if (image.channels != 1 && image.channels != 3) throw Error("write_png: 1 or 3 channels");
  write_png_rows(f, image.width, image.height, type, 8, image.pixels.data(), size_t(image.width) * image.channels);
}

void write_png16(FILE* f, int width, int height, const std::vector<uint16_t>& gray) {
  write_png_rows(f, width, height, PNG_COLOR_TYPE_GRAY, 16, reinterpret_cast<const uint8_t*>(gray.data()),
                 size_t(width) * 2);
}

void write_npy(FILE* f, const std::vector<int64_t>& shape, const std::vector<float>& data) {
  // NPY 1.0: magic, version, header length, a Python dict literal padded so the data is 64-byte aligned.
  std::string dims;
  for (size_t i = 0; i < shape.size(); ++i) dims += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() == 1) dims += ",";  // (3,) is a tuple, (3) is not
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  uint16_t len = uint16_t(header.size());
  const char magic[] = "\x93NUMPY\x01\x00";
  uint8_t len_le[2] = {uint8_t(len & 0xFF), uint8_t(len >> 8)};
  bool ok = std::fwrite(magic, 1, 8, f) == 8 && std::fwrite(len_le, 1, 2, f) == 2 &&
            std::fwrite(header.data(), 1, header.size(), f) == header.size() &&
            std::fwrite(data.data(), sizeof(float), data.size(), f) == data.size();  // little-endian hosts
  if (!ok) throw Error("cannot write .npy data (disk full?)");
}

}  // namespace mp
