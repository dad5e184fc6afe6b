// SPDX-License-Identifier: Apache-2.0
// The blob cache (see blob_cache.h for the contract): the open blobs by id, and how a
// blob is opened. Its rooms, under cache/: a blob's chunk states and fills
// (cache/blob.*), the merge of a round's reads (cache/read_plan.*), the background
// prefetcher and list workers (cache/prefetcher.*, cache/token_bucket.h).
//
// Per blob, two files in cache_dir:
//   <id>.blob   sparse, uncompressed size; a hole = not fetched
//   <id>.meta   the blob's chunk-info region as read from the backend (raw bytes); empty
//               for a blob whose chunk table is the bootstrap's (eStargz): there it only
//               completes the pair, so the cache's scan does not take the blob for an orphan
#include "daemon/blob_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include "base/file.h"
#include "base/log.h"
#include "daemon/cache/blob.h"
#include "daemon/cache/prefetcher.h"
#include "daemon/cache/shared.h"
#include "erofs/blob_meta.h"
#include "erofs/format.h"

namespace cfnd {

std::array<std::uint64_t, CacheMetrics::kBuckets> CacheMetrics::fill_latency_us_buckets() const {
  std::array<std::uint64_t, kBuckets> out{};
  const auto s = fill_latency.snapshot();
  for (int b = 0; b < base::LatencyHistogram::kBuckets; ++b) {
    const std::uint64_t n = s.counts[static_cast<std::size_t>(b)];
    if (n == 0) {
      continue;
    }
    // The first k with 2^k us >= the bucket's highest value: a record is never
    // counted below its own value.
    const std::uint64_t high_us = (base::LatencyHistogram::bucket_high(b) + 999) / 1000;
    int k = high_us <= 1 ? 0 : static_cast<int>(std::bit_width(high_us - 1));
    k = std::min(k, kBuckets - 1);
    out[static_cast<std::size_t>(k)] += n;
  }
  return out;
}

namespace {

using cache::Blob;

constexpr std::uint64_t kMinBatch = 128 * 1024;
constexpr std::uint64_t kBlock = 4096;
constexpr std::uint64_t kMaxMetaBytes = 1ULL << 30;
// After ENOSPC, eviction frees at least this much (or 1% of the file system).
constexpr std::uint64_t kNoSpaceHeadroom = 16ULL << 20;

class BlobCacheImpl final : public BlobCache {
 public:
  explicit BlobCacheImpl(CacheOptions options)
      : options_(std::move(options)), shared_(make_shared_state(options_)) {
    prefetcher_ = std::make_unique<cache::Prefetcher>(shared_, options_.prefetch_bandwidth,
                                                      std::max(options_.batch_size, kMinBatch),
                                                      options_.prefetch_merge_size);
    {
      std::lock_guard lk(shared_->hooks_mu);
      shared_->wake_gc = [this] { wake_space(); };
      shared_->no_space = [this] { (void)pass(Pass::kNoSpace, false); };
    }
    {
      std::lock_guard lk(shared_->released_mu);
      shared_->released = [this](const std::string& id, const void* blob) { release(id, blob); };
    }
    if (options_.space.background) {
      space_thread_ = std::thread([this] { space_loop(); });
    }
  }
  // The space thread and the hooks go first (a blob may outlive the cache), then the
  // prefetcher's threads, then the blobs.
  ~BlobCacheImpl() override {
    {
      std::lock_guard lk(wake_mu_);
      space_stop_ = true;
    }
    wake_cv_.notify_all();
    if (space_thread_.joinable()) {
      space_thread_.join();
    }
    {
      std::lock_guard lk(shared_->hooks_mu);
      shared_->wake_gc = nullptr;
      shared_->no_space = nullptr;
    }
    {
      std::lock_guard lk(shared_->released_mu);
      shared_->released = nullptr;
    }
    prefetcher_.reset();
  }

  BlobCacheImpl(const BlobCacheImpl&) = delete;
  BlobCacheImpl& operator=(const BlobCacheImpl&) = delete;

  base::Result<std::shared_ptr<CachedBlob>> open(const erofs::BlobInfo& info,
                                                 const std::vector<erofs::ChunkRecord>& chunks,
                                                 std::shared_ptr<Backend> backend) override;

  void prefetch(const std::shared_ptr<CachedBlob>& blob) override {
    if (options_.prefetch_bandwidth == 0 || !blob) {
      return;
    }
    if (is_ours(*blob)) {
      // The caller's reference, weakly (an alias of it as the Blob it is): the prefetch
      // stops when the caller lets go.
      prefetcher_->prefetch(
          std::weak_ptr<Blob>(std::shared_ptr<Blob>(blob, static_cast<Blob*>(blob.get()))));
    }
  }

