// Just enough of the zip format to read one stored (uncompressed) entry of a .pt2 package: its central
// directory (zip64 included) and a stored entry's bytes, every offset and length checked against the file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mp {

struct ZipEntry {
  std::string name;
  uint16_t flags = 0, method = 0;  // method 0: stored
  uint32_t crc32 = 0;
  uint64_t compressed = 0, size = 0, offset = 0;  // offset: of the entry's local header
};

// The entries of the zip's central directory; throws mp::Error when `path` is not a readable zip.
std::vector<ZipEntry> zip_entries(const std::string& path);

// The bytes of a stored entry of at most max_bytes; throws mp::Error if it is compressed, encrypted, larger,
// out of the file's bounds, or fails its CRC.
std::string zip_read_stored(const std::string& path, const ZipEntry& entry, uint64_t max_bytes);

}  // namespace mp
