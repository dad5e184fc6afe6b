// SPDX-License-Identifier: Apache-2.0
#include "control/wire.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "base/unix_socket.h"
#include "control/api.h"

namespace control {
namespace {

int ms_left(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() <= 0 ? 0 : static_cast<int>(left.count());
}

// Wait until fd is ready for `events` or the deadline passes (ETIMEDOUT).
base::Status wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, ms_left(deadline));
    if (n > 0) {
      return {};
    }
    if (n == 0) {
      return base::make_error(ETIMEDOUT, "control socket: deadline passed");
    }
    if (errno != EINTR) {
      return base::errno_error("poll");
    }
  }
}

}  // namespace

base::Result<std::string> read_line(int fd, std::size_t max, Clock::time_point deadline) {
  std::string line;
  char buf[4096];
  for (;;) {
    CFN_TRY(wait_fd(fd, POLLIN, deadline));
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) {
        continue;
      }
      return base::errno_error("recv");
    }
    if (n == 0) {
      if (line.empty()) {
        return base::make_error(ECONNRESET, "control socket: peer closed");
      }
      return line;  // a last line without '\n' is accepted
    }
    const char* nl = static_cast<const char*>(std::memchr(buf, '\n', static_cast<size_t>(n)));
    line.append(buf, nl != nullptr ? static_cast<size_t>(nl - buf) : static_cast<size_t>(n));
    if (line.size() > max) {
      return base::errorf(EMSGSIZE, "control message longer than {} bytes", max);
    }
    if (nl != nullptr) {
      return line;
    }
  }
}

base::Status send_all(int fd, std::string_view data, Clock::time_point deadline) {
  while (!data.empty()) {
    CFN_TRY(wait_fd(fd, POLLOUT, deadline));
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) {
        continue;
      }
      return base::errno_error("send");
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

base::Result<std::string> call(const std::string& path, const std::string& request,
                               std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  CFN_ASSIGN_OR_RETURN(auto fd, base::connect_unix(path, SOCK_STREAM));
  CFN_TRY(send_all(fd.get(), request + "\n", deadline));
  return read_line(fd.get(), kMaxResponse, deadline);
}

}  // namespace control