  void prefetch_chunks(const std::shared_ptr<CachedBlob>& blob, std::vector<std::uint32_t> cis,
                       bool readahead) override {
    if (!blob) {
      return;
    }
    if (auto b = ours(*blob)) {
      prefetcher_->prefetch_chunks(std::move(b), std::move(cis), readahead);
    }
  }

  CacheMetrics& metrics() override { return shared_->metrics; }

  std::vector<cache::SpaceEntry> entries() override {
    std::lock_guard lk(gc_mu_);
    const auto pins = current_pins();
    refresh(pins);
    std::vector<cache::SpaceEntry> out;
    out.reserve(disk_.size());
    for (const auto& [id, e] : disk_) {
      out.push_back(e);
    }
    return out;
  }

  GcReport gc(bool dry_run) override { return pass(Pass::kManual, dry_run); }

  base::Status remove(const std::string& id) override {
    std::lock_guard lk(gc_mu_);
    const auto pins = current_pins();
    refresh(pins);
    auto it = disk_.find(id);
    if (it == disk_.end()) {
      return base::errorf(ENOENT, "the cache has no blob or bootstrap '{}'", id);
    }
    if (it->second.in_use) {
      return base::errorf(EBUSY, "{} is in use", id);
    }
    const std::uint64_t bytes = it->second.bytes;
    const bool kernel = !it->second.kernel.empty();
    CFN_TRY(evict(it->second, pins));
    disk_.erase(it);
    if (kernel) {
      prune_fscache_dirs();
    }
    account_eviction(bytes);
    spdlog::info("cache: removed {} ({} bytes)", id, bytes);
    return {};
  }

  void set_pins(std::function<CachePins()> pins) override {
    std::lock_guard lk(pins_mu_);
    pins_ = std::move(pins);
  }

  void set_kernel_culler(KernelCuller culler) override {
    std::lock_guard lk(pins_mu_);
    culler_ = std::move(culler);
  }

  void set_kernel_objects(KernelObjects objects) override {
    std::lock_guard lk(pins_mu_);
    kernel_objects_ = std::move(objects);
  }

 private:
  enum class Pass : std::uint8_t { kTick, kManual, kNoSpace };

  CachePins current_pins() {
    std::function<CachePins()> f;
    {
      std::lock_guard lk(pins_mu_);
      f = pins_;
    }
    return f ? f() : CachePins{};
  }

  void wake_space() {
    {
      std::lock_guard lk(wake_mu_);
      wake_ = true;
    }
    wake_cv_.notify_all();
  }

  void space_loop() {
    for (;;) {
      (void)pass(Pass::kTick, false);
      std::unique_lock lk(wake_mu_);
      wake_cv_.wait_for(lk, options_.space.gc_interval, [this] { return wake_ || space_stop_; });
      if (space_stop_) {
        return;
      }
      wake_ = false;
    }
  }

  [[nodiscard]] std::uint64_t fs_bytes(std::uint64_t* avail) const {
    struct statvfs v {};
    if (::statvfs(options_.cache_dir.c_str(), &v) != 0) {
      *avail = UINT64_MAX;
      return 0;
    }
    *avail = static_cast<std::uint64_t>(v.f_bavail) * v.f_frsize;
    return static_cast<std::uint64_t>(v.f_blocks) * v.f_frsize;
  }

