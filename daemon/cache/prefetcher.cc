// SPDX-License-Identifier: Apache-2.0
#include "daemon/cache/prefetcher.h"

#include <algorithm>
#include <mutex>
#include <utility>

#include "base/log.h"
#include "daemon/cache/read_plan.h"
#include "daemon/cache/token_bucket.h"

namespace cfnd::cache {

Prefetcher::Prefetcher(std::shared_ptr<Shared> shared, std::uint64_t bandwidth, std::uint64_t batch,
                       std::uint64_t merge)
    : shared_(std::move(shared)),
      bandwidth_(bandwidth),
      batch_(batch),
      merge_(std::max(batch, merge)) {
  if (bandwidth_ > 0) {
    prefetcher_ = std::thread([this] { prefetch_loop(); });
  }
  for (int i = 0; i < BlobCache::kPrefetchListWorkers; ++i) {
    list_workers_.emplace_back([this] { list_loop(); });
  }
}

Prefetcher::~Prefetcher() {
  {
    std::lock_guard lk(shared_->mu);
    shared_->stop = true;
    shared_->cv.notify_all();
  }
  if (prefetcher_.joinable()) {
    prefetcher_.join();
  }
  for (auto& t : list_workers_) {
    t.join();
  }
}

void Prefetcher::prefetch(std::weak_ptr<Blob> blob) {
  if (bandwidth_ == 0) {
    return;
  }
  std::lock_guard lk(shared_->mu);
  queue_.push_back(std::move(blob));
  shared_->cv.notify_all();
}

void Prefetcher::prefetch_chunks(std::shared_ptr<Blob> blob, std::vector<std::uint32_t> cis,
                                 bool readahead) {
  cis = blob->prefetch_order(std::move(cis));
  if (cis.empty()) {
    return;
  }
  std::lock_guard lk(shared_->mu);
  if (!readahead) {
    blob->list_pending(1);
  }
  list_jobs_.push_back(ListJob{std::move(blob), std::move(cis), 0, readahead});
  shared_->cv.notify_all();
}

std::uint64_t Prefetcher::take_limit(unsigned takes) const {
  std::uint64_t limit = batch_;
  for (unsigned i = 0; i < takes && limit < merge_; ++i) {
    limit *= 2;
  }
  return std::min(limit, merge_);
}

// A prefetch-list worker: takes the next range read of the oldest job (the next listed
// chunk still absent, with the chunks after it in the list that follow it in the blob
// file, at most kMaxReadGap apart, up to take_limit) and fetches it;
// kPrefetchListWorkers of these keep that many reads in flight. A read per take, not a batch of
// scattered chunks: a fill that waits for a listed chunk waits for that one read only (a flight
// ends with its round). No new take while a fill fetches: the reader waiting for it gets the
// bandwidth (the list's reads already in flight still share it).
void Prefetcher::list_loop() {
  std::unique_lock lk(shared_->mu);
  while (!shared_->stop) {
    // On-demand fills first: a reader is waiting for theirs.
    if (list_jobs_.empty() || shared_->fetching > 0) {
      shared_->cv.wait(lk);
      continue;
    }
    ListJob& job = list_jobs_.front();
    std::shared_ptr<Blob> blob = job.blob;
    const bool readahead = job.readahead;
    // Chunks a fill fetched meanwhile are not a read any more.
    while (job.next < job.cis.size() && !blob->absent(job.cis[job.next])) {
      ++job.next;
    }
    // A backend that just timed out a read (a stalled registry): the rest of the job
    // is left to on-demand fills. A read started now would hold its chunks through the
    // stall, and readers coming once the registry is back would wait for it and fail.
    if (job.next < job.cis.size() && blob->failing()) {
      spdlog::debug("{} of blob {}: {} chunks left to on-demand fills (the backend timed out)",
                    readahead ? "file readahead" : "prefetch list", blob->info().id,
                    job.cis.size() - job.next);
      job.next = job.cis.size();
    }
    if (job.next == job.cis.size()) {
      if (!readahead) {
        blob->list_pending(-1);
      }
      list_jobs_.pop_front();
      continue;
    }
    // One range read: the next listed chunk, and those after it in the list that
    // follow it in the blob file (a builder given the list lays its files out in list
    // order), up to this take's limit. A file's readahead (a guess) keeps to one batch
    // of chunks that continue each other.
    const std::uint64_t limit = readahead ? blob->batch() : take_limit(job.takes++);
    const std::uint64_t max_gap = readahead ? 0 : kMaxReadGap;
    std::vector<std::uint32_t> slice{job.cis[job.next++]};
    const std::uint64_t start = blob->compressed_offset(slice.back());
    while (job.next < job.cis.size()) {
      const std::uint32_t ci = job.cis[job.next];
      const std::uint64_t end = blob->compressed_end(slice.back());
      const std::uint64_t off = blob->compressed_offset(ci);
      if (off < end || off - end > max_gap || blob->compressed_end(ci) - start > limit ||
          !blob->absent(ci)) {
        break;
      }
      slice.push_back(ci);
      ++job.next;
    }
    if (job.next == job.cis.size()) {
      if (!readahead) {
        blob->list_pending(-1);
      }
      list_jobs_.pop_front();
    }
    ++list_running_;
    lk.unlock();
    auto filled = blob->prefetch_chunks(slice, limit);
    if (filled) {
      shared_->metrics.prefetch_bytes.fetch_add(*filled, std::memory_order_relaxed);
      (readahead ? shared_->metrics.readahead_bytes : shared_->metrics.prefetch_list_bytes)
          .fetch_add(*filled, std::memory_order_relaxed);
    } else if (blob->first_prefetch_error()) {
      spdlog::warn("{} of blob {}: {} (failed chunks are left to on-demand fills)",
                   readahead ? "file readahead" : "prefetch list", blob->info().id,
                   filled.error().to_string());
    }
    lk.lock();
    --list_running_;
    shared_->cv.notify_all();
  }
}

void Prefetcher::prefetch_loop() {
  TokenBucket bucket(bandwidth_, batch_, shared_->now());
  std::unique_lock lk(shared_->mu);
  while (!shared_->stop) {
    if (queue_.empty()) {
      shared_->cv.wait(lk);
      continue;
    }
    const std::weak_ptr<Blob> job = queue_.front();
    std::uint32_t cursor = 0;
    while (!shared_->stop) {
      // Always behind on-demand fills and prefetch lists: no new step while one is
      // waiting or fetching.
      shared_->cv.wait(lk, [&] { return shared_->stop || !busy(); });
      if (shared_->stop) {
        break;
      }
      lk.unlock();
      // Held for one step at a time: between steps the blob may go (and close).
      std::shared_ptr<Blob> blob = job.lock();
      if (!blob) {
        lk.lock();
        break;
      }
      std::uint64_t compressed = 0;
      auto cis = blob->next_absent(&cursor, &compressed);
      if (cis.empty()) {
        blob.reset();
        lk.lock();
        break;
      }
      const auto wait = bucket.take(compressed, shared_->now());
      if (wait.count() > 0) {
        blob.reset();  // not held while it waits for tokens
        lk.lock();
        shared_->clock->wait_until(lk, shared_->cv, shared_->now() + wait,
                                   [&] { return shared_->stop; });
        if (shared_->stop) {
          break;
        }
        // An on-demand fill may have started while we slept.
        shared_->cv.wait(lk, [&] { return shared_->stop || !busy(); });
        if (shared_->stop) {
          break;
        }
        lk.unlock();
        blob = job.lock();
        if (!blob) {
          lk.lock();
          break;
        }
      }
      auto filled = blob->prefetch_chunks(cis);
      if (filled) {
        shared_->metrics.prefetch_bytes.fetch_add(*filled, std::memory_order_relaxed);
      } else if (blob->first_prefetch_error()) {
        spdlog::warn("prefetch of blob {}: {} (failed chunks are left to on-demand fills)",
                     blob->info().id, filled.error().to_string());
      }
      blob.reset();  // the last reference may close the blob: not under shared_->mu
      lk.lock();
    }
    if (!queue_.empty() && !queue_.front().owner_before(job) && !job.owner_before(queue_.front())) {
      queue_.pop_front();
    }
  }
}

}  // namespace cfnd::cache
