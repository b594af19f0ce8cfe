// Output files written atomically, and committed all together or not at all.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "mp_deploy/engine.h"
#include "mp_deploy/image.h"

namespace mp {

OutputFile::OutputFile(const std::string& path) : path_(path) {
  size_t slash = path.find_last_of('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  if (name.empty() || name == "." || name == "..") throw Error("output path " + path + " names a folder, not a file");
  std::string pattern = dir + "/." + name + ".XXXXXX";
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
  // A file already at path_ is kept under a second name until all renames are done, so that a failed commit
  // can put it back: a hard link (path_ never goes missing), else (a file system without them) moved aside.
  // A folder in the way makes the rename fail.
  std::string backup;
  bool moved = false;
  struct stat st;
  if (lstat(path_.c_str(), &st) == 0 && !S_ISDIR(st.st_mode)) {
    backup = tmp_ + ".old";
    if (link(path_.c_str(), backup.c_str()) != 0) {
      if (std::rename(path_.c_str(), backup.c_str()) != 0)
        throw Error("cannot keep the existing " + path_ + " until all outputs are written: " + std::strerror(errno));
      moved = true;
    }
  }
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    int err = errno;
    if (moved) std::rename(backup.c_str(), path_.c_str());
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