  // Under gc_mu_: bring disk_ up to date. The first call scans the cache directory
  // (the accounting rebuilt after a restart); later ones restat the open blobs (the
  // only entries that grow), take new ones, and rescan the bootstraps.
  void refresh(const CachePins& pins) {
    if (!scanned_) {
      disk_ = cache::scan_cache_dir(options_.cache_dir);
      scanned_ = true;
    } else {
      std::erase_if(disk_,
                    [](const auto& kv) { return kv.second.kind == cache::EntryKind::kBootstrap; });
      disk_.merge(cache::scan_bootstraps(options_.cache_dir));
    }
    // The kernel's objects come and go without us (a umount links its tmpfiles): they
    // are taken off every entry and scanned again at each refresh.
    for (auto& [id, e] : disk_) {
      e.bytes -= std::min(e.bytes, e.kernel_bytes);
      e.kernel.clear();
      e.kernel_bytes = 0;
      e.unnamed_bytes = 0;
    }
    std::erase_if(disk_, [](const auto& kv) {
      return kv.second.kind == cache::EntryKind::kFscache || kv.second.files.empty();
    });
    struct Open {
      std::int64_t last_use_ns;
      bool in_use;
    };
    std::map<std::string, Open> open;
    std::set<std::string> loading;
    {
      std::lock_guard lk(open_mu_);
      for (const auto& [id, b] : blobs_) {
        // The map's reference is the cache's own: any other holder (a bound image, a
        // fill, the prefetcher) holds a handle (handle_locked), which makes it in use.
        open.emplace(id, Open{b->last_use_ns(), b.use_count() > 1});
      }
      // Closed since the last refresh: their files' last size and use, not in use.
      for (const auto& [id, last_use] : closed_) {
        open.try_emplace(id, Open{last_use, false});
      }
      closed_.clear();
      loading = loading_;
    }
    for (const auto& [id, o] : open) {
      cache::SpaceEntry& e = disk_[id];
      e.id = id;
      e.kind = cache::EntryKind::kBlob;
      e.files = {options_.cache_dir + "/" + id + ".blob", options_.cache_dir + "/" + id + ".meta"};
      e.bytes = 0;
      for (const auto& f : e.files) {
        e.bytes += cache::allocated_bytes(f);
      }
      e.last_use_ns = o.last_use_ns;  // an open blob's own: its open, reads and fills
      e.incomplete = false;
    }
    std::uint64_t kernel_total = 0;
    auto scanned = cache::scan_fscache(fscache_dir());
    {
      KernelObjects objects;
      {
        std::lock_guard lk(pins_mu_);
        objects = kernel_objects_;
      }
      if (objects) {
        const std::uint64_t unnamed = cache::add_unnamed_objects(scanned, objects());
        shared_->metrics.fscache_unnamed_bytes.store(unnamed, std::memory_order_relaxed);
      }
    }
    for (auto& [id, k] : scanned) {
      kernel_total += k.kernel_bytes;
      auto it = disk_.find(id);
      if (it == disk_.end()) {
        disk_.emplace(id, std::move(k));
        continue;
      }
      cache::SpaceEntry& e = it->second;
      e.bytes += k.kernel_bytes;
      e.kernel_bytes = k.kernel_bytes;
      e.unnamed_bytes = k.unnamed_bytes;
      e.kernel = std::move(k.kernel);
      e.last_use_ns = std::max(e.last_use_ns, k.last_use_ns);
    }
    shared_->metrics.fscache_bytes.store(kernel_total, std::memory_order_relaxed);
    bool can_cull = false;
    {
      std::lock_guard lk(pins_mu_);
      can_cull = static_cast<bool>(culler_);
    }
    std::uint64_t total = 0;
    std::uint64_t in_use = 0;
    for (auto& [id, e] : disk_) {
      if (e.kind == cache::EntryKind::kBlob) {
        auto it = open.find(id);
        e.in_use = (it != open.end() && it->second.in_use) || loading.contains(id) ||
                   pins.ids.contains(id);
      } else if (e.kind == cache::EntryKind::kBootstrap) {
        e.in_use = pins.all_bootstraps || pins.ids.contains(id);
      } else {
        e.in_use = pins.ids.contains(id);
      }
      // No cachefiles session to cull with: the kernel's files stay. An unnamed object
      // is one the kernel has open.
      e.in_use = e.in_use || (!e.kernel.empty() && !can_cull) || e.unnamed_bytes > 0;
      total += e.bytes;
      in_use += e.in_use ? 1 : 0;
    }
    total_ = total;
    shared_->metrics.cache_bytes.store(total, std::memory_order_relaxed);
    shared_->metrics.blobs_in_use.store(in_use, std::memory_order_relaxed);
  }

  // Under gc_mu_: remove one entry's files. A blob is taken out of blobs_ first (only
  // when no one else holds it) and its id kept in removing_ until its files are gone,
  // so no open of the id makes a new file that this would unlink. EBUSY when in use.
  base::Status evict(const cache::SpaceEntry& e, const CachePins& pins) {
    if (pins.ids.contains(e.id) ||
        (e.kind == cache::EntryKind::kBootstrap && pins.all_bootstraps)) {
      return base::errorf(EBUSY, "{} is in use", e.id);
    }
    std::shared_ptr<Blob> held;
    if (e.kind == cache::EntryKind::kBlob && !e.files.empty()) {
      std::lock_guard lk(open_mu_);
      if (loading_.contains(e.id)) {
        return base::errorf(EBUSY, "blob {} is being opened", e.id);
      }
      if (auto it = blobs_.find(e.id); it != blobs_.end()) {
        if (it->second.use_count() > 1) {
          return base::errorf(EBUSY, "blob {} is in use", e.id);
        }
        held = std::move(it->second);
        blobs_.erase(it);
      }
      removing_.insert(e.id);
    }
    held.reset();  // the last reference: the cache file's fd closes
    // The kernel's objects first: it may still hold one open (EBUSY), and then the
    // entry stays whole for a later pass.
    base::Status st = cull_kernel(e);
    for (const auto& f : st ? e.files : std::vector<std::string>{}) {
      if (::unlink(f.c_str()) != 0 && errno != ENOENT && st) {
        st = base::errno_error("unlink " + f);
      }
    }
    if (e.kind == cache::EntryKind::kBlob && !e.files.empty()) {
      std::lock_guard lk(open_mu_);
      removing_.erase(e.id);
      open_cv_.notify_all();
    }
    return st;
  }

