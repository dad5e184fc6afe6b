// SPDX-License-Identifier: Apache-2.0
// One blob's cache file and its chunk states (absent / in flight / present): the
// chunk-state room of the blob cache. See daemon/blob_cache.h for the contract of
// CachedBlob; the rest of this class is what the cache and its prefetcher use.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/digest.h"
#include "base/result.h"
#include "base/unique_fd.h"
#include "daemon/backend.h"
#include "daemon/blob_cache.h"
#include "daemon/cache/read_plan.h"
#include "daemon/cache/shared.h"
#include "erofs/blob_meta.h"

namespace cfnd::cache {

// A chunk whose backend read timed out for good (stall or request timeout after the
// registry client's own retries, or the fill's read timeout), or that a fill waited
// for in vain until its read timeout, fails further fills at once for this long. The
// kernel retries a failed read (readahead, then the page alone): without the hold
// each retry waited the whole timeout out again, so a stalled registry gave EIO only
// after two or three times the configured timeout. Short, so a registry that
// recovers is used again at the next read.
inline constexpr auto kFailHold = std::chrono::seconds(1);

class Blob final : public CachedBlob {
 public:
  Blob(std::shared_ptr<Shared> shared, erofs::BlobInfo info, erofs::BlobMeta meta,
       std::vector<base::Digest> digests, std::vector<bool> has_digest,
       std::shared_ptr<Backend> backend, std::string path, base::UniqueFd fd, std::uint64_t batch,
       std::uint64_t window = 0);

  // CachedBlob
  [[nodiscard]] const erofs::BlobInfo& info() const override { return info_; }
  [[nodiscard]] const std::string& path() const override { return path_; }
  [[nodiscard]] int fd() const override { return fd_.get(); }
  [[nodiscard]] std::uint64_t size() const override { return info_.uncompressed_size; }
  [[nodiscard]] std::uint64_t chunk_count() const override { return state_.size(); }
  [[nodiscard]] std::uint64_t ready_chunks() const override;
  [[nodiscard]] bool complete() const override;
  [[nodiscard]] bool on_complete(std::function<void()> fn) override;
  void on_close(std::function<void()> fn) override;
  ~Blob() override;
  [[nodiscard]] bool ready(std::uint64_t off, std::uint64_t len) const override;
  void add_demand_listener(std::weak_ptr<DemandListener> l) override;
  base::Status fill(std::uint64_t off, std::uint64_t len, int write_fd) override;
  [[nodiscard]] std::vector<Demand> demanded_chunks() const override;

  // Rebuild chunk readiness from the sparse file's data extents.
  base::Status scan();

  // Wall-clock ns of the blob's last fill() or ready() (or its open): its place in
  // the cache's LRU order.
  [[nodiscard]] std::int64_t last_use_ns() const {
    return last_use_ns_.load(std::memory_order_relaxed);
  }
  void touch() const { last_use_ns_.store(shared_->wall(), std::memory_order_relaxed); }

