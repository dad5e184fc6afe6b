// SPDX-License-Identifier: Apache-2.0
// Whole-file and positional I/O that handles short transfers and EINTR.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"

namespace base {

// Read a whole regular file. Errors name the path.
[[nodiscard]] Result<std::vector<std::byte>> read_file(const std::string& path);
// Read exactly buf.size() bytes at off; EIO on a short file.
[[nodiscard]] Status pread_full(int fd, MutableBytes buf, std::uint64_t off);
[[nodiscard]] Status pwrite_full(int fd, Bytes buf, std::uint64_t off);
[[nodiscard]] Status write_full(int fd, Bytes buf);
// Write data to path through a temporary in the same directory, fsync and rename,
// so a reader never sees a half-written file.
[[nodiscard]] Status write_file_atomic(const std::string& path, Bytes data, mode_t mode = 0644);

}  // namespace base