  [[nodiscard]] std::string fscache_dir() const { return options_.cache_dir + "/fscache"; }

  // Under gc_mu_, after culls: the volume and fan directories left empty go (the kernel
  // refuses, EBUSY, those of a volume it has acquired; it makes them again when it
  // acquires the volume later).
  void prune_fscache_dirs() {
    const auto p = cache::prune_fscache_dirs(fscache_dir());
    shared_->metrics.fscache_dirs_removed.fetch_add(p.removed, std::memory_order_relaxed);
    if (p.removed > 0) {
      spdlog::info("cache: removed {} empty cachefiles director{} ({} of live volumes kept)",
                   p.removed, p.removed == 1 ? "y" : "ies", p.busy);
    }
  }

  // Every kernel object of e through the culler (`inuse`, `cull`). EBUSY as soon as the
  // kernel says one is in use (those culled before it are gone: the kernel fetches
  // them again through us if asked).
  base::Status cull_kernel(const cache::SpaceEntry& e) {
    if (e.kernel.empty()) {
      return {};
    }
    KernelCuller culler;
    {
      std::lock_guard lk(pins_mu_);
      culler = culler_;
    }
    if (!culler) {
      return base::errorf(EBUSY, "{}: cachefiles holds files of it and is not bound here", e.id);
    }
    auto& m = shared_->metrics;
    for (const auto& o : e.kernel) {
      if (auto st = culler(o); !st) {
        if (st.error().code == EBUSY) {
          m.fscache_busy.fetch_add(1, std::memory_order_relaxed);
        }
        return st;
      }
      m.fscache_culled.fetch_add(1, std::memory_order_relaxed);
    }
    return {};
  }

  void account_eviction(std::uint64_t bytes) {
    auto& m = shared_->metrics;
    m.evictions.fetch_add(1, std::memory_order_relaxed);
    m.evicted_bytes.fetch_add(bytes, std::memory_order_relaxed);
    total_ -= std::min(total_, bytes);
    m.cache_bytes.store(total_, std::memory_order_relaxed);
  }

