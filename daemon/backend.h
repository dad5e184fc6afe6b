// SPDX-License-Identifier: Apache-2.0
// Where blob bytes come from: a local directory of blob files (localfs), or an OCI
// registry (through registry::Client). Offsets are in the blob FILE (compressed space).
// Namespace cfnd, not "daemon": daemon(3) in <unistd.h> owns that global name.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "base/bytes.h"
#include "base/result.h"

namespace cfnd {

struct BackendRead {
  std::uint64_t offset = 0;
  base::MutableBytes out;  // exactly out.size() bytes at offset
  base::Status result;
  // A second read of bytes that failed their digest: go past every cache between us and
  // the blob's home (the registry: Cache-Control: no-cache) and, where the backend has
  // another source, not to `avoid` (the source of the bad bytes, as `source` said).
  bool refetch = false;
  std::string avoid{};
  // Set by the backend: where the bytes came from (the registry: the mirror's or the
  // origin's base URL; localfs: empty, it has one source).
  std::string source{};
};

// When a read must be done by (a reader's read timeout); kNoDeadline: none.
using Deadline = std::chrono::steady_clock::time_point;
inline constexpr Deadline kNoDeadline = Deadline::max();

class Backend {
 public:
  virtual ~Backend() = default;
  // Read several ranges of one blob file, concurrently where the backend can.
  // Each read's result is set; a short blob is EIO, a missing blob ENOENT, a read
  // not done by the deadline ETIMEDOUT (the registry; localfs never waits on
  // anything but its disk and ignores it).
  virtual void read(const std::string& blob_id, std::span<BackendRead> reads,
                    Deadline deadline) = 0;
  void read(const std::string& blob_id, std::span<BackendRead> reads) {
    read(blob_id, reads, kNoDeadline);
  }
  // Human-readable, for logs and metrics ("localfs:/dir", "registry:host/repo").
  [[nodiscard]] virtual std::string describe() const = 0;
};

// EINVAL unless id can name a file in a directory (not empty, ".", "..", no '/' or
// NUL): a blob id comes from an image, and names the cache's and localfs's files.
[[nodiscard]] base::Status check_blob_id(const std::string& id);

// Blob files named by blob id in dir.
[[nodiscard]] base::Result<std::unique_ptr<Backend>> make_localfs_backend(const std::string& dir);

}  // namespace cfnd