  // For the prefetcher.
  // A prefetch list's chunks in fetch order: known indexes with a bootstrap digest,
  // once each (the first time listed), in list order: the order the workload needs
  // them when the list was recorded by first demand (`accessed`).
  [[nodiscard]] std::vector<std::uint32_t> prefetch_order(std::vector<std::uint32_t> cis) const;
  [[nodiscard]] std::uint64_t compressed_size(std::uint32_t ci) const {
    return meta_.chunks()[ci].compressed_size;
  }
  [[nodiscard]] std::uint64_t compressed_offset(std::uint32_t ci) const {
    return meta_.chunks()[ci].compressed_offset;
  }
  [[nodiscard]] std::uint64_t compressed_end(std::uint32_t ci) const {
    return compressed_offset(ci) + compressed_size(ci);
  }
  // Prefetch-list jobs of this blob with chunks not yet handed to a worker (not file
  // readahead: that is a guess like the widening). While there are any, fills do not
  // widen: the list says what the workload reads next, widening would spend the
  // bandwidth on neighbours nobody asked for.
  void list_pending(int delta) { lists_pending_.fetch_add(delta, std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t batch() const { return batch_; }
  // An on-demand fill's window (CacheOptions::amplify_io, at least batch()).
  [[nodiscard]] std::uint64_t window() const { return window_; }
  // A read of this blob timed out less than kFailHold ago: the backend is stalling.
  [[nodiscard]] bool failing() const;
  [[nodiscard]] bool absent(std::uint32_t ci) const;
  // The next chunks from *cursor on that are absent, about one batch of uncompressed
  // bytes; advances *cursor past them. Empty when the blob is done.
  std::vector<std::uint32_t> next_absent(std::uint32_t* cursor, std::uint64_t* compressed);
  // Fetch those of cis that are still absent (no waiting on others' fetches), each
  // read cut at the read timeout, no range read over max_read compressed bytes (0: the
  // window). Returns the uncompressed bytes made present.
  base::Result<std::uint64_t> prefetch_chunks(const std::vector<std::uint32_t>& cis,
                                              std::uint64_t max_read = 0);
  // For the prefetcher's log: one warning per blob.
  bool first_prefetch_error() { return !prefetch_warned_.exchange(true); }

 private:
  enum class ChunkState : std::uint8_t { kAbsent, kInFlight, kPresent };

  // One round of backend reads for a set of chunks. A waiter keeps a reference until
  // done; after done, a chunk of the flight is present iff it was fetched, else
  // errors says why.
  struct Flight {
    bool done = false;
    std::map<std::uint32_t, base::Error> errors;  // by ci
    [[nodiscard]] std::optional<base::Error> error_of(std::uint32_t ci) const;
  };
  struct Round {
    std::vector<std::uint32_t> cis;  // ci order
    std::shared_ptr<Flight> flight;
  };
  // What a round did, chunk by chunk, before it is published.
  struct RoundOutcome {
    std::vector<std::uint32_t> done;              // written in full
    std::map<std::uint32_t, base::Error> errors;  // failed, by ci
    std::vector<std::uint32_t> timed_out;         // of errors: the backend timed out
    std::optional<base::Error> backend_error;     // the timeout's error, if any
    std::uint64_t filled = 0;                     // uncompressed bytes of done
    // Of errors: the chunks whose bytes failed their digest (or would not
    // decompress), by ci: the source that served them (BackendRead::source).
    std::map<std::uint32_t, std::string> corrupt;
  };
  // First demands found under mu_, told to the listeners after it is released.
  struct FirstDemands {
    std::vector<std::uint32_t> cis;
    std::vector<std::shared_ptr<DemandListener>> listeners;
    void tell() const;
  };
  // fill's first step: what the chunks [first, last) need.
  struct Check {
    bool hit = false;                 // all present
    bool any_absent = false;          // else each is present or someone else's fetch
    std::optional<base::Error> held;  // a chunk failed less than kFailHold ago
  };

  // fill, step by step.
  // 1. Under mu_: stamp first demands; all present, held, or what is absent.
  Check check(std::uint32_t first, std::uint32_t last, std::chrono::steady_clock::time_point t0);
  // 2. The chunks to claim: [first, last), widened forward to the window when allowed.
  [[nodiscard]] std::vector<std::uint32_t> widen(std::uint32_t first, std::uint32_t last,
                                                 bool any_absent) const;
  // 3. Under mu_: claim the absent chunks of cis into rounds. When req_flight is
  // given, it gets the flight (ours or someone else's) of each chunk of
  // cis[0, size) that is not present, the chunks the caller must wait for. A round
  // holds at least max_read compressed bytes (0: the window) when its chunks have them.
  std::vector<Round> claim(const std::vector<std::uint32_t>& cis,
                           std::vector<std::shared_ptr<Flight>>* req_flight,
                           std::uint64_t max_read = 0);
  // 4. Fetch, decode and write, publish one claimed round, in range reads of at most
  // max_read compressed bytes (0: the window). Returns the uncompressed bytes made
  // present.
  std::uint64_t run_round(const Round& round, int write_fd, Deadline deadline,
                          std::uint64_t max_read = 0);
  // 5. Wait for the flights of the requested chunks (first + i); the first error.
  base::Status wait_for(std::uint32_t first, const std::vector<std::shared_ptr<Flight>>& req_flight,
                        Deadline deadline);

  // run_round's steps.
  // refetch_of: the reads are refetches of these chunks (RoundOutcome::corrupt).
  void fetch(const ReadPlan& plan, std::vector<std::byte>& buf, std::vector<BackendRead>& reads,
             Deadline deadline, const std::map<std::uint32_t, std::string>* refetch_of = nullptr);
  RoundOutcome decode_and_write(const ReadPlan& plan, const std::vector<std::byte>& buf,
                                const std::vector<BackendRead>& reads, int fd);
  // Fetch out.corrupt's chunks once more (BackendRead::refetch), decode and write them;
  // out then says what both tries did.
  void refetch(RoundOutcome& out, int fd, Deadline deadline);
  void publish(const Round& round, RoundOutcome&& out);
  base::Status write_chunk(int fd, const erofs::ChunkMeta& c, base::Bytes data);
  // After write_chunk failed with e: punch the chunk's range back to a hole; the
  // chunk's error (EIO).
  base::Error write_failed(int fd, std::uint32_t ci, const erofs::ChunkMeta& c,
                           const base::Error& e);

  // Under mu_: stamp ci's first demand (CachedBlob::demanded_chunks), and note it for
  // the listeners.
  void demand(std::uint32_t ci, FirstDemands& fresh) const;

  std::shared_ptr<Shared> shared_;
  const erofs::BlobInfo info_;
  const erofs::BlobMeta meta_;
  const std::vector<base::Digest> digests_;  // by ci, from the bootstrap
  const std::vector<bool> has_digest_;
  // Shared with the image binding that opened the blob (it may hand the same backend
  // to other blobs of the image).
  const std::shared_ptr<Backend> backend_;
  const std::string path_;
  const base::UniqueFd fd_;
  const std::uint64_t batch_;
  const std::uint64_t window_;  // >= batch_
  std::atomic<bool> prefetch_warned_{false};
  std::atomic<int> lists_pending_{0};
  mutable std::atomic<std::int64_t> last_use_ns_{0};

  mutable std::mutex mu_;
  std::condition_variable cv_;  // some flight of this blob is done
  std::vector<ChunkState> state_;
  std::vector<std::shared_ptr<Flight>> flight_;  // set while kInFlight
  std::uint64_t present_ = 0;
  mutable std::vector<std::weak_ptr<DemandListener>> listeners_;  // guarded by mu_
  // by ci: the Demand::seq of its first ready() or fill(), 0 = never asked for
  mutable std::vector<std::uint64_t> demanded_;
  // by ci: until when a failed backend read fails fills at once (kFailHold)
  std::vector<std::chrono::steady_clock::time_point> failed_until_;
  // the latest of failed_until_: while it lasts, prefetch lists start no read
  std::chrono::steady_clock::time_point failing_until_{};
  std::optional<base::Error> last_backend_error_;
  std::vector<std::function<void()>> on_complete_;  // run once when present_ reaches all
  std::vector<std::function<void()>> on_close_;     // run by the destructor
};

}  // namespace cfnd::cache
