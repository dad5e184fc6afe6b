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
//
// Under cachefiles the kernel keeps its own copy of every object it read through us in
// ITS cache directory, <cache_dir>/fscache/cache/I<volume key>/@<fan>/D<cookie key>
// (reference/cachefiles-ondemand.md 1.8): a blob's cookie is its id, an image's
// bootstrap's its fsid. Those files are the kernel's: they are counted (scan_fscache)
// and go only through the protocol's `inuse` / `cull` (CachefilesFrontend::cull), never
// by our unlink. A kernel object whose cookie is a blob id belongs to that blob's entry;
// any other (a bootstrap copy) is an entry of its own, "fscache/<volume key>/<cookie>".
// Objects the kernel holds open since it made them are O_TMPFILEs with no name (linked
// when the cookie is withdrawn, at umount): neither du nor this scan sees them; they are
// counted from what the daemon wrote into them (add_unnamed_objects).
#pragma once

#include <cerrno>
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

enum class EntryKind : std::uint8_t { kBlob, kBootstrap, kFscache };

// One file of cachefiles' cache: <fscache>/cache/<volume_dir>/<fan>/<name>.
struct FscacheObject {
  std::string volume_dir;  // "I" + volume key, e.g. "Ierofs,mydomain"
  std::string fan;         // "@3f"
  std::string name;        // "D" + cookie key
  std::uint64_t bytes = 0;
  std::int64_t mtime_ns = 0;
  bool operator==(const FscacheObject&) const = default;
};

struct SpaceEntry {
  std::string id;  // a blob id; a bootstrap: "bootstraps/<file name>"
  EntryKind kind = EntryKind::kBlob;
  std::vector<std::string> files;  // paths inside the cache dir
  std::uint64_t bytes = 0;         // allocated, every file
  std::int64_t last_use_ns = 0;    // wall clock; from the files' mtime after a restart
  std::int64_t changed_ns = 0;     // the newest mtime of its files (the orphan grace)
  bool in_use = false;
  bool incomplete = false;  // a blob with one of .blob/.meta missing
  // The kernel's (cachefiles) objects of this entry, and their bytes (part of bytes).
  std::vector<FscacheObject> kernel;
  std::uint64_t kernel_bytes = 0;
  // Of kernel_bytes: objects the kernel made in this mount and holds unnamed
  // (add_unnamed_objects); not in `kernel` (no name to cull; open, so in use anyway).
  std::uint64_t unnamed_bytes = 0;
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

// Pure. Indexes of the entries not in use, least recently used first (ties by id).
[[nodiscard]] std::vector<std::size_t> lru_order(const std::vector<SpaceEntry>& entries);

// What evict_lru did: indexes into entries, in the order tried.
struct LruResult {
  std::vector<std::size_t> evicted;
  std::vector<std::size_t> busy;    // try_evict said EBUSY: skipped, for a later pass
  std::vector<std::size_t> failed;  // any other error (also for a later pass)
  std::uint64_t total = 0;          // total after the evictions
};
// Walks the entries not in use, least recently used first (pick_victims' order), and
// calls try_evict on each until total is at or under target. An entry that fails (the
// kernel answers `inuse` / `cull` with EBUSY: cachefiles still has its object open)
// is skipped, and the walk goes on to the next one, so one busy blob does not stop
// the cache from reaching its target. Pure but for try_evict.
template <typename TryEvict>
[[nodiscard]] LruResult evict_lru(const std::vector<SpaceEntry>& entries, std::uint64_t total,
                                  std::uint64_t target, TryEvict try_evict);

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

// Pure. The cookie key of a cachefiles object file name: "D<key>" (the kernel's
// printable form: every key we hand out, a blob id or an fsid, is printable). Empty
// for any other name (a binary key's "S"/"T"/"E" forms, a temporary, ...).
[[nodiscard]] std::string fscache_cookie(std::string_view file_name);
// Pure. The volume key of a volume directory name ("I<key>"); empty otherwise.
[[nodiscard]] std::string fscache_volume(std::string_view dir_name);
// Pure. A fan directory name: "@" and two lowercase hex digits.
[[nodiscard]] bool is_fscache_fan(std::string_view dir_name);
// Pure. 64 lowercase hex digits (a RAFS blob id, as a cookie key).
[[nodiscard]] bool is_blob_id(std::string_view s);
// Pure. The id of the entry a kernel object belongs to: its cookie when that is a blob
// id, else "fscache/<volume key>/<cookie>". Empty when the names are not cachefiles'.
[[nodiscard]] std::string fscache_entry_id(const FscacheObject& o);

// The kernel's objects in cachefiles' cache dir (fscache_dir is what we gave `dir`:
// <cache_dir>/fscache; its cache/ subdirectory is walked, volume / fan / object, no
// symlink followed, the graveyard and anything not named the kernel's way ignored),
// as entries by id (fscache_entry_id): kind kBlob (only `kernel` set) or kFscache.
[[nodiscard]] std::map<std::string, SpaceEntry> scan_fscache(const std::string& fscache_dir);

// Byte ranges [off, off + len), merged: what the daemon wrote into one of the kernel's
// objects through its anon fd. cachefiles writes those pages into its cache file with
// direct I/O, so for an object it made in this mount (an unnamed tmpfile until the cookie
// is withdrawn: no scan sees it) the union is the file's allocated bytes. Pure.
class RangeSet {
 public:
  void add(std::uint64_t off, std::uint64_t len);
  [[nodiscard]] std::uint64_t bytes() const { return bytes_; }
  [[nodiscard]] std::size_t ranges() const { return r_.size(); }

