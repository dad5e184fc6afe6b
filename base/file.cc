// SPDX-License-Identifier: Apache-2.0
#include "base/file.h"

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

Status write_file_atomic(const std::string& path, Bytes data, mode_t mode) {
  // A name of its own (mkostemp), so two writers of the same path (two binds of one
  // image) never write into one temporary and never rename a half-written file.
  std::string tmp = path + ".tmp.XXXXXX";
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
  if (::fsync(fd.get()) != 0) {
    return errno_error("fsync " + tmp);
  }
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return errno_error("rename " + tmp);
  }
  cleanup.cancel();
  return {};
}

}  // namespace base
