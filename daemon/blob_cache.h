// SPDX-License-Identifier: Apache-2.0
// The blob cache: the one core every front end shares. Each blob's UNCOMPRESSED
// address space is a sparse file <cache_dir>/<blob-id>.blob of the blob's
// uncompressed size; a hole means "not fetched" (placeholder zeros are never
// written). fill(range) maps the range through the blob meta to chunks, widens it to
// a batch, merges adjacent compressed chunks into one backend read, verifies every
// chunk's digest against the bootstrap (the trust root), decompresses and writes at
// the uncompressed offset. One fetch per chunk at a time: concurrent fills of the
// same chunk wait for it. Readiness is rebuilt from SEEK_DATA/SEEK_HOLE when a cache
// file is reopened, so nothing cached is fetched twice.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "base/digest.h"
#include "base/latency_histogram.h"
#include "base/result.h"
#include "base/unique_fd.h"
#include "daemon/backend.h"
#include "daemon/cache/cache_file_io.h"
#include "daemon/cache/clock.h"
#include "daemon/cache/space.h"
#include "erofs/reader.h"

namespace cfnd {

struct CacheOptions {
  std::string cache_dir;  // owned by us; created if missing
  // Widen on-demand fills to this (>= 128 KiB). The same default as the daemon's
  // config (Config::batch_size, README): one default, not two.
  std::uint64_t batch_size = 128U << 10;
  // Read amplification (nydus's amplify_io): an on-demand fill fetches the absent
  // chunks from the one missed on, up to this many uncompressed bytes, in one merged
  // range read where they continue each other. Below batch_size (0 too): batch_size.
  std::uint64_t amplify_io = 0;
  std::uint64_t prefetch_bandwidth = 0;  // bytes/s for background prefetch; 0 = off
  // A prefetch list's largest range read (compressed bytes; below batch_size, 0 too:
  // batch_size). See prefetch_chunks.
  std::uint64_t prefetch_merge_size = 0;
  // How long a fill may wait for its bytes, retries included; 0 = no bound but the
  // backend's own timeouts. See CachedBlob::fill.
  std::chrono::milliseconds read_timeout{0};
  // What "now" is for read deadlines, the failure hold and the prefetch bandwidth,
  // and how the cache waits for a time; null: steady_clock. Tests pass one they move.
  std::shared_ptr<cache::Clock> clock;
  // The writes and hole punches of the cache files; null: the system calls. Tests
  // pass one that fails (ENOSPC, a failed punch).
  std::shared_ptr<cache::CacheFileIo> file_io;
  // The size limit, its watermarks and the background eviction (cache/space.h).
  cache::SpaceOptions space;
  // The wall clock of "last use" (ns since the epoch); null: CLOCK_REALTIME. Tests
  // pass a counter, so LRU order does not hang on the clock's resolution.
  std::function<std::int64_t()> wall_clock;
};

// Counters exported by the control API (JSON and Prometheus text).
struct CacheMetrics {
  std::atomic<std::uint64_t> backend_bytes{0};     // compressed bytes fetched
  std::atomic<std::uint64_t> backend_requests{0};  // backend range reads
  std::atomic<std::uint64_t> fill_requests{0};     // fill() calls
  std::atomic<std::uint64_t> hits{0};              // fills already fully present
  std::atomic<std::uint64_t> misses{0};            // fills that fetched something
  // chunks whose digest did not match (or that would not decompress), refetches included
  std::atomic<std::uint64_t> verify_failures{0};
  // Of those, the chunks fetched once more (past the caches, another mirror if any)
  // before the reader got EIO, and the refetches that came back right.
  std::atomic<std::uint64_t> refetches{0};
  std::atomic<std::uint64_t> refetch_successes{0};
  std::atomic<std::uint64_t> prefetch_bytes{0};  // uncompressed bytes filled by prefetch
  // Of prefetch_bytes, those filled for prefetch lists (prefetch_chunks).
  std::atomic<std::uint64_t> prefetch_list_bytes{0};
  std::atomic<std::uint64_t> readahead_bytes{0};  // file readahead (prefetch_chunks)
  // Fill latency (fill() called to returned, hits included; not a fill held after a
  // failure), nanoseconds.
  base::LatencyHistogram fill_latency;
  // fill_latency as counts of buckets <= 2^k us for k = 0..kBuckets-1 (Prometheus
  // `le` buckets): each record is counted in the first bucket that holds all of
  // fill_latency's bucket of it, so never below its value, at most about 12% above.
  static constexpr int kBuckets = 24;
  [[nodiscard]] std::array<std::uint64_t, kBuckets> fill_latency_us_buckets() const;

