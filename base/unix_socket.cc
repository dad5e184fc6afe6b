// SPDX-License-Identifier: Apache-2.0
#include "base/unix_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>

#include <cstring>

namespace base {

Result<sockaddr_un> unix_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    return errorf(ENAMETOOLONG, "socket path '{}' is empty or longer than {}", path,
                  sizeof addr.sun_path - 1);
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

Result<UniqueFd> listen_private(const std::string& path, int type, int backlog) {
  CFN_ASSIGN_OR_RETURN(auto addr, unix_address(path));
  UniqueFd s(::socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!s) {
    return errno_error("socket");
  }
  const mode_t old = ::umask(0177);
  const int rc = ::bind(s.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  const int err = errno;
  ::umask(old);
  if (rc != 0) {
    return errno_error(err, "bind " + path);
  }
  if (::chmod(path.c_str(), 0600) != 0) {
    return errno_error("chmod " + path);
  }
  if (::listen(s.get(), backlog) != 0) {
    return errno_error("listen " + path);
  }
  return s;
}

Result<UniqueFd> connect_unix(const std::string& path, int type) {
  CFN_ASSIGN_OR_RETURN(auto addr, unix_address(path));
  UniqueFd s(::socket(AF_UNIX, type | SOCK_CLOEXEC, 0));
  if (!s) {
    return errno_error("socket");
  }
  if (::connect(s.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    return errno_error("connect " + path);
  }
  return s;
}

}  // namespace base