 private:
  std::map<std::uint64_t, std::uint64_t> r_;  // start -> end, disjoint, not adjacent
  std::uint64_t bytes_ = 0;
};

// An object the kernel has open through us (OPEN answered, no CLOSE yet).
struct OpenKernelObject {
  std::string volume_key;     // "erofs,<domain_id or fsid>"
  std::string cookie;         // a blob id, or the fsid (the bootstrap)
  std::uint64_t written = 0;  // RangeSet::bytes() of what we wrote into it
};

// Pure. Counts the open objects that `scanned` (scan_fscache) has no file of, the kernel's
// unnamed tmpfiles, at the bytes we wrote into them: added to the blob entry of their
// cookie, or to an entry "fscache/<volume key>/<cookie>" (made when missing), as
// kernel_bytes and unnamed_bytes. An object the scan found by name (opened from disk)
// is counted by its st_blocks there, not again. Objects whose names are not the kernel's
// forms are ignored. Returns the bytes added.
std::uint64_t add_unnamed_objects(std::map<std::string, SpaceEntry>& scanned,
                                  const std::vector<OpenKernelObject>& open);

// What prune_fscache_dirs did.
struct PruneResult {
  std::size_t removed = 0;  // directories removed (fans and volumes)
  std::size_t busy = 0;     // EBUSY: the kernel holds them (a volume in use)
};
// Removes the empty fan directories (@xx) of cachefiles' volumes under
// <fscache_dir>/cache, then each volume directory (I<key>) left empty, with rmdir: no
// symlink followed, nothing but empty directories named the kernel's way, never the
// cache root or the graveyard. The kernel keeps the directories of a volume in use
// (S_KERNEL_FILE) while the volume is acquired, and rmdir of one fails with EBUSY:
// those stay, counted in busy. A volume acquired again later makes its directories anew.
PruneResult prune_fscache_dirs(const std::string& fscache_dir);

// "1073741824", "512M", "10G", "1T" (binary units, case-insensitive, optional "B"/"iB"),
// or "25%". EINVAL naming the text otherwise. Pure.
struct LimitSpec {
  std::uint64_t bytes = 0;
  unsigned percent = 0;
};
[[nodiscard]] base::Result<LimitSpec> parse_limit(std::string_view text);

// Wall clock in ns since the epoch (CLOCK_REALTIME).
[[nodiscard]] std::int64_t wall_now_ns();

template <typename TryEvict>
LruResult evict_lru(const std::vector<SpaceEntry>& entries, std::uint64_t total,
                    std::uint64_t target, TryEvict try_evict) {
  LruResult r;
  r.total = total;
  const std::vector<std::size_t> order = lru_order(entries);
  for (std::size_t i : order) {
    if (r.total <= target) {
      break;
    }
    const int err = try_evict(entries[i]);  // 0 or an errno
    if (err == 0) {
      r.evicted.push_back(i);
      r.total -= std::min(r.total, entries[i].bytes);
    } else if (err == EBUSY) {
      r.busy.push_back(i);
    } else {
      r.failed.push_back(i);
    }
  }
  return r;
}

}  // namespace cfnd::cache
