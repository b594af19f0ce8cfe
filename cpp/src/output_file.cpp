// Output files written atomically, and committed all together or not at all.
//
// As mp_deploy/files.py's atomic_write: an existing output path that is not a regular file (a device, FIFO,
// socket, folder or symbolic link) is never replaced, checked when the output is created and again right before
// the rename (as root, a rename onto /dev/full would replace the device node); the temporary has a short name of
// its own in the destination folder, so it fits wherever the final name fits.
#include <fcntl.h>
#include <stdio.h>  // renameat2 (glibc, _GNU_SOURCE)
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "files.h"
#include "mp_deploy/engine.h"
#include "mp_deploy/image.h"

namespace mp {
namespace {

const char kTempName[] = ".mp_infer-XXXXXX";  // 16 bytes; the backup adds ".old"

// rename(from, to) that fails with EEXIST instead of replacing something that appeared at `to` (where the
// file system can say so), for a path nothing was at when checked.
int rename_noreplace(const std::string& from, const std::string& to) {
#ifdef RENAME_NOREPLACE
  if (renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) return -1;
#endif
  return std::rename(from.c_str(), to.c_str());
}

}  // namespace

OutputFile::OutputFile(const std::string& path) : path_(path) {
  size_t slash = path.find_last_of('/');
  std::string dir = slash == std::string::npos ? "." : slash == 0 ? "" : path.substr(0, slash);
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  if (name.empty() || name == "." || name == "..") throw Error("output path " + path + " names a folder, not a file");
  check_replaceable(path, "output");
  std::string pattern = dir + "/" + kTempName;
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  int fd = mkstemp(buf.data());
  if (fd < 0) throw Error("cannot create output " + path + ": " + std::strerror(errno));
  mode_t mask = umask(0);  // mkstemp makes 0600; give the final file the usual 0666 & ~umask
  umask(mask);
  fchmod(fd, 0666 & ~mask);
  tmp_ = buf.data();
  file_ = fdopen(fd, "wb");
  if (!file_) {
    close(fd);
    unlink(tmp_.c_str());
    throw Error("cannot open output " + tmp_);
  }
}

OutputFile::OutputFile(OutputFile&& other) noexcept : path_(std::move(other.path_)), tmp_(std::move(other.tmp_)),
                                                      file_(other.file_) {
  other.file_ = nullptr;
  other.tmp_.clear();
}

OutputFile::~OutputFile() {
  if (file_) std::fclose(file_);
  if (!tmp_.empty()) unlink(tmp_.c_str());
}

void OutputFile::finish() {
  if (!file_) return;
  bool ok = std::fflush(file_) == 0 && fsync(fileno(file_)) == 0;
  ok = std::fclose(file_) == 0 && ok;
  file_ = nullptr;
  if (!ok) throw Error("cannot write " + path_ + ": " + std::strerror(errno));
}

std::string OutputFile::install() {
  // Checked again: something that is not a regular file may have appeared at path_ while the run wrote.
  check_replaceable(path_, "output");
  // A file already at path_ is kept under a second name until all renames are done, so that a failed commit
  // can put it back: a hard link (path_ never goes missing), else (a file system without them) moved aside.
  // The backup holds exactly what the rename will replace: it is checked to be a regular file too.
  std::string backup;
  bool moved = false;
  struct stat st;
  if (lstat(path_.c_str(), &st) == 0) {
    backup = tmp_ + ".old";
    if (link(path_.c_str(), backup.c_str()) != 0) {
      int err = errno;
      if (err == EEXIST || err == ENOENT || rename_noreplace(path_, backup) != 0)
        throw Error("cannot keep the existing " + path_ + " until all outputs are written: " +
                    std::strerror(err == EEXIST || err == ENOENT ? err : errno));
      moved = true;
    }
    if (lstat(backup.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {  // swapped since the check above
      if (moved) rename_noreplace(backup, path_);
      else unlink(backup.c_str());
      throw Error("output " + path_ + ": what is there changed while writing; refusing to replace it");
    }
  }
  int failed = backup.empty() ? rename_noreplace(tmp_, path_) : std::rename(tmp_.c_str(), path_.c_str());
  if (failed != 0) {
    int err = errno;
    if (moved) rename_noreplace(backup, path_);
    else if (!backup.empty()) unlink(backup.c_str());
    throw Error("cannot rename onto " + path_ + ": " + std::strerror(err));
  }
  tmp_.clear();
  return backup;
}

void OutputFile::undo(const std::string& backup) {
  if (backup.empty())
    unlink(path_.c_str());
  else
    std::rename(backup.c_str(), path_.c_str());
}

void OutputFile::commit() {
  finish();
  std::string backup = install();
  if (!backup.empty()) unlink(backup.c_str());
}

void commit_all(std::vector<OutputFile>& files) {
  for (auto& f : files) f.finish();  // any write error: nothing renamed yet, the temporaries go
  std::vector<std::string> backups;
  try {
    for (auto& f : files) backups.push_back(f.install());
  } catch (const Error&) {
    for (size_t i = backups.size(); i-- > 0;) files[i].undo(backups[i]);
    throw;
  }
  for (const auto& backup : backups)
    if (!backup.empty()) unlink(backup.c_str());
}

}  // namespace mp
