// SPDX-License-Identifier: Apache-2.0
// The blob cache's space room: what its files take on disk, and which go when the
// cache is over its limit. The policy parts are pure (pick_victims, watermarks) and the
// disk parts small (allocated_bytes, scan_cache_dir), so both are tested without a
// daemon; BlobCache (daemon/blob_cache.cc) joins them to its open blobs.
//
// Accounting counts allocated blocks (st_blocks * 512: what du says), not apparent
// sizes: a blob file is sparse and mostly holes. Per blob the cache keeps
//   <cache_dir>/<id>.blob   the sparse uncompressed blob
//   <cache_dir>/<id>.meta   its chunk-info table
// and beside them, per image pulled by reference,
//   <cache_dir>/bootstraps/<manifest hex>.boot
// Each of those is one entry; an entry goes as a whole.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "base/result.h"

namespace cfnd::cache {

struct SpaceOptions {
  std::uint64_t limit = 0;       // bytes; 0: limit_percent, or no limit
  unsigned limit_percent = 0;    // of the cache file system's size (1..100); 0: limit
  unsigned high_watermark = 90;  // percent of the limit: crossing it starts eviction
  unsigned low_watermark = 70;   // percent of the limit: eviction stops here
  std::chrono::seconds gc_interval{60};
  // An entry missing one of its files (a .blob without .meta or the other way round,
  // left by a crash or a refused meta) that nothing has opened is removed this long
  // after its last change, limit or no limit.
  std::chrono::seconds orphan_grace{600};
  // Run the background thread (the daemon does; unit tests call gc() themselves).
  bool background = true;
};

enum class EntryKind : std::uint8_t { kBlob, kBootstrap };

struct SpaceEntry {
  std::string id;  // a blob id; a bootstrap: "bootstraps/<file name>"
  EntryKind kind = EntryKind::kBlob;
  std::vector<std::string> files;  // paths inside the cache dir
  std::uint64_t bytes = 0;         // allocated, every file
  std::int64_t last_use_ns = 0;    // wall clock; from the files' mtime after a restart
  std::int64_t changed_ns = 0;     // the newest mtime of its files (the orphan grace)
  bool in_use = false;
  bool incomplete = false;  // a blob with one of .blob/.meta missing
};

// The limit and the two watermarks in bytes. limit 0: no limit (high and low 0 too).
struct Watermarks {
  std::uint64_t limit = 0;
  std::uint64_t high = 0;
  std::uint64_t low = 0;
};

// Pure. o.limit, else o.limit_percent of fs_bytes, else none; high/low are their
// percent of it.
[[nodiscard]] Watermarks watermarks(const SpaceOptions& o, std::uint64_t fs_bytes);

// Pure. Indexes into entries of those to evict so that total drops to target or below:
// entries not in use, least recently used first (ties by id), each counted at its
// bytes. When the unused entries are not enough, all of them (the caller reports the
// rest as over).
[[nodiscard]] std::vector<std::size_t> pick_victims(const std::vector<SpaceEntry>& entries,
                                                    std::uint64_t total, std::uint64_t target);

// st_blocks * 512 of a regular file (not followed if a symlink); 0 when missing or
// not a regular file.
[[nodiscard]] std::uint64_t allocated_bytes(const std::string& path);

// What the cache directory holds: the blob entries of its top level (regular files
// <id>.blob and <id>.meta; temporaries, symlinks and everything else ignored) and the
// bootstraps in <dir>/bootstraps. Sizes, last use and changed from lstat. A missing
// dir is empty.
[[nodiscard]] std::map<std::string, SpaceEntry> scan_cache_dir(const std::string& dir);
// Only the bootstraps (the blob entries are tracked as they are opened).
[[nodiscard]] std::map<std::string, SpaceEntry> scan_bootstraps(const std::string& dir);

// "1073741824", "512M", "10G", "1T" (binary units, case-insensitive, optional "B"/"iB"),
// or "25%". EINVAL naming the text otherwise. Pure.
struct LimitSpec {
  std::uint64_t bytes = 0;
  unsigned percent = 0;
};
[[nodiscard]] base::Result<LimitSpec> parse_limit(std::string_view text);

// Wall clock in ns since the epoch (CLOCK_REALTIME).
[[nodiscard]] std::int64_t wall_now_ns();

}  // namespace cfnd::cache
