#include "files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "mp_deploy/engine.h"

namespace mp {

std::string file_kind(mode_t mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a folder";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "a special file";
}

int open_regular(const std::string& path, const std::string& what, off_t* size) {
  const std::string where = what + " " + path;
  int fd = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ELOOP) throw Error(where + ": not a regular file (a symbolic link loop)");
    struct stat st;  // e.g. ENXIO for a socket: say what is there
    if (err != ENOENT && err != EACCES && stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
      throw Error(where + ": not a regular file (" + file_kind(st.st_mode) + ")");
    throw Error(where + ": " + std::strerror(err));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    throw Error(where + ": " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    throw Error(where + ": not a regular file (" + file_kind(st.st_mode) + ")");
  }
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    int err = errno;
    close(fd);
    throw Error(where + ": " + std::strerror(err));
  }
  if (size) *size = st.st_size;
  return fd;
}

FILE* fopen_regular(const std::string& path, const std::string& what, off_t* size) {
  int fd = open_regular(path, what, size);
  FILE* f = fdopen(fd, "rb");
  if (!f) {
    int err = errno;
    close(fd);
    throw Error(what + " " + path + ": " + std::strerror(err));
  }
  return f;
}

void check_replaceable(const std::string& path, const std::string& what) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return;  // nothing there (or no folder: creating the output says so)
    throw Error(what + " " + path + ": cannot check what is there (" + std::strerror(errno) + ")");
  }
  if (!S_ISREG(st.st_mode))
    throw Error(what + " " + path + ": " + file_kind(st.st_mode) +
                " is there; refusing to replace what is not a regular file");
}

}  // namespace mp