  // Space (cache/space.h). Gauges as of the last accounting pass.
  std::atomic<std::uint64_t> cache_bytes{0};       // allocated bytes of every entry
  std::atomic<std::uint64_t> cache_limit{0};       // bytes; 0 = no limit
  std::atomic<std::uint64_t> blobs_in_use{0};      // entries in use (blobs and bootstraps)
  std::atomic<std::uint64_t> over_limit_bytes{0};  // above the low watermark, all unused gone
  std::atomic<std::uint64_t> evictions{0};         // entries removed (GC, rm, orphans)
  std::atomic<std::uint64_t> evicted_bytes{0};
  std::atomic<std::uint64_t> eviction_errors{0};  // removals that failed (retried later)
  std::atomic<std::uint64_t> no_space_events{0};  // cache writes that failed ENOSPC/EDQUOT
  // cachefiles' own cache files (<cache_dir>/fscache/cache/...): their allocated bytes
  // (part of cache_bytes), the objects culled, and the kernel's EBUSY answers to
  // `inuse` / `cull` (the entry is tried again at a later pass).
  std::atomic<std::uint64_t> fscache_bytes{0};
  std::atomic<std::uint64_t> fscache_culled{0};
  std::atomic<std::uint64_t> fscache_busy{0};
  // Of fscache_bytes: the objects the kernel made in this mount and holds as unnamed
  // tmpfiles, counted at what we wrote into them (cache::add_unnamed_objects).
  std::atomic<std::uint64_t> fscache_unnamed_bytes{0};
  // Empty volume and fan directories of cachefiles' removed after culls.
  std::atomic<std::uint64_t> fscache_dirs_removed{0};
};

// What the cache's owner says is in use besides the blobs held open (cache::SpaceEntry
// ids: blob ids and "bootstraps/<file>"). all_bootstraps: a bind is resolving an image
// (its bootstrap is not known yet): no bootstrap may go.
struct CachePins {
  std::set<std::string> ids;
  bool all_bootstraps = false;
};

// One pass of eviction (BlobCache::gc), or what it would do (dry_run).
struct GcReport {
  bool dry_run = false;
  cache::Watermarks watermarks;
  std::uint64_t bytes_before = 0;
  std::uint64_t bytes_after = 0;     // dry run: what it would be
  std::vector<std::string> evicted;  // ids, in eviction (LRU) order
  std::uint64_t evicted_bytes = 0;
  std::uint64_t errors = 0;  // evictions that failed (busy, unlink ...)
  std::uint64_t busy = 0;    // of those, refused as in use (the kernel's EBUSY: cachefiles)
  std::uint64_t over = 0;    // still above the target, only used entries left
};

class BlobCache;

// Told of each chunk of a blob on its first demand (the first ready() or fill() that
// asks about it; CachedBlob::demanded_chunks), on the demanding thread, after the
// call's own bookkeeping and before it fetches, with no lock of the blob held. Must be
// quick and must not fill (queueing a prefetch is fine).
class DemandListener {
 public:
  virtual ~DemandListener() = default;
  virtual void first_demand(std::uint32_t ci) = 0;
};

// One blob's cache file. Shared by every image and front end that uses the blob id
// (a shared_ptr: the BlobCache and each bound image hold it).
class CachedBlob {
 public:
  virtual ~CachedBlob() = default;

  [[nodiscard]] virtual const erofs::BlobInfo& info() const = 0;
  [[nodiscard]] virtual const std::string& path() const = 0;  // the sparse file
  // O_RDWR, opened by BlobCache::open. Opened BEFORE any fanotify mark a front end
  // adds afterwards, so writes through it (fill with write_fd -1, prefetch) raise no
  // pre-content event. Keep that order: open the blob, then mark it.
  [[nodiscard]] virtual int fd() const = 0;
  [[nodiscard]] virtual std::uint64_t size() const = 0;  // uncompressed size