  // One accounting and eviction pass.
  //  kTick: over the high watermark, down to the low one; and orphans past their grace.
  //  kManual: down to the low watermark whatever the level (no limit: every unused entry).
  //  kNoSpace: a cache write found the file system full: down to the low watermark, and
  //    at least kNoSpaceHeadroom (or 1% of the file system) freed.
  GcReport pass(Pass mode, bool dry_run) {
    std::lock_guard lk(gc_mu_);
    const auto pins = current_pins();
    refresh(pins);
    std::uint64_t avail = 0;
    const std::uint64_t fs = fs_bytes(&avail);
    GcReport r;
    r.dry_run = dry_run;
    r.watermarks = cache::watermarks(options_.space, fs);
    r.bytes_before = total_;
    shared_->metrics.cache_limit.store(r.watermarks.limit, std::memory_order_relaxed);
    const bool limited = r.watermarks.limit != 0;
    std::uint64_t target = total_;
    if (mode == Pass::kManual) {
      target = limited ? r.watermarks.low : 0;
    } else if (mode == Pass::kTick) {
      if (limited && total_ > r.watermarks.high) {
        target = r.watermarks.low;
      }
    } else {
      // ENOSPC, or EDQUOT with room on the file system: free a headroom's worth,
      // and down to the low watermark.
      (void)avail;
      if (limited) {
        target = std::min(target, r.watermarks.low);
      }
      const std::uint64_t headroom = std::max<std::uint64_t>(kNoSpaceHeadroom, fs / 100);
      target = std::min(target, total_ - std::min(total_, headroom));
    }
    const std::uint64_t culled_before =
        shared_->metrics.fscache_culled.load(std::memory_order_relaxed);
    std::vector<cache::SpaceEntry> list;
    list.reserve(disk_.size());
    for (const auto& [id, e] : disk_) {
      list.push_back(e);
    }
    std::uint64_t left = total_;
    const auto record = [&](const cache::SpaceEntry& e) {
      r.evicted.push_back(e.id);
      r.evicted_bytes += e.bytes;
    };
    const auto try_evict = [&](const cache::SpaceEntry& e) -> int {
      auto st = evict(e, pins);
      if (st) {
        disk_.erase(e.id);
        account_eviction(e.bytes);
        record(e);
        return 0;
      }
      ++r.errors;
      r.busy += st.error().code == EBUSY ? 1 : 0;
      shared_->metrics.eviction_errors.fetch_add(1, std::memory_order_relaxed);
      static base::RateLimit rl;
      if (rl.allow()) {
        spdlog::warn("cache: evicting {}: {} (tried again later)", e.id, st.error().to_string());
      }
      return st.error().code;
    };
    std::set<std::size_t> chosen;
    if (target < total_) {
      if (dry_run) {
        for (std::size_t i : cache::pick_victims(list, total_, target)) {
          chosen.insert(i);
          record(list[i]);
          left -= std::min(left, list[i].bytes);
        }
      } else {
        // LRU first; an entry the kernel (or a racing open) holds is skipped and the
        // next one tried, so one busy blob does not keep the cache over its target.
        const auto lr = cache::evict_lru(list, total_, target, try_evict);
        chosen.insert(lr.evicted.begin(), lr.evicted.end());
        chosen.insert(lr.busy.begin(), lr.busy.end());
        chosen.insert(lr.failed.begin(), lr.failed.end());
      }
    }
    if (mode == Pass::kTick) {
      // Orphans: an entry missing a file, unused, unchanged for the grace period.
      const std::int64_t cutoff =
          shared_->wall() - std::chrono::nanoseconds(options_.space.orphan_grace).count();
      for (std::size_t i = 0; i < list.size(); ++i) {
        if (list[i].incomplete && !list[i].in_use && list[i].changed_ns < cutoff &&
            !chosen.contains(i)) {
          if (dry_run) {
            record(list[i]);
            left -= std::min(left, list[i].bytes);
          } else {
            (void)try_evict(list[i]);
          }
        }
      }
    }
    if (!dry_run &&
        shared_->metrics.fscache_culled.load(std::memory_order_relaxed) != culled_before) {
      prune_fscache_dirs();
    }
    r.bytes_after = dry_run ? left : total_;
    if (!r.evicted.empty() && !dry_run) {
      spdlog::info("cache: evicted {} entr{} ({} bytes): {} -> {} bytes (limit {}, low {})",
                   r.evicted.size(), r.evicted.size() == 1 ? "y" : "ies", r.evicted_bytes,
                   r.bytes_before, r.bytes_after, r.watermarks.limit, r.watermarks.low);
    }
    if (limited && mode != Pass::kManual && !dry_run) {
      note_over(r);
    } else if (limited && target < r.bytes_after) {
      r.over = r.bytes_after - target;
    }
    rearm(r.watermarks);
    return r;
  }

  // After a pass with a limit: log once when only entries in use remain above the
  // low watermark (and by how much), and once when the cache is back under it.
  void note_over(GcReport& r) {
    const auto& w = r.watermarks;
    const bool over = r.bytes_after > w.high || (r.bytes_before > w.high && r.bytes_after > w.low);
    r.over = over ? r.bytes_after - w.low : 0;
    shared_->metrics.over_limit_bytes.store(r.over, std::memory_order_relaxed);
    if (over && !over_logged_) {
      over_logged_ = true;
      spdlog::warn(
          "cache: the limit cannot be kept: {} bytes on disk, {} over the low watermark ({} of a "
          "{} byte limit); every entry left is in use",
          r.bytes_after, r.over, w.low, w.limit);
    } else if (!over && over_logged_ && r.bytes_after <= w.high) {
      over_logged_ = false;
      spdlog::info("cache: back under the high watermark ({} bytes)", r.bytes_after);
    }
  }

  // Wake the space thread when the bytes written since reach the high watermark.
  void rearm(const cache::Watermarks& w) {
    if (w.limit == 0 || !options_.space.background) {
      shared_->wake_at.store(UINT64_MAX, std::memory_order_relaxed);
      return;
    }
    // Over already (all in use): not at every write, but after a step.
    const std::uint64_t room =
        total_ < w.high ? w.high - total_ : std::max<std::uint64_t>(w.limit / 20, 1U << 20);
    shared_->wake_at.store(shared_->written.load(std::memory_order_relaxed) + room,
                           std::memory_order_relaxed);
  }

  static std::shared_ptr<cache::Shared> make_shared_state(const CacheOptions& o) {
    auto s = std::make_shared<cache::Shared>();
    s->read_timeout = o.read_timeout;
    s->clock = o.clock ? o.clock : cache::steady_clock();
    s->file_io = o.file_io ? o.file_io : cache::system_cache_file_io();
    s->wall = o.wall_clock ? o.wall_clock : std::function<std::int64_t()>(cache::wall_now_ns);
    return s;
  }
  [[nodiscard]] bool is_ours(const CachedBlob& b) {
    std::lock_guard lk(open_mu_);
    auto it = blobs_.find(b.info().id);
    return it != blobs_.end() && it->second.get() == &b;
  }
  // The blob this cache opened as b (null for a CachedBlob of another cache).
  [[nodiscard]] std::shared_ptr<Blob> ours(const CachedBlob& b) {
    std::lock_guard lk(open_mu_);
    auto it = blobs_.find(b.info().id);
    if (it == blobs_.end() || it->second.get() != &b) {
      return nullptr;
    }
    return handle_locked(it->second);
  }

