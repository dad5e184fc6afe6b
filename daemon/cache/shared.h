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