  // Make uncompressed [off, off+len) present. Blocks until done; thread-safe.
  // write_fd: the fd to write through (fanotify: the event's fd, which raises no
  // event; -1: our own fd). A range reaching past the end is clipped at size()
  // (fanotify ranges are page-aligned and not clipped at EOF); len 0 is a no-op.
  // EIO when the backend fails for good or the range is not present within the
  // read timeout (options.read_timeout from the call: the fill's own fetch is cut
  // there; a fetch of someone else's that it waits for, a prefetch's, goes on for
  // later fills), EBADMSG when a chunk fails verification or has no bootstrap
  // digest (nothing of that chunk is written; a chunk that fails its digest is
  // fetched once more first, BackendRead::refetch), ERANGE when off is at or past
  // size(), or EIO when writing the cache file fails (ENOSPC ...: the message says;
  // the chunk's range is punched back to a hole, and its head block, written last,
  // never holds part of it, so no partial chunk is taken for data, now or after a
  // restart; the next fill writes it again). A chunk that timed out fails further
  // fills at once for a second (the kernel's retries of the read then do not each
  // wait the timeout out again).
  [[nodiscard]] virtual base::Status fill(std::uint64_t off, std::uint64_t len,
                                          int write_fd = -1) = 0;
  // True when [off, off+len) is fully present (no fetch needed). Front ends ask it
  // on their fast path before fill(), so the range counts as read (demanded_chunks).
  [[nodiscard]] virtual bool ready(std::uint64_t off, std::uint64_t len) const = 0;
  [[nodiscard]] virtual std::uint64_t ready_chunks() const = 0;
  [[nodiscard]] virtual std::uint64_t chunk_count() const = 0;
  // The chunks ready() or fill() were asked about since the blob was opened (hits
  // and misses, not the widening, not prefetch), in the order of their first demand:
  // what the workloads read, and when. seq is a stamp from a counter shared by every
  // blob of the cache (so the demands of an image's blobs interleave right); a call
  // about several new chunks stamps them in ascending index order. Under cachefiles
  // the kernel asks only for what its cache file lacks, so a read inside an earlier
  // fill's widening is not seen: record with fanotify or FUSE.
  struct Demand {
    std::uint32_t ci = 0;
    std::uint64_t seq = 0;  // > 0
    bool operator==(const Demand&) const = default;
  };
  [[nodiscard]] virtual std::vector<Demand> demanded_chunks() const = 0;
  // Tell l of every first demand from now on, for as long as l lives (the blob keeps a
  // weak reference: an image's listener goes with the image).
  virtual void add_demand_listener(std::weak_ptr<DemandListener> l) = 0;
  // True when every chunk is present: no read of the blob needs a fill any more (a
  // chunk never goes back to absent). A blob with a chunk no bootstrap has a digest
  // for never completes.
  [[nodiscard]] virtual bool complete() const = 0;
  // Keep fn to run once, when the last absent chunk becomes present: on the thread
  // whose fill or prefetch wrote it, after its bytes are written and published (ready()
  // is true for the whole blob), with no lock of the blob held. fn must be quick and
  // must not fill. Returns false, keeping nothing, when the blob is complete already
  // (the caller acts at once itself: fn is never called from inside this call, so the
  // caller may hold its own locks here).
  [[nodiscard]] virtual bool on_complete(std::function<void()> fn) = 0;
  // Keep fn to run once when this blob object goes (evicted by the cache's space
  // keeper, or the last holder dropped it), while fd() is still open: a front end
  // takes back what it put on the file (a fanotify mark pins the inode, so an evicted
  // file's blocks would stay allocated). fn must be quick; it runs on the thread that
  // drops the last reference.
  virtual void on_close(std::function<void()> fn) = 0;
};

class BlobCache {
 public:
  [[nodiscard]] static base::Result<std::unique_ptr<BlobCache>> create(CacheOptions options);
  virtual ~BlobCache() = default;

