// SPDX-License-Identifier: Apache-2.0
// State shared by the blob cache, its blobs and its prefetcher. A blob can outlive the
// BlobCache (a front end holds its shared_ptr), so each holds this by shared_ptr.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

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

  [[nodiscard]] Clock::time_point now() const { return clock->now(); }
  // The deadline of a read started at start: start + read timeout, or none.
  [[nodiscard]] Deadline deadline_from(std::chrono::steady_clock::time_point start) const {
    return read_timeout.count() > 0 ? start + read_timeout : kNoDeadline;
  }
};

// RAII count of on-demand fills in progress; the prefetcher waits for zero.
class OnDemandScope {
 public:
  explicit OnDemandScope(Shared& s) : s_(s) {
    std::lock_guard lk(s_.mu);
    ++s_.ondemand;
  }
  ~OnDemandScope() {
    std::lock_guard lk(s_.mu);
    if (--s_.ondemand == 0) {
      s_.cv.notify_all();
    }
  }
  OnDemandScope(const OnDemandScope&) = delete;
  OnDemandScope& operator=(const OnDemandScope&) = delete;

 private:
  Shared& s_;
};

// RAII count of fills fetching their own chunks; prefetch-list workers start no new
// read while it is above zero.
class FetchingScope {
 public:
  explicit FetchingScope(Shared& s) : s_(s) {
    std::lock_guard lk(s_.mu);
    ++s_.fetching;
  }
  ~FetchingScope() {
    std::lock_guard lk(s_.mu);
    if (--s_.fetching == 0) {
      s_.cv.notify_all();
    }
  }
  FetchingScope(const FetchingScope&) = delete;
  FetchingScope& operator=(const FetchingScope&) = delete;

 private:
  Shared& s_;
};

}  // namespace cfnd::cache
