// PNG (libpng) and JPEG (libjpeg) reading, PNG / .npy writing (output files: output_file.cpp).
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csetjmp>
#include <cstdio>  // before jpeglib.h, which uses FILE without including it
#include <cstring>
#include <memory>

#include <jpeglib.h>
#include <png.h>

#include "files.h"
#include "mp_deploy/engine.h"
#include "mp_deploy/image.h"
#include "process.h"

namespace mp {
namespace {

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<FILE, FileCloser>;

// ---- EXIF orientation, as Pillow's ImageOps.exif_transpose finds and applies it (Python's read_rgb)

// Tag 0x0112 (Orientation) of IFD0 in a TIFF block: -1 when the block or the tag is not there, 0 for a value
// Pillow would not transpose by (more than one value, or of a type it does not read as an integer).
int tiff_orientation(std::string tiff) {
  for (int i = 0; i < 2 && tiff.compare(0, 6, std::string("Exif\0\0", 6)) == 0; ++i) tiff.erase(0, 6);
  const unsigned char* p = reinterpret_cast<const unsigned char*>(tiff.data());
  size_t n = tiff.size();
  if (n < 8) return -1;
  bool le = p[0] == 'I' && p[1] == 'I';
  if (!le && !(p[0] == 'M' && p[1] == 'M')) return -1;
  auto u16 = [&](size_t o) { return le ? uint32_t(p[o] | p[o + 1] << 8) : uint32_t(p[o] << 8 | p[o + 1]); };
  auto u32 = [&](size_t o) { return le ? u16(o) | u16(o + 2) << 16 : u16(o) << 16 | u16(o + 2); };
  uint64_t ifd = u32(4);
  if (ifd + 2 > n) return -1;
  for (uint64_t i = 0, count = u16(ifd); i < count; ++i) {
    uint64_t e = ifd + 2 + 12 * i;
    if (e + 12 > n) break;
    if (u16(e) != 0x0112) continue;
    uint32_t type = u16(e + 2), values = u32(e + 4);
    if (values != 1) return 0;
    if (type == 1) return p[e + 8];                          // BYTE
    if (type == 3) return int(u16(e + 8));                   // SHORT, the usual one
    if (type == 4) return u32(e + 8) <= 8 ? int(u32(e + 8)) : 0;  // LONG
    return 0;
  }
  return -1;
}

// The first `tiff:Orientation="D` or `tiff:Orientation>D` in XMP text (Pillow's regular expression), else -1.
int xmp_orientation(const std::string& xmp) {
  const std::string key = "tiff:Orientation";
  for (size_t pos = xmp.find(key); pos != std::string::npos; pos = xmp.find(key, pos + 1)) {
    size_t at = pos + key.size();
    if (xmp.compare(at, 2, "=\"") == 0) at += 2;
    else if (xmp.compare(at, 1, ">") == 0) at += 1;
    else continue;
    if (at < xmp.size() && xmp[at] >= '0' && xmp[at] <= '9') return xmp[at] - '0';
  }
  return -1;
}

// Orientation 2..8 applied as Pillow's transpose methods (FLIP_LEFT_RIGHT, ROTATE_180, FLIP_TOP_BOTTOM,
// TRANSPOSE, ROTATE_270, TRANSVERSE, ROTATE_90); any other value leaves the image as stored.
void apply_orientation(Image* img, int orientation) {
  if (orientation < 2 || orientation > 8) return;
  const int w = img->width, h = img->height;
  const bool swap = orientation >= 5;
  const int ow = swap ? h : w, oh = swap ? w : h;
  std::vector<uint8_t> out(size_t(ow) * oh * 3);
  for (int y = 0; y < oh; ++y)
    for (int x = 0; x < ow; ++x) {
      int sx, sy;  // the stored pixel shown at (x, y)
      switch (orientation) {
        case 2: sx = w - 1 - x, sy = y; break;
        case 3: sx = w - 1 - x, sy = h - 1 - y; break;
        case 4: sx = x, sy = h - 1 - y; break;
        case 5: sx = y, sy = x; break;
        case 6: sx = y, sy = h - 1 - x; break;
        case 7: sx = w - 1 - y, sy = h - 1 - x; break;
        default: sx = w - 1 - y, sy = x; break;  // 8
      }
      std::memcpy(&out[(size_t(y) * ow + x) * 3], &img->pixels[(size_t(sy) * w + sx) * 3], 3);
    }
  img->pixels.swap(out);
  img->width = ow;
  img->height = oh;
}

// Python bytes.fromhex of the lines after the third of a PNG "Raw profile type exif" text (Pillow's reading of
// ImageMagick's hex dump); mp::Error where fromhex raises ValueError, which Python's read_rgb refuses the image for.
std::string raw_profile_exif(const std::string& text, const std::string& path) {
  std::string hex, out;
  size_t line = 0;
  for (char c : text)
    if (c == '\n') ++line;
    else if (line >= 3) hex += c;
  for (size_t i = 0; i < hex.size();) {
    if (std::isspace(static_cast<unsigned char>(hex[i]))) {  // only between two-digit pairs, as fromhex
      ++i;
      continue;
    }
    if (i + 1 >= hex.size() || !std::isxdigit(static_cast<unsigned char>(hex[i])) ||
        !std::isxdigit(static_cast<unsigned char>(hex[i + 1])))
      throw Error("cannot decode PNG " + path + ": its 'Raw profile type exif' text is not hexadecimal");
    out += char(std::stoi(hex.substr(i, 2), nullptr, 16));
    i += 2;
  }
  return out;
}

// Pillow's choice: the EXIF block's orientation when it has the tag, else XMP's, else 1.
int orientation_of(const std::string& exif, const std::string& xmp) {
  int o = exif.empty() ? -1 : tiff_orientation(exif);
  if (o < 0) o = xmp.empty() ? -1 : xmp_orientation(xmp);
  return o < 0 ? 1 : o;
}

// The most a deflate stream expands (a 258-byte match in 2 bits, 1032:1 in the limit): a PNG whose file is too
// small to hold its declared pixels even at this ratio is truncated, refused before its pixel buffer exists.
const uint64_t kMaxDeflateRatio = 1032;

// "" when an image of this size may be read, else why not; from the header, before any pixel buffer exists:
// the pixel cap first (as Python's read_rgb), then the shortest side (as check_rgb, which Python applies to
// every image predict reads).
std::string size_problem(const std::string& path, int64_t width, int64_t height) {
  if (width * height > max_pixels()) return "image " + path + too_many_pixels(width, height);
  if (std::min(width, height) < min_side())
    return "image " + path + " is " + std::to_string(width) + "x" + std::to_string(height) +
           ": too small (sides of at least " + std::to_string(min_side()) + " pixels)";
  return "";
}

void png_error_fn(png_structp png, png_const_charp message) {  // keep the message, jump back to read_png
  std::snprintf(static_cast<char*>(png_get_error_ptr(png)), 256, "%s", message);
  png_longjmp(png, 1);
}

void png_warning_fn(png_structp, png_const_charp) {}  // e.g. "known incorrect sRGB profile": harmless

Image read_png(FILE* f, off_t file_size, const std::string& path, int* orientation) {
  // The classic API, not the simplified one: that one composites alpha on a background and takes 16-bit
  // files for linear light. Here, as PIL's convert("RGB") (Python's to_rgb8): alpha dropped, 16-bit colour
  // to its high byte, 16-bit gray (PIL's mode I;16) divided by 257 and rounded.
  Image img;  // constructed before setjmp: nothing with a destructor is skipped by the longjmp
  std::vector<png_bytep> rows;
  std::string refused;  // a size check's message, thrown after the longjmp cleanup
  char message[256] = "";
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, message, png_error_fn, png_warning_fn);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    throw Error("out of memory reading " + path);
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw Error(refused.empty() ? "cannot decode PNG " + path + ": " + message : refused);
  }
  // libpng's own side limit (1000000) would refuse 32x1048576, which the pixel cap allows and Pillow reads:
  // the cap and the shortest side decide, as in Python
  png_set_user_limits(png, PNG_UINT_31_MAX, PNG_UINT_31_MAX);
  png_init_io(png, f);
  png_read_info(png, info);
  png_uint_32 width = png_get_image_width(png, info), height = png_get_image_height(png, info);
  int bit_depth = png_get_bit_depth(png, info), color_type = png_get_color_type(png, info);
  int channels = png_get_channels(png, info);
  refused = size_problem(path, width, height);
  if (!refused.empty()) png_error(png, "refused");  // longjmp: the cleanup above, then `refused` thrown
  uint64_t least_data = uint64_t(width) * height * channels * bit_depth / 8;  // the pixels, unfiltered
  if (least_data / kMaxDeflateRatio > uint64_t(file_size)) {
    refused = "cannot decode PNG " + path + ": truncated (" + std::to_string(file_size) + " bytes cannot hold " +
              std::to_string(width) + "x" + std::to_string(height) + " pixels)";
    png_error(png, "refused");
  }
  bool gray16 = color_type == PNG_COLOR_TYPE_GRAY && bit_depth == 16;
  if (!gray16) png_set_strip_16(png);
  png_set_packing(png);                 // 1, 2, 4-bit -> 8-bit
  png_set_palette_to_rgb(png);
  png_set_expand_gray_1_2_4_to_8(png);
  if (!gray16) png_set_gray_to_rgb(png);
  png_set_strip_alpha(png);             // also drops tRNS transparency (not expanded to alpha)
  int passes = png_set_interlace_handling(png);
  png_read_update_info(png, info);
  size_t row_bytes = size_t(width) * (gray16 ? 2 : 3);
  if (png_get_channels(png, info) != (gray16 ? 1 : 3) || png_get_rowbytes(png, info) != row_bytes)
    png_error(png, "unexpected pixel format after conversion");
  img.width = int(width);
  img.height = int(height);
  // a 16-bit gray row (2 bytes a pixel, big-endian) is read into the last 2/3 of its RGB row and expanded in
  // place, left to right: pixel x writes bytes 3x..3x+2, below w + 2x + 2 where its right neighbours start
  size_t rgb_row = size_t(width) * 3, offset = gray16 ? width : 0;
  img.pixels.reserve(rgb_row * height);  // the pages are touched row by row: a truncated file never fills them
  if (passes == 1) {  // row by row: the buffer grows with the rows actually decoded (within the reserve)
    for (png_uint_32 y = 0; y < height; ++y) {
      img.pixels.resize(rgb_row * (y + 1));
      png_read_row(png, img.pixels.data() + rgb_row * y + offset, nullptr);
    }
  } else {  // interlaced: every pass writes into every row
    img.pixels.resize(rgb_row * height);
    rows.resize(height);
    for (png_uint_32 y = 0; y < height; ++y) rows[y] = img.pixels.data() + rgb_row * y + offset;
    png_read_image(png, rows.data());
  }
  png_read_end(png, info);  // the chunks after the image too: an eXIf or a text there counts, as in Pillow
  // EXIF orientation from where Pillow finds it: an eXIf chunk, else a "Raw profile type exif" text; XMP next
  std::string exif, xmp, raw_profile;
  bool has_raw_profile = false;
#ifdef PNG_eXIf_SUPPORTED
  png_uint_32 exif_size = 0;
  png_bytep exif_data = nullptr;
  if (png_get_eXIf_1(png, info, &exif_size, &exif_data) && exif_data)
    exif.assign("Exif\0\0", 6).append(reinterpret_cast<const char*>(exif_data), exif_size);
#endif
  png_textp texts = nullptr;
  int text_count = 0;
  png_get_text(png, info, &texts, &text_count);
  for (int i = 0; i < text_count; ++i) {  // the last of a key wins, as in Pillow's info
    std::string key = texts[i].key ? texts[i].key : "";
    std::string text = texts[i].text ? std::string(texts[i].text, texts[i].itxt_length ? texts[i].itxt_length
                                                                                       : texts[i].text_length)
                                     : "";
    if (key == "XML:com.adobe.xmp") xmp = text;
    if (key == "Raw profile type exif") raw_profile = text, has_raw_profile = true;
  }
  png_destroy_read_struct(&png, &info, nullptr);
  if (exif.empty() && has_raw_profile) exif = raw_profile_exif(raw_profile, path);
  *orientation = orientation_of(exif, xmp);
  if (gray16)
    for (png_uint_32 y = 0; y < height; ++y) {
      uint8_t* out = img.pixels.data() + rgb_row * y;
      const uint8_t* in = out + width;
      for (png_uint_32 x = 0; x < width; ++x) {
        unsigned v = unsigned(in[2 * x]) << 8 | in[2 * x + 1];
        uint8_t g = uint8_t((v + 128) / 257);  // = np.rint(v / 257): v / 257 is never a half
        out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = g;
      }
    }
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

// Pillow's CMYK JPEG -> RGB, byte for byte: the samples taken as Adobe-inverted ("CMYK;I", which Pillow assumes
// for every CMYK JPEG, Adobe marker or not; libjpeg has already turned YCCK into CMYK), then Convert.c's
// cmyk2rgb: nk = 255 - k, channel = nk - c * nk / 255 (its rounded MULDIV255).
void cmyk_row_to_rgb(const uint8_t* cmyk, uint8_t* rgb, int width) {
  for (int x = 0; x < width; ++x, cmyk += 4, rgb += 3) {
    int nk = cmyk[3];  // 255 - k, k = 255 - sample
    for (int c = 0; c < 3; ++c) {
      int t = (255 - cmyk[c]) * nk + 128;
      rgb[c] = uint8_t(nk - (((t >> 8) + t) >> 8));
    }
  }
}

Image read_jpeg(FILE* f, const std::string& path, int* orientation) {
  Image img;  // constructed before setjmp: nothing with a destructor is skipped by the longjmp
  std::vector<JSAMPLE> cmyk;
  std::string refused;  // a size check's or a warning's message, thrown after the longjmp cleanup
  jpeg_decompress_struct cinfo;
  JpegError err;
  err.message[0] = '\0';
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_exit;
  err.mgr.output_message = jpeg_output_message;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    throw Error(refused.empty() ? "cannot decode JPEG " + path + ": " + err.message : refused);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_stdio_src(&cinfo, f);
  jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);  // APP1: EXIF and XMP, for the orientation
  jpeg_read_header(&cinfo, TRUE);
  {  // as Pillow's APP handler: EXIF segments joined (the first whole, the others without "Exif\0\0"), the last XMP
    std::string exif, xmp;
    const std::string exif_id("Exif\0\0", 6), xmp_id("http://ns.adobe.com/xap/1.0/\0", 29);
    for (jpeg_saved_marker_ptr m = cinfo.marker_list; m; m = m->next) {
      std::string data(reinterpret_cast<const char*>(m->data), m->data_length);
      if (data.compare(0, 6, exif_id) == 0) exif += exif.empty() ? data : data.substr(6);
      else if (data.compare(0, 29, xmp_id) == 0) xmp = data.substr(29);
    }
    *orientation = orientation_of(exif, xmp);
  }
  refused = size_problem(path, cinfo.image_width, cinfo.image_height);  // before any decoding buffer exists
  if (!refused.empty()) std::longjmp(err.jump, 1);
  bool is_cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  cinfo.out_color_space = is_cmyk ? JCS_CMYK : JCS_RGB;  // gray and YCbCr both come out as RGB
  jpeg_start_decompress(&cinfo);
  img.width = int(cinfo.output_width);
  img.height = int(cinfo.output_height);
  size_t rgb_row = size_t(img.width) * 3;
  img.pixels.reserve(rgb_row * img.height);  // touched row by row (a truncated file stops at its first warning)
  if (is_cmyk) cmyk.resize(size_t(img.width) * 4);
  while (cinfo.output_scanline < cinfo.output_height) {
    img.pixels.resize(rgb_row * (cinfo.output_scanline + 1));
    JSAMPROW row = img.pixels.data() + rgb_row * cinfo.output_scanline;
    JSAMPROW target = is_cmyk ? cmyk.data() : row;
    if (jpeg_read_scanlines(&cinfo, &target, 1) != 1) {  // a suspending source only: not stdio's
      refused = "cannot decode JPEG " + path + ": no scanline returned";
      std::longjmp(err.jump, 1);
    }
    if (is_cmyk) cmyk_row_to_rgb(cmyk.data(), row, img.width);
    // libjpeg pads a truncated or damaged file with gray and only warns: refuse it, at the first warning
    if (err.mgr.num_warnings > 0) {
      refused = "cannot decode JPEG " + path + ": " + err.message;
      std::longjmp(err.jump, 1);
    }
  }
  jpeg_finish_decompress(&cinfo);
  bool damaged = err.mgr.num_warnings > 0;  // e.g. data after the last scan
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

int min_side() { return 32; }

Image read_image(const std::string& path) {
  // One descriptor for the sniff and the decode: a regular file, opened without blocking (files.h)
  off_t size = 0;
  FilePtr f(fopen_regular(path, "cannot read image", &size));
  unsigned char magic[8] = {0};
  size_t n = std::fread(magic, 1, sizeof magic, f.get());
  if (std::ferror(f.get()) || std::fseek(f.get(), 0, SEEK_SET) != 0)
    throw Error("cannot read image " + path + ": " + std::strerror(errno));
  Image img;
  int orientation = 1;
  if (n == 8 && png_sig_cmp(magic, 0, 8) == 0)
    img = read_png(f.get(), size, path, &orientation);
  else if (n >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF)
    img = read_jpeg(f.get(), path, &orientation);
  else
    throw Error("cannot read image " + path + ": not a PNG or JPEG file");
  if (img.width <= 0 || img.height <= 0) throw Error("image " + path + " is empty");
  apply_orientation(&img, orientation);  // as Python's read_rgb (ImageOps.exif_transpose)
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
