// SPDX-License-Identifier: Apache-2.0
// The blob cache's background work: whole-blob prefetch (one thread, bandwidth-capped
// by a token bucket, behind everything else) and prefetch lists / file readahead
// (BlobCache::kPrefetchListWorkers threads, behind on-demand fills). See
// BlobCache::prefetch and BlobCache::prefetch_chunks for the contract.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <thread>
#include <vector>

#include "daemon/cache/blob.h"
#include "daemon/cache/shared.h"

namespace cfnd::cache {

class Prefetcher {
 public:
  // bandwidth: bytes/s of whole-blob prefetch, 0 = none (its thread is not started);
  // batch: the token bucket's capacity; merge: a prefetch list's largest range read
  // (compressed bytes, at least batch).
  Prefetcher(std::shared_ptr<Shared> shared, std::uint64_t bandwidth, std::uint64_t batch,
             std::uint64_t merge);
  // Stops and joins the threads (shared->stop).
  ~Prefetcher();
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  // Whole-blob background prefetch, for as long as blob (a holder's reference) lives: a
  // blob whose holders all let go (its image unmounted) is not prefetched further, so
  // the prefetcher keeps no blob open for an image that is gone.
  void prefetch(std::weak_ptr<Blob> blob);
  void prefetch_chunks(std::shared_ptr<Blob> blob, std::vector<std::uint32_t> cis, bool readahead);

 private:
  struct ListJob {
    std::shared_ptr<Blob> blob;
    std::vector<std::uint32_t> cis;  // fetch order
    std::size_t next = 0;            // first not yet handed to a worker
    bool readahead = false;          // a file's readahead, not a prefetch list
    unsigned takes = 0;              // range reads handed to workers so far
  };
  // The largest range read of a list job's next take: batch_, doubling with each take
  // up to merge_. The first reads are small, so the first files the workload needs
  // (a recorded list is in first-access order) arrive soon while the reads in flight
  // share the link; the later ones large, so the whole list costs few requests.
  [[nodiscard]] std::uint64_t take_limit(unsigned takes) const;
  void list_loop();
  void prefetch_loop();
  // Background prefetch waits while any of this is going on. Under shared_->mu.
  [[nodiscard]] bool busy() const {
    return shared_->ondemand > 0 || !list_jobs_.empty() || list_running_ > 0;
  }

  std::shared_ptr<Shared> shared_;
  const std::uint64_t bandwidth_;
  const std::uint64_t batch_;
  const std::uint64_t merge_;
  std::deque<std::weak_ptr<Blob>> queue_;  // guarded by shared_->mu
  std::deque<ListJob> list_jobs_;          // guarded by shared_->mu
  int list_running_ = 0;                   // reads of list_jobs_ under way; guarded by shared_->mu
  std::thread prefetcher_;
  std::vector<std::thread> list_workers_;
};

}  // namespace cfnd::cache
