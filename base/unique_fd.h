// SPDX-License-Identifier: Apache-2.0
// UniqueFd: the one owner of a file descriptor. Move-only; closes on destruction.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <string>
#include <utility>

#include "base/result.h"

namespace base {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      reset(o.release());
    }
    return *this;
  }
  ~UniqueFd() { reset(); }

  // open(2) with O_CLOEXEC always added. Error names the path.
  [[nodiscard]] static Result<UniqueFd> open(const std::string& path, int flags, mode_t mode = 0);
  [[nodiscard]] static Result<UniqueFd> openat(int dirfd, const std::string& path, int flags,
                                               mode_t mode = 0);

  [[nodiscard]] int get() const { return fd_; }
  [[nodiscard]] bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) {
      ::close(fd_);
    }
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace base