  // Under open_mu_: a reference to b for a holder outside the map (a bound image, a
  // front end, the prefetcher). The map keeps the blob itself; each handle keeps one
  // more reference, so the blob is in use while any handle lives. When a handle goes,
  // release() closes the blob if only the map is left: its fd closes (reopened by the
  // next open(), chunk states rebuilt from the file) and it is unused for eviction.
  std::shared_ptr<Blob> handle_locked(const std::shared_ptr<Blob>& b) {
    return std::shared_ptr<Blob>(b.get(), [keep = b, shared = shared_](Blob*) mutable {
      const std::string id = keep->info().id;
      const void* const p = keep.get();
      // The deleter lives on while weak references to the handle do (a front
      // end's): drop the blob now, not with them.
      keep.reset();
      auto s = std::move(shared);
      s->blob_released(id, p);
    });
  }

  // A handle of the blob p with this id went (Shared::released, released_mu held): close
  // the blob when no one else holds it. Its id stays in removing_ until the fd is
  // closed (and the blob's on_close callbacks ran: a fanotify mark goes), so an open
  // of the id in the meantime waits and then makes a new object of the same files.
  void release(const std::string& id, const void* p) {
    std::shared_ptr<Blob> gone;
    {
      std::lock_guard lk(open_mu_);
      auto it = blobs_.find(id);
      if (it == blobs_.end() || it->second.get() != p || it->second.use_count() != 1) {
        return;
      }
      gone = std::move(it->second);
      blobs_.erase(it);
      removing_.insert(id);
      closed_[id] = gone->last_use_ns();
    }
    // Its last use on disk too: after a restart the LRU order comes from the mtime.
    const std::int64_t ns = gone->last_use_ns();
    if (ns > 0) {
      const timespec ts[2] = {{0, UTIME_OMIT}, {ns / 1000000000, ns % 1000000000}};
      (void)::futimens(gone->fd(), ts);
    }
    gone.reset();
    std::lock_guard lk(open_mu_);
    removing_.erase(id);
    open_cv_.notify_all();
  }

  // The blob's chunk-info region: the local copy when local is set and it has the
  // right size (*from_local then true), else through the backend.
  base::Result<std::vector<std::byte>> load_meta(const erofs::BlobInfo& info, Backend& backend,
                                                 bool local, bool* from_local);
  // The slow part of a first open, with no lock held: the chunk-info table (local copy
  // or backend), its check against the bootstrap, the cache file and its scan.
  base::Result<std::shared_ptr<Blob>> load(const erofs::BlobInfo& info,
                                           const std::vector<erofs::ChunkRecord>& records,
                                           std::shared_ptr<Backend> backend);

  const CacheOptions options_;
  std::shared_ptr<cache::Shared> shared_;
  // Guards blobs_ and loading_, never held across I/O: a slow registry holds up only
  // the opens of its own blob, not those of other images.
  std::mutex open_mu_;
  std::condition_variable open_cv_;  // a load of loading_ ended
  std::map<std::string, std::shared_ptr<Blob>> blobs_;
  // Blob ids whose first open is loading them (one load per id at a time; other opens
  // of the id wait for it).
  std::set<std::string> loading_;
  // Blob ids whose files eviction is removing, or that release() is closing (opens of
  // the id wait for it).
  std::set<std::string> removing_;
  // Blobs release() closed since the last refresh, with their last use.
  std::map<std::string, std::int64_t> closed_;
  std::unique_ptr<cache::Prefetcher> prefetcher_;