  // Open (or return the already open) cache file of a blob. chunks: the bootstrap's
  // chunk table records of this blob (their digests are the trust root); the blob
  // meta (chunk-info table) is read through the backend on first open and kept in
  // <cache_dir>/<blob-id>.meta. A second call with the same id shares the object.
  // Thread-safe; a first open's download (cut at the read timeout: EIO) holds up only
  // other opens of the same blob id, which wait for it (and try again themselves if
  // it failed), never opens of other blobs.
  [[nodiscard]] virtual base::Result<std::shared_ptr<CachedBlob>> open(
      const erofs::BlobInfo& info, const std::vector<erofs::ChunkRecord>& chunks,
      std::shared_ptr<Backend> backend) = 0;
  // Queue a whole-blob background prefetch (bandwidth-capped, always behind
  // on-demand fills). No-op when options.prefetch_bandwidth is 0. Errors are logged
  // (once per blob) and the failed chunks left absent for on-demand fills.
  virtual void prefetch(const std::shared_ptr<CachedBlob>& blob) = 0;
  // Fetch these chunks of the blob right away (an image's prefetch list): ahead of
  // background prefetch, not bandwidth-capped, in the given order (a list recorded by
  // `accessed` is in the order the workload first read its files), one range read
  // at a time per worker (listed chunks that follow each other in the blob file, at
  // most 4 KiB apart, merge: a list's first read up to a batch, each next one up to
  // twice the last, at most CacheOptions::prefetch_merge_size; a file's readahead:
  // chunks that continue each other, up to a batch), kPrefetchListWorkers reads in
  // flight at once. On-demand
  // fills come first: each worker claims only the chunks of its next read, so a fill
  // fetches anything not yet claimed itself, no worker starts a read while a fill is
  // fetching, and fills do not widen while the list has reads not yet started.
  // Present, in-flight, repeated and unknown chunk indexes are skipped. Each read is
  // cut at the read timeout (CacheOptions::read_timeout) like a fill's own fetch, and
  // while a read of the blob timed out less than a second ago (a stalling backend) no
  // new read starts: the rest is left to on-demand fills. Errors are logged (once per
  // blob) and the failed chunks left absent for on-demand fills.
  static constexpr int kPrefetchListWorkers = 4;
  // readahead: the chunks are a file's readahead, not a prefetch list (they count in
  // CacheMetrics::readahead_bytes instead of prefetch_list_bytes).
  virtual void prefetch_chunks(const std::shared_ptr<CachedBlob>& blob,
                               std::vector<std::uint32_t> cis, bool readahead = false) = 0;
  [[nodiscard]] virtual CacheMetrics& metrics() = 0;

  // ---- space (cache/space.h) ----
  // Every entry on disk with its allocated bytes, last use and whether it is in use
  // (held open by someone besides the cache, being opened, or pinned), by id. Refreshes
  // the accounting. Thread-safe.
  [[nodiscard]] virtual std::vector<cache::SpaceEntry> entries() = 0;
  // Evict now: unused entries, least recently used first, down to the low watermark
  // (no limit: every unused entry). dry_run: only say what would go.
  virtual GcReport gc(bool dry_run) = 0;
  // Remove one entry (a blob id or "bootstraps/<file>"). EBUSY while it is in use,
  // ENOENT when the cache has no such entry, the unlink's errno otherwise.
  [[nodiscard]] virtual base::Status remove(const std::string& id) = 0;
  // Who else uses entries (set once, before the background thread needs it; called
  // with no lock of the cache held).
  virtual void set_pins(std::function<CachePins()> pins) = 0;
  // How the kernel's cachefiles objects go (CachefilesFrontend::cull: `inuse` then
  // `cull` in the object's directory; EBUSY while the kernel has it open). The cache
  // counts the objects under <cache_dir>/fscache (cache/space.h) whether or not one is
  // set, but without it they are in use: nothing here unlinks a file of the kernel's.
  // Called under the cache's space lock.
  using KernelCuller = std::function<base::Status(const cache::FscacheObject&)>;
  virtual void set_kernel_culler(KernelCuller culler) = 0;
  // The objects the kernel has open through us and what we wrote into each
  // (CachefilesFrontend::open_objects): those it made in this mount are unnamed tmpfiles
  // no scan sees, counted at those bytes (cache::add_unnamed_objects). Called under the
  // cache's space lock.
  using KernelObjects = std::function<std::vector<cache::OpenKernelObject>()>;
  virtual void set_kernel_objects(KernelObjects objects) = 0;
};

}  // namespace cfnd
