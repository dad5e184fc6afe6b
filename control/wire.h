// SPDX-License-Identifier: Apache-2.0
// The control socket's framing, shared by the client (control/client.h) and the
// daemon's server: one line each way, bounded in size, under a deadline.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

#include "base/result.h"

namespace control {

using Clock = std::chrono::steady_clock;

// Read up to a '\n' (not returned) of at most `max` bytes from a stream socket; a last
// line without '\n' before the peer closes is accepted. Errors: EMSGSIZE when longer,
// ECONNRESET when the peer closed before a byte, ETIMEDOUT after the deadline.
[[nodiscard]] base::Result<std::string> read_line(int fd, std::size_t max,
                                                  Clock::time_point deadline);

// Send all of data (no SIGPIPE). Errors: ETIMEDOUT after the deadline, send's errno.
[[nodiscard]] base::Status send_all(int fd, std::string_view data, Clock::time_point deadline);

// Connect to the socket at path, send one request line, read one answer line.
// Errors: ECONNREFUSED / ENOENT when nobody listens, ETIMEDOUT after `timeout`.
[[nodiscard]] base::Result<std::string> call(const std::string& path, const std::string& request,
                                             std::chrono::milliseconds timeout);

}  // namespace control