  // ---- space ----
  // One accounting or eviction pass at a time; guards disk_, total_, scanned_,
  // over_logged_. Taken before open_mu_, never the other way round.
  std::mutex gc_mu_;
  std::map<std::string, cache::SpaceEntry> disk_;  // every entry, by id
  std::uint64_t total_ = 0;                        // their bytes, as of the last refresh
  bool scanned_ = false;
  bool over_logged_ = false;
  std::mutex pins_mu_;  // guards pins_, culler_
  std::function<CachePins()> pins_;
  KernelCuller culler_;
  KernelObjects kernel_objects_;
  std::mutex wake_mu_;
  std::condition_variable wake_cv_;
  bool wake_ = false;
  bool space_stop_ = false;
  std::thread space_thread_;
};

base::Result<std::vector<std::byte>> BlobCacheImpl::load_meta(const erofs::BlobInfo& info,
                                                              Backend& backend, bool local,
                                                              bool* from_local) {
  *from_local = false;
  const std::uint64_t len = info.ci_compressed_size + erofs::kBlobMetaHeaderSize;
  if (info.ci_compressed_size > kMaxMetaBytes ||
      (info.compressed_size != 0 && !base::in_bounds(info.ci_offset, len, info.compressed_size))) {
    return base::errorf(EBADMSG, "blob {}: chunk-info region [{}, +{}) outside the blob", info.id,
                        info.ci_offset, len);
  }
  const std::string path = options_.cache_dir + "/" + info.id + ".meta";
  if (local) {
    auto copy = base::read_file(path);
    if (copy && copy->size() == len) {
      *from_local = true;
      return std::move(*copy);
    }
  }
  std::vector<std::byte> bytes(len);
  BackendRead r;
  r.offset = info.ci_offset;
  r.out = bytes;
  // Under the read timeout like a fill: a stalled registry fails the bind in time.
  const Deadline deadline = shared_->deadline_from(shared_->now());
  backend.read(info.id, std::span<BackendRead>(&r, 1), deadline);
  shared_->metrics.backend_requests.fetch_add(1, std::memory_order_relaxed);
  if (!r.result) {
    return base::Unexpected(
        base::Error{EIO, fmt::format("blob {}: chunk-info region from {}: {}", info.id,
                                     backend.describe(), r.result.error().to_string())});
  }
  shared_->metrics.backend_bytes.fetch_add(len, std::memory_order_relaxed);
  return bytes;
}

base::Result<std::shared_ptr<CachedBlob>> BlobCacheImpl::open(
    const erofs::BlobInfo& info, const std::vector<erofs::ChunkRecord>& records,
    std::shared_ptr<Backend> backend) {
  CFN_TRY(check_blob_id(info.id));
  std::unique_lock lk(open_mu_);
  for (;;) {
    if (auto it = blobs_.find(info.id); it != blobs_.end()) {
      if (it->second->size() != info.uncompressed_size ||
          it->second->chunk_count() != info.chunk_count) {
        return base::errorf(EEXIST, "blob {} is open with another shape", info.id);
      }
      return std::shared_ptr<CachedBlob>(handle_locked(it->second));
    }
    if (!backend) {
      return base::errorf(EINVAL, "blob {}: no backend", info.id);
    }
    if (!loading_.contains(info.id) && !removing_.contains(info.id)) {
      break;
    }
    // Another open loads this blob: wait for that one (it is bounded by the read
    // timeout). If it failed, this open tries again with its own backend. Or eviction
    // is removing its files: wait until they are gone, then make new ones.
    open_cv_.wait(lk, [&] { return !loading_.contains(info.id) && !removing_.contains(info.id); });
  }
  loading_.insert(info.id);
  lk.unlock();
  auto loaded = load(info, records, std::move(backend));
  lk.lock();
  loading_.erase(info.id);
  open_cv_.notify_all();
  if (!loaded) {
    return base::Unexpected(std::move(loaded).error());
  }
  auto& b = blobs_[info.id];
  b = std::move(*loaded);
  return std::shared_ptr<CachedBlob>(handle_locked(b));
}

base::Result<std::shared_ptr<Blob>> BlobCacheImpl::load(
    const erofs::BlobInfo& info, const std::vector<erofs::ChunkRecord>& records,
    std::shared_ptr<Backend> backend) {
  // An eStargz layer has no chunk-info table: the bootstrap's chunk table is the
  // blob's (docs/estargz.md), so nothing is read from the backend or kept beside it.
  const bool indexed = erofs::is_bootstrap_indexed(info);
  const std::string meta_path = options_.cache_dir + "/" + info.id + ".meta";
  // The bootstrap is the trust root: the blob meta must agree with every chunk
  // record of this blob, place and size, or the blob is refused.
  struct Checked {
    erofs::BlobMeta meta;
    std::vector<base::Digest> digests;
    std::vector<bool> has_digest;
  };
  auto check = [&](base::Result<erofs::BlobMeta> meta) -> base::Result<Checked> {
    if (!meta) {
      return base::Unexpected(std::move(meta).error().wrap("blob " + info.id + " meta"));
    }
    const auto& cm = meta->chunks();
    std::vector<base::Digest> digests(cm.size());
    std::vector<bool> has_digest(cm.size(), false);
    auto refuse = [&](std::string why) {
      return base::make_error(EBADMSG, fmt::format("blob {}: {}", info.id, why));
    };
    for (const erofs::ChunkRecord& r : records) {
      if (r.blob_index != info.index) {
        continue;
      }
      if (r.index >= cm.size()) {
        return refuse(fmt::format("chunk record ci {} beyond the {} chunks of the blob meta",
                                  r.index, cm.size()));
      }
      const erofs::ChunkMeta& c = cm[r.index];
      if (r.compressed_offset != c.compressed_offset || r.compressed_size != c.compressed_size ||
          r.uncompressed_offset != c.uncompressed_offset ||
          r.uncompressed_size != c.uncompressed_size) {
        return refuse(
            fmt::format("chunk {}: blob meta and bootstrap disagree on its place", r.index));
      }
      if (has_digest[r.index] && digests[r.index] != r.digest) {
        return refuse(fmt::format("chunk {}: two bootstrap digests", r.index));
      }
      digests[r.index] = r.digest;
      has_digest[r.index] = true;
    }
    for (std::size_t ci = 0; ci < cm.size(); ++ci) {
      // Crash safety relies on no two chunks sharing a block (the head block is
      // written last); EROFS requires 4 KiB aligned chunks anyway.
      if (cm[ci].uncompressed_offset % kBlock != 0) {
        return refuse(fmt::format("chunk {} is not 4 KiB aligned", ci));
      }
    }
    return Checked{std::move(*meta), std::move(digests), std::move(has_digest)};
  };
  std::vector<std::byte> meta_bytes;
  bool from_local = false;
  base::Result<Checked> checked = base::make_error(EINVAL, "unchecked");
  if (indexed) {
    checked = check(erofs::BlobMeta::from_records(info, records));
  } else {
    // The local copy first; one that does not parse or agree with the bootstrap (a
    // disk's damage, or a copy of another blob's) is dropped and the region read
    // through the backend again, so the open does not fail for it.
    CFN_ASSIGN_OR_RETURN(meta_bytes, load_meta(info, *backend, true, &from_local));
    checked = check(erofs::BlobMeta::parse(info, meta_bytes));
    if (!checked && from_local) {
      spdlog::warn("blob {}: the local copy of its chunk-info table: {} (read again)", info.id,
                   checked.error().to_string());
      (void)::unlink(meta_path.c_str());
      CFN_ASSIGN_OR_RETURN(meta_bytes, load_meta(info, *backend, false, &from_local));
      checked = check(erofs::BlobMeta::parse(info, meta_bytes));
    }
  }
  if (!checked) {
    // A corrupt local copy is dropped so the next open reads the backend again.
    (void)::unlink(meta_path.c_str());
    return base::Unexpected(std::move(checked).error());
  }

  std::error_code ec;
  std::filesystem::create_directories(options_.cache_dir, ec);
  if (ec) {
    return base::errorf(ec.value(), "create {}: {}", options_.cache_dir, ec.message());
  }
  if (indexed ? ::access(meta_path.c_str(), F_OK) != 0 : !from_local) {
    // A copy of the backend's bytes (empty when indexed), checked at every open (above).
    CFN_TRY(base::write_file_atomic(meta_path, meta_bytes, 0600));
  }

  const std::string path = options_.cache_dir + "/" + info.id + ".blob";
  CFN_ASSIGN_OR_RETURN(auto fd, base::UniqueFd::open(path, O_RDWR | O_CREAT, 0600));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return base::errno_error("stat " + path);
  }
  if (static_cast<std::uint64_t>(st.st_size) != info.uncompressed_size) {
    // New, or of another size (not this blob's): start from nothing but holes.
    if (::ftruncate(fd.get(), 0) != 0 ||
        ::ftruncate(fd.get(), static_cast<off_t>(info.uncompressed_size)) != 0) {
      return base::errno_error("truncate " + path);
    }
  }
  const std::uint64_t batch = std::max(options_.batch_size, kMinBatch);
  auto blob =
      std::make_shared<Blob>(shared_, info, std::move(checked->meta), std::move(checked->digests),
                             std::move(checked->has_digest), std::move(backend), path,
                             std::move(fd), batch, std::max(batch, options_.amplify_io));
  CFN_TRY(blob->scan());
  return blob;
}

}  // namespace

base::Result<std::unique_ptr<BlobCache>> BlobCache::create(CacheOptions options) {
  if (options.cache_dir.empty()) {
    return base::make_error(EINVAL, "blob cache: empty cache_dir");
  }
  std::error_code ec;
  std::filesystem::create_directories(options.cache_dir, ec);
  if (ec) {
    return base::errorf(ec.value(), "create {}: {}", options.cache_dir, ec.message());
  }
  options.batch_size = std::max(options.batch_size, kMinBatch);
  return std::unique_ptr<BlobCache>(new BlobCacheImpl(std::move(options)));
}

}  // namespace cfnd
