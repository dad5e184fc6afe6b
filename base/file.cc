// SPDX-License-Identifier: Apache-2.0
#include "base/file.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "base/defer.h"
#include "base/unique_fd.h"

namespace base {

Result<std::vector<std::byte>> read_file(const std::string& path) {
  CFN_ASSIGN_OR_RETURN(UniqueFd fd, UniqueFd::open(path, O_RDONLY));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return errno_error("stat " + path);
  }
  if (!S_ISREG(st.st_mode)) {
    return make_error(EINVAL, path + ": not a regular file");
  }
  std::vector<std::byte> data(static_cast<std::size_t>(st.st_size));
  if (auto r = pread_full(fd.get(), data, 0); !r) {
    return Unexpected(std::move(r).error().wrap(path));
  }
  return data;
}

Status pread_full(int fd, MutableBytes buf, std::uint64_t off) {
  std::size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::pread(fd, buf.data() + done, buf.size() - done, static_cast<off_t>(off + done));
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return errno_error("pread");
    }
    if (n == 0) {
      return errorf(EIO, "short read: {} of {} bytes at offset {}", done, buf.size(), off);
    }
    done += static_cast<std::size_t>(n);
  }
  return {};
}

Status pwrite_full(int fd, Bytes buf, std::uint64_t off) {
  std::size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::pwrite(fd, buf.data() + done, buf.size() - done, static_cast<off_t>(off + done));
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return errno_error("pwrite");
    }
    done += static_cast<std::size_t>(n);
  }
  return {};
}

Status write_full(int fd, Bytes buf) {
  std::size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::write(fd, buf.data() + done, buf.size() - done);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return errno_error("write");
    }
    done += static_cast<std::size_t>(n);
  }
  return {};
}

namespace {
// write_file_atomic's temporaries are "<path>" + kTempTag + mkostemp's six characters;
// is_atomic_temporary() recognises exactly these.
constexpr std::string_view kTempTag = ".tmp.";
constexpr std::string_view kTempRandom = "XXXXXX";
}  // namespace

Status write_file_atomic(const std::string& path, Bytes data, mode_t mode, Durability durability) {
  // A name of its own (mkostemp), so two writers of the same path (two binds of one
  // image) never write into one temporary and never rename a half-written file.
  std::string tmp = path;
  tmp.append(kTempTag).append(kTempRandom);
  UniqueFd fd(::mkostemp(tmp.data(), O_CLOEXEC));
  if (!fd) {
    return errno_error("create " + tmp);
  }
  auto cleanup = defer([&] { ::unlink(tmp.c_str()); });
  if (::fchmod(fd.get(), mode) != 0) {
    return errno_error("chmod " + tmp);
  }
  if (auto r = write_full(fd.get(), data); !r) {
    return Unexpected(std::move(r).error().wrap(tmp));
  }
  if (durability == Durability::kSynced && ::fsync(fd.get()) != 0) {
    return errno_error("fsync " + tmp);
  }
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return errno_error("rename " + tmp);
  }
  cleanup.cancel();
  return {};
}

bool is_atomic_temporary(std::string_view name) {
  const std::size_t n = kTempRandom.size();
  if (name.size() < 1 + kTempTag.size() + n) {
    return false;
  }
  const std::string_view random = name.substr(name.size() - n);
  const std::string_view tag = name.substr(name.size() - n - kTempTag.size(), kTempTag.size());
  for (char c : random) {
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum) {
      return false;
    }
  }
  return tag == kTempTag;
}

Result<std::size_t> remove_atomic_temporaries(const std::string& dir) {
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
  if (dfd < 0) {
    if (errno == ENOENT) {
      return std::size_t{0};
    }
    return errno_error("open " + dir);
  }
  DIR* d = ::fdopendir(dfd);
  if (d == nullptr) {
    const int e = errno;
    ::close(dfd);
    return errno_error(e, "opendir " + dir);
  }
  auto close_dir = defer([&] { ::closedir(d); });
  std::size_t removed = 0;
  while (const dirent* e = ::readdir(d)) {
    if (!is_atomic_temporary(e->d_name)) {
      continue;
    }
    // lstat, not d_type: a symlink or a directory of that name is not ours.
    struct stat st {};
    if (::fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) {
      continue;
    }
    if (::unlinkat(dfd, e->d_name, 0) != 0) {
      if (errno == ENOENT) {
        continue;
      }
      return errno_error("unlink " + dir + "/" + e->d_name);
    }
    ++removed;
  }
  return removed;
}

}  // namespace base
