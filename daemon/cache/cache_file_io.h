// SPDX-License-Identifier: Apache-2.0
// The two calls that change a cache file: a write of a chunk's bytes, and the hole
// punch that takes back a chunk whose write failed. A seam, so tests inject ENOSPC
// and a failing punch without filling a disk (CacheOptions::file_io).
#pragma once

#include <cstdint>
#include <memory>

#include "base/bytes.h"
#include "base/result.h"

namespace cfnd::cache {

class CacheFileIo {
 public:
  virtual ~CacheFileIo() = default;
  // Writes all of data at off (short writes continued). Error: the failing write's
  // errno (ENOSPC ...); some of data may be written then.
  [[nodiscard]] virtual base::Status pwrite(int fd, base::Bytes data, std::uint64_t off) = 0;
  // Deallocates [off, off+len), keeping the file's size: it reads as zeros and
  // SEEK_DATA skips it. Error: fallocate's errno.
  [[nodiscard]] virtual base::Status punch_hole(int fd, std::uint64_t off, std::uint64_t len) = 0;
};

// pwrite(2) and fallocate(2). One object, shared.
[[nodiscard]] std::shared_ptr<CacheFileIo> system_cache_file_io();

}  // namespace cfnd::cache
