// SPDX-License-Identifier: Apache-2.0
// State shared by the blob cache, its blobs and its prefetcher. A blob can outlive the
// BlobCache (a front end holds its shared_ptr), so each holds this by shared_ptr.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

#include "daemon/backend.h"
#include "daemon/blob_cache.h"
#include "daemon/cache/cache_file_io.h"
#include "daemon/cache/clock.h"

namespace cfnd::cache {

struct Shared {
  CacheMetrics metrics;
  std::mutex mu;
  std::condition_variable cv;  // ondemand or fetching reached 0, stop, or new prefetch work
  int ondemand = 0;            // fills waiting for or doing a fetch
  int fetching = 0;            // fills doing a fetch of their own (prefetch lists wait)
  bool stop = false;
  // The last CachedBlob::Demand::seq handed out, for every blob of the cache.
  std::atomic<std::uint64_t> demand_seq{0};
  std::chrono::milliseconds read_timeout{0};  // CacheOptions::read_timeout; set once
  std::shared_ptr<Clock> clock;               // CacheOptions::clock or steady; set once
  std::shared_ptr<CacheFileIo> file_io;       // CacheOptions::file_io or system; set once
  std::function<std::int64_t()> wall;         // CacheOptions::wall_clock or realtime; set once
  // Space: bytes written to cache files since the start; when it reaches wake_at the
  // space thread is woken (wake_gc) to account and maybe evict before its interval.
  std::atomic<std::uint64_t> written{0};
  std::atomic<std::uint64_t> wake_at{UINT64_MAX};
  // The space keeper's hooks, set by the BlobCache and cleared when it goes (a blob can
  // outlive it); guarded by hooks_mu, both rare (a re-arm, a full disk).
  std::mutex hooks_mu;
  std::function<void()> wake_gc;
  // A cache write failed with ENOSPC or EDQUOT: evict unused entries now, on the
  // calling thread (no lock of any blob held), so the reader's next try finds room.
  std::function<void()> no_space;
  // A holder let go of a blob (blob, the object it held): the cache closes the blob when
  // no one else holds it. Guarded by released_mu, not hooks_mu: a handle may go on a
  // thread inside a space pass (hooks_mu is taken before the pass's lock, this after).
  std::mutex released_mu;
  std::function<void(const std::string& id, const void* blob)> released;

  void note_written(std::uint64_t n) {
    const std::uint64_t now = written.fetch_add(n, std::memory_order_relaxed) + n;
    if (now >= wake_at.load(std::memory_order_relaxed)) {
      wake_at.store(UINT64_MAX, std::memory_order_relaxed);  // once; the pass re-arms it
      std::lock_guard lk(hooks_mu);
      if (wake_gc) {
        wake_gc();
      }
    }
  }
  void blob_released(const std::string& id, const void* blob) {
    std::lock_guard lk(released_mu);
    if (released) {
      released(id, blob);
    }
  }
  void out_of_space() {
    std::lock_guard lk(hooks_mu);
    if (no_space) {
      no_space();
    }
  }

  [[nodiscard]] Clock::time_point now() const { return clock->now(); }
  // The deadline of a read started at start: start + read timeout, or none.
  [[nodiscard]] Deadline deadline_from(std::chrono::steady_clock::time_point start) const {
    return read_timeout.count() > 0 ? start + read_timeout : kNoDeadline;
  }
};

// RAII: one more in a count of Shared (ondemand, fetching) while it lives; the
// count's return to zero is notified on Shared::cv (the prefetcher waits for it).
class CountScope {
 public:
  CountScope(Shared& s, int Shared::*count) : s_(s), count_(count) {
    std::lock_guard lk(s_.mu);
    ++(s_.*count_);
  }
  ~CountScope() {
    std::lock_guard lk(s_.mu);
    if (--(s_.*count_) == 0) {
      s_.cv.notify_all();
    }
  }
  CountScope(const CountScope&) = delete;
  CountScope& operator=(const CountScope&) = delete;

 private:
  Shared& s_;
  int Shared::*count_;
};

}  // namespace cfnd::cache
