// Files from untrusted places, the C++ twin of mp_deploy/files.py: nothing is opened that is not a regular file
// (opened without blocking, checked with fstat before a byte is read), and nothing is replaced that is not one.
#pragma once

#include <sys/types.h>

#include <cstdio>
#include <string>

#include "mp_deploy/image.h"

namespace mp {

// "a FIFO", "a character device", "a folder", ... for a stat mode ("a regular file" for one).
std::string file_kind(mode_t mode);

// `path` opened read-only if it is a regular file (symbolic links followed): O_NONBLOCK for the open itself (a
// FIFO or a device opens at once instead of waiting for a writer), fstat, refused unless S_ISREG, then
// O_NONBLOCK cleared. Throws mp::Error "<what> <path>: not a regular file (a FIFO)", or with the open's reason.
// Returns the descriptor (O_CLOEXEC); *size gets the file's size when given.
int open_regular(const std::string& path, const std::string& what, off_t* size = nullptr);

// open_regular as a stdio stream ("rb").
FILE* fopen_regular(const std::string& path, const std::string& what, off_t* size = nullptr);

// check_replaceable (what may be replaced): mp_deploy/image.h.

}  // namespace mp
