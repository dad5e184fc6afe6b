// SPDX-License-Identifier: Apache-2.0
#include "base/unique_fd.h"

namespace base {

Result<UniqueFd> UniqueFd::open(const std::string& path, int flags, mode_t mode) {
  return openat(AT_FDCWD, path, flags, mode);
}

Result<UniqueFd> UniqueFd::openat(int dirfd, const std::string& path, int flags, mode_t mode) {
  int fd;
  do {
    fd = ::openat(dirfd, path.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    return errno_error("open " + path);
  }
  return UniqueFd(fd);
}

}  // namespace base
