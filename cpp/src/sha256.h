// SHA-256 (FIPS 180-4), small and self-contained: the sidecar's file_sha256 is checked without OpenSSL.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace mp {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  std::string hexdigest();  // finishes the hash

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

// Hex digest of a whole file; throws mp::Error if it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace mp
