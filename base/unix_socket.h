// SPDX-License-Identifier: Apache-2.0
// Path-named AF_UNIX sockets private to their owner: the daemon's control socket and the
// fd holder's socket are made and reached the same way.
#pragma once

#include <sys/un.h>

#include <string>

#include "base/result.h"
#include "base/unique_fd.h"

namespace base {

// The address of a socket file. ENAMETOOLONG when path is empty or does not fit sun_path.
[[nodiscard]] Result<sockaddr_un> unix_address(const std::string& path);

// socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK) bound at path with mode 0600 (a
// 0177 umask around bind(2) closes the window before the chmod), then listen(backlog).
// path must not exist: the caller decides whether a socket file there is stale.
[[nodiscard]] Result<UniqueFd> listen_private(const std::string& path, int type, int backlog);

// socket(AF_UNIX, type | SOCK_CLOEXEC) connected to path (blocking).
[[nodiscard]] Result<UniqueFd> connect_unix(const std::string& path, int type);

}  // namespace base
