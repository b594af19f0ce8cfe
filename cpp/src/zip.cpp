#include "zip.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "files.h"
#include "mp_deploy/engine.h"

namespace mp {
namespace {

const uint32_t kEndSig = 0x06054b50, kEnd64LocatorSig = 0x07064b50, kEnd64Sig = 0x06064b50,
               kCentralSig = 0x02014b50, kLocalSig = 0x04034b50;
const uint64_t kMaxCentralDirectory = uint64_t(64) << 20;  // a .pt2 has a few hundred entries at most

uint16_t u16(const unsigned char* p) { return uint16_t(p[0] | p[1] << 8); }
uint32_t u32(const unsigned char* p) { return uint32_t(u16(p)) | uint32_t(u16(p + 2)) << 16; }
uint64_t u64(const unsigned char* p) { return uint64_t(u32(p)) | uint64_t(u32(p + 4)) << 32; }

class File {
 public:
  File(const std::string& path) : path_(path) {
    off_t size = 0;
    fd_ = open_regular(path, "cannot open", &size);  // a regular file: never blocks, never a device
    size_ = uint64_t(size);
  }
  ~File() {
    if (fd_ >= 0) close(fd_);
  }
  uint64_t size() const { return size_; }
  // `n` bytes at `offset`, which must lie inside the file.
  std::string read(uint64_t offset, uint64_t n) const {
    if (offset > size_ || n > size_ - offset) throw Error(path_ + " is not a valid zip: a record lies past its end");
    std::string out(n, '\0');
    for (uint64_t done = 0; done < n;) {
      ssize_t got = pread(fd_, &out[done], n - done, off_t(offset + done));
      if (got <= 0) throw Error("cannot read " + path_ + ": " + (got < 0 ? std::strerror(errno) : "short read"));
      done += uint64_t(got);
    }
    return out;
  }

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

const unsigned char* bytes(const std::string& s) { return reinterpret_cast<const unsigned char*>(s.data()); }

uint32_t crc32(const std::string& data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char c : data) {
    crc ^= c;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

// Sizes and offset that did not fit 32 bits are in the zip64 extra field (id 1), in this order.
void read_zip64_extra(const unsigned char* extra, size_t length, ZipEntry* e, const std::string& path) {
  for (size_t pos = 0; pos + 4 <= length;) {
    uint16_t id = u16(extra + pos), size = u16(extra + pos + 2);
    if (pos + 4 + size > length) break;
    if (id == 1) {
      const unsigned char* p = extra + pos + 4;
      size_t left = size;
      for (uint64_t* field : {&e->size, &e->compressed, &e->offset}) {
        if (*field != 0xFFFFFFFFu) continue;
        if (left < 8) throw Error(path + " is not a valid zip: a short zip64 field");
        *field = u64(p);
        p += 8;
        left -= 8;
      }
      return;
    }
    pos += 4 + size;
  }
}

}  // namespace

std::vector<ZipEntry> zip_entries(const std::string& path) {
  File f(path);
  const std::string bad = path + " is not a valid zip: ";
  uint64_t tail_size = std::min<uint64_t>(f.size(), 22 + 0xFFFF);
  std::string tail = f.read(f.size() - tail_size, tail_size);
  const unsigned char* t = bytes(tail);
  size_t end = std::string::npos;  // the end-of-central-directory record, its comment inside the tail
  for (size_t pos = tail.size() >= 22 ? tail.size() - 22 : std::string::npos; pos != std::string::npos; --pos) {
    if (u32(t + pos) == kEndSig && pos + 22 + u16(t + pos + 20) <= tail.size()) {
      end = pos;
      break;
    }
    if (pos == 0) break;
  }
  if (end == std::string::npos) throw Error(bad + "no end of central directory");
  uint64_t count = u16(t + end + 10), cd_size = u32(t + end + 12), cd_offset = u32(t + end + 16);
  uint64_t end_abs = f.size() - tail_size + end;
  if (end_abs >= 20) {  // zip64: a locator just before the record points at the zip64 record
    std::string loc = f.read(end_abs - 20, 20);
    if (u32(bytes(loc)) == kEnd64LocatorSig) {
      std::string rec = f.read(u64(bytes(loc) + 8), 56);
      if (u32(bytes(rec)) != kEnd64Sig) throw Error(bad + "a broken zip64 end record");
      count = u64(bytes(rec) + 32);
      cd_size = u64(bytes(rec) + 40);
      cd_offset = u64(bytes(rec) + 48);
    }
  }
  if (cd_size > kMaxCentralDirectory) throw Error(bad + "its central directory is too large");
  std::string cd = f.read(cd_offset, cd_size);
  const unsigned char* p = bytes(cd);
  std::vector<ZipEntry> entries;
  for (size_t pos = 0; entries.size() < count;) {
    if (pos + 46 > cd.size() || u32(p + pos) != kCentralSig) throw Error(bad + "a broken central directory");
    size_t name_len = u16(p + pos + 28), extra_len = u16(p + pos + 30), comment_len = u16(p + pos + 32);
    if (pos + 46 + name_len + extra_len + comment_len > cd.size()) throw Error(bad + "a broken central directory");
    ZipEntry e;
    e.flags = u16(p + pos + 8);
    e.method = u16(p + pos + 10);
    e.crc32 = u32(p + pos + 16);
    e.compressed = u32(p + pos + 20);
    e.size = u32(p + pos + 24);
    e.offset = u32(p + pos + 42);
    e.name.assign(cd, pos + 46, name_len);
    read_zip64_extra(p + pos + 46 + name_len, extra_len, &e, path);
    entries.push_back(std::move(e));
    pos += 46 + name_len + extra_len + comment_len;
  }
  return entries;
}

std::string zip_read_stored(const std::string& path, const ZipEntry& e, uint64_t max_bytes) {
  const std::string what = e.name + " in " + path;
  if (e.method != 0 || (e.flags & 1)) throw Error(what + " is compressed or encrypted, not stored");
  if (e.size != e.compressed)
    throw Error(what + " is stored yet " + std::to_string(e.compressed) + " bytes for " + std::to_string(e.size));
  if (e.size > max_bytes)
    throw Error(what + " is " + std::to_string(e.size) + " bytes, at most " + std::to_string(max_bytes) + " expected");
  File f(path);
  std::string local = f.read(e.offset, 30);
  if (u32(bytes(local)) != kLocalSig) throw Error(what + ": a broken local header");
  uint64_t name_len = u16(bytes(local) + 26), extra_len = u16(bytes(local) + 28);
  if (f.read(e.offset + 30, name_len) != e.name) throw Error(what + ": its local header names another file");
  std::string data = f.read(e.offset + 30 + name_len + extra_len, e.size);
  if (crc32(data) != e.crc32) throw Error(what + " fails its CRC: corrupted");
  return data;
}

}  // namespace mp
