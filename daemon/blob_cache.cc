// SPDX-License-Identifier: Apache-2.0
// The blob cache (see blob_cache.h for the contract).
//
// Per blob, three files in cache_dir:
//   <id>.blob   sparse, uncompressed size; a hole = not fetched
//   <id>.meta   the blob's chunk-info region as read from the backend (raw bytes)
//
// Chunk state lives in memory (absent / in-flight / present) and is rebuilt from the
// holes of <id>.blob when a blob is opened.
//
// Crash safety. A chunk counts as present after a restart only when its whole
// uncompressed range is data. A fill writes every chunk's bytes AFTER its first 4 KiB
// block first and the first block LAST (chunks start 4 KiB aligned, so no other chunk
// shares that block). If the daemon dies between the two writes, the first block is
// still a hole and the chunk is absent on restart; the next fill rewrites all of it.
// This covers a daemon crash (the page cache keeps what pwrite returned, in order).
// It does not order blocks on disk across a power loss: that would need an fdatasync
// per chunk, which would halve the fill rate; after an unclean host shutdown the
// operator drops the cache directory (the bootstrap digests make it re-fillable).
#include "daemon/blob_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <unordered_set>
#include <utility>

#include "base/defer.h"
#include "base/file.h"
#include "base/log.h"
#include "erofs/blob_meta.h"
#include "erofs/format.h"

namespace cfnd {
namespace {

constexpr std::uint64_t kMinBatch = 128 * 1024;
constexpr std::uint64_t kBlock = 4096;
constexpr std::uint64_t kMaxMetaBytes = 1ULL << 30;
// A huge fill (or a prefetch step) is fetched in rounds of at most this many batches,
// so its buffers stay bounded and early chunks are released early.
constexpr std::uint64_t kBatchesPerRound = 8;
// A chunk whose backend read timed out for good (stall or request timeout after the
// registry client's own retries, or the fill's read timeout), or that a fill waited
// for in vain until its read timeout, fails further fills at once for this long. The
// kernel retries a failed read (readahead, then the page alone): without the hold
// each retry waited the whole timeout out again, so a stalled registry gave EIO only
// after two or three times the configured timeout. Short, so a registry that
// recovers is used again at the next read.
constexpr auto kFailHold = std::chrono::seconds(1);

enum class ChunkState : std::uint8_t { kAbsent, kInFlight, kPresent };

// One round of backend reads for a set of chunks. A waiter keeps a reference until
// done; after done, a chunk of the flight is present iff it was fetched, else
// errors says why.
struct Flight {
  bool done = false;
  std::map<std::uint32_t, base::Error> errors;  // by ci
  [[nodiscard]] std::optional<base::Error> error_of(std::uint32_t ci) const {
    auto it = errors.find(ci);
    return it == errors.end() ? std::nullopt : std::optional<base::Error>(it->second);
  }
};

// State shared by the cache and its blobs. A blob can outlive the BlobCache (a front
// end holds its shared_ptr), so both hold this by shared_ptr.
struct Shared {
  CacheMetrics metrics;
  std::mutex mu;
  std::condition_variable cv;  // ondemand reached 0, stop, or new prefetch work
  int ondemand = 0;            // fills waiting for or doing a fetch
  int fetching = 0;            // fills doing a fetch of their own (prefetch lists wait)
  // The last CachedBlob::Demand::seq handed out, for every blob of the cache.
  std::atomic<std::uint64_t> demand_seq{0};
  bool stop = false;
  std::chrono::milliseconds read_timeout{0};  // CacheOptions::read_timeout; set once
};

void record_latency(CacheMetrics& m, std::chrono::steady_clock::duration d) {
  const auto us = static_cast<std::uint64_t>(
      std::max<std::int64_t>(0, std::chrono::duration_cast<std::chrono::microseconds>(d).count()));
  // Bucket k holds latencies <= 2^k us.
  int k = us <= 1 ? 0 : static_cast<int>(std::bit_width(us - 1));
  k = std::min(k, CacheMetrics::kBuckets - 1);
  m.fill_latency_us[k].fetch_add(1, std::memory_order_relaxed);
}

base::Status check_blob_id(const std::string& id) {
  if (id.empty() || id == "." || id == ".." || id.find('/') != std::string::npos ||
      id.find('\0') != std::string::npos) {
    return base::errorf(EINVAL, "blob id '{}' cannot name a file", id);
  }
  return {};
}

// The head block of a chunk: written last, so it is data only once the rest is.
std::uint64_t head_len(const erofs::ChunkMeta& c) {
  return std::min<std::uint64_t>(kBlock, c.uncompressed_size);
}

class BlobImpl final : public CachedBlob {
 public:
  BlobImpl(std::shared_ptr<Shared> shared, erofs::BlobInfo info, erofs::BlobMeta meta,
           std::vector<base::Digest> digests, std::vector<bool> has_digest,
           std::shared_ptr<Backend> backend, std::string path, base::UniqueFd fd,
           std::uint64_t batch)
      : shared_(std::move(shared)),
        info_(std::move(info)),
        meta_(std::move(meta)),
        digests_(std::move(digests)),
        has_digest_(std::move(has_digest)),
        backend_(std::move(backend)),
        path_(std::move(path)),
        fd_(std::move(fd)),
        batch_(batch),
        state_(meta_.chunks().size(), ChunkState::kAbsent),
        flight_(meta_.chunks().size()),
        demanded_(meta_.chunks().size(), 0),
        failed_until_(meta_.chunks().size()) {}

  [[nodiscard]] const erofs::BlobInfo& info() const override { return info_; }
  [[nodiscard]] const std::string& path() const override { return path_; }
  [[nodiscard]] int fd() const override { return fd_.get(); }
  [[nodiscard]] std::uint64_t size() const override { return info_.uncompressed_size; }
  [[nodiscard]] std::uint64_t chunk_count() const override { return state_.size(); }

  [[nodiscard]] std::uint64_t ready_chunks() const override {
    std::lock_guard lk(mu_);
    return present_;
  }

  [[nodiscard]] bool complete() const override {
    std::lock_guard lk(mu_);
    return present_ == state_.size();
  }

  [[nodiscard]] bool on_complete(std::function<void()> fn) override {
    std::lock_guard lk(mu_);
    if (present_ == state_.size()) {
      return false;
    }
    on_complete_.push_back(std::move(fn));
    return true;
  }

  [[nodiscard]] bool ready(std::uint64_t off, std::uint64_t len) const override {
    if (len == 0) {
      return true;
    }
    if (off >= size()) {
      return false;
    }
    auto [first, last] = meta_.chunks_in_range(off, std::min(len, size() - off));
    FirstDemands fresh;
    auto tell = base::defer([&] { fresh.tell(); });  // after the unlock below
    std::lock_guard lk(mu_);
    bool all = true;
    for (std::uint32_t ci = first; ci < last; ++ci) {
      demand(ci, fresh);
      all = all && state_[ci] == ChunkState::kPresent;
    }
    return all;
  }

  void add_demand_listener(std::weak_ptr<DemandListener> l) override {
    std::lock_guard lk(mu_);
    std::erase_if(listeners_, [](const auto& w) { return w.expired(); });
    listeners_.push_back(std::move(l));
  }

  base::Status fill(std::uint64_t off, std::uint64_t len, int write_fd) override;

  [[nodiscard]] std::vector<Demand> demanded_chunks() const override {
    std::vector<Demand> out;
    std::lock_guard lk(mu_);
    for (std::uint32_t ci = 0; ci < demanded_.size(); ++ci) {
      if (demanded_[ci] != 0) {
        out.push_back(Demand{ci, demanded_[ci]});
      }
    }
    std::sort(out.begin(), out.end(),
              [](const Demand& a, const Demand& b) { return a.seq < b.seq; });
    return out;
  }

  // A prefetch list's chunks in fetch order: known indexes with a bootstrap digest,
  // once each (the first time listed), in list order: the order the workload needs
  // them when the list was recorded by first demand (`accessed`).
  [[nodiscard]] std::vector<std::uint32_t> prefetch_order(std::vector<std::uint32_t> cis) const {
    const auto& chunks = meta_.chunks();
    std::unordered_set<std::uint32_t> seen(cis.size());
    std::erase_if(cis, [&](std::uint32_t ci) {
      return ci >= chunks.size() || !has_digest_[ci] || !seen.insert(ci).second;
    });
    return cis;
  }
  [[nodiscard]] std::uint64_t compressed_size(std::uint32_t ci) const {
    return meta_.chunks()[ci].compressed_size;
  }
  [[nodiscard]] std::uint64_t compressed_offset(std::uint32_t ci) const {
    return meta_.chunks()[ci].compressed_offset;
  }
  [[nodiscard]] std::uint64_t compressed_end(std::uint32_t ci) const {
    return compressed_offset(ci) + compressed_size(ci);
  }
  // Prefetch-list jobs of this blob with chunks not yet handed to a worker. While
  // there are any, fills do not widen: the list says what the workload reads next,
  // widening would spend the bandwidth on neighbours nobody asked for.
  void list_pending(int delta) { lists_pending_.fetch_add(delta, std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t batch() const { return batch_; }
  // A read of this blob timed out less than kFailHold ago: the backend is stalling.
  [[nodiscard]] bool failing() const {
    std::lock_guard lk(mu_);
    return std::chrono::steady_clock::now() < failing_until_;
  }
  [[nodiscard]] bool absent(std::uint32_t ci) const {
    std::lock_guard lk(mu_);
    return state_[ci] == ChunkState::kAbsent;
  }

  // Rebuild chunk readiness from the sparse file's data extents.
  base::Status scan();

  // Prefetch: the next chunks from *cursor on that are absent, about one batch of
  // uncompressed bytes; advances *cursor past them. Empty when the blob is done.
  std::vector<std::uint32_t> next_absent(std::uint32_t* cursor, std::uint64_t* compressed);
  // Fetch those of cis that are still absent (no waiting on others' fetches).
  // Returns the uncompressed bytes made present.
  base::Result<std::uint64_t> prefetch_chunks(const std::vector<std::uint32_t>& cis);

  // For the prefetcher's log: one warning per blob.
  bool first_prefetch_error() { return !prefetch_warned_.exchange(true); }

 private:
  struct Round {
    std::vector<std::uint32_t> cis;  // ci order
    std::shared_ptr<Flight> flight;
  };

  // Under mu_: claim the absent chunks of cis into rounds. When req_flight is given,
  // it gets the flight (ours or someone else's) of each chunk of cis[0, size) that is
  // not present, the chunks the caller must wait for.
  std::vector<Round> claim(const std::vector<std::uint32_t>& cis,
                           std::vector<std::shared_ptr<Flight>>* req_flight);
  // Fetch, verify, decompress and write one claimed round; publish the result.
  // Returns the uncompressed bytes made present.
  std::uint64_t run_round(const Round& round, int write_fd, Deadline deadline);
  base::Status write_chunk(int fd, const erofs::ChunkMeta& c, base::Bytes data);

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
  std::atomic<bool> prefetch_warned_{false};
  std::atomic<int> lists_pending_{0};

  mutable std::mutex mu_;
  std::condition_variable cv_;  // some flight of this blob is done
  std::vector<ChunkState> state_;
  std::vector<std::shared_ptr<Flight>> flight_;  // set while kInFlight
  std::uint64_t present_ = 0;
  // First demands found under mu_, told to the listeners after it is released.
  struct FirstDemands {
    std::vector<std::uint32_t> cis;
    std::vector<std::shared_ptr<DemandListener>> listeners;
    void tell() {
      for (const auto& l : listeners) {
        for (std::uint32_t ci : cis) {
          l->first_demand(ci);
        }
      }
    }
  };
  // Under mu_: stamp ci's first demand (CachedBlob::demanded_chunks), and note it for
  // the listeners.
  void demand(std::uint32_t ci, FirstDemands& fresh) const {
    if (demanded_[ci] != 0) {
      return;
    }
    demanded_[ci] = shared_->demand_seq.fetch_add(1, std::memory_order_relaxed) + 1;
    if (listeners_.empty()) {
      return;
    }
    if (fresh.cis.empty()) {
      for (const auto& w : listeners_) {
        if (auto l = w.lock()) {
          fresh.listeners.push_back(std::move(l));
        }
      }
    }
    fresh.cis.push_back(ci);
  }
  mutable std::vector<std::weak_ptr<DemandListener>> listeners_;  // guarded by mu_

  // by ci: the Demand::seq of its first ready() or fill(), 0 = never asked for
  mutable std::vector<std::uint64_t> demanded_;
  // by ci: until when a failed backend read fails fills at once (kFailHold)
  std::vector<std::chrono::steady_clock::time_point> failed_until_;
  // the latest of failed_until_: while it lasts, prefetch lists start no read
  std::chrono::steady_clock::time_point failing_until_{};
  std::optional<base::Error> last_backend_error_;
  std::vector<std::function<void()>> on_complete_;  // run once when present_ reaches all
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

base::Status BlobImpl::scan() {
  // Data extents of the file, in order. The filesystem reports them at block
  // granularity (or page granularity on tmpfs): a chunk's partial last block counts
  // as data once written, which is right since chunks start 4 KiB aligned.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> extents;
  std::uint64_t off = 0;
  while (off < size()) {
    const off_t d = ::lseek(fd_.get(), static_cast<off_t>(off), SEEK_DATA);
    if (d < 0) {
      if (errno == ENXIO) {
        break;
      }
      return base::errno_error("SEEK_DATA " + path_);
    }
    const off_t h = ::lseek(fd_.get(), d, SEEK_HOLE);
    if (h < 0) {
      return base::errno_error("SEEK_HOLE " + path_);
    }
    extents.emplace_back(static_cast<std::uint64_t>(d), static_cast<std::uint64_t>(h));
    off = static_cast<std::uint64_t>(h);
  }
  std::lock_guard lk(mu_);
  present_ = 0;
  std::size_t e = 0;
  const auto& chunks = meta_.chunks();
  for (std::size_t ci = 0; ci < chunks.size(); ++ci) {
    const std::uint64_t start = chunks[ci].uncompressed_offset;
    const std::uint64_t end = start + chunks[ci].uncompressed_size;
    while (e < extents.size() && extents[e].second <= start) {
      ++e;
    }
    const bool present =
        e < extents.size() && extents[e].first <= start && extents[e].second >= end;
    state_[ci] = present ? ChunkState::kPresent : ChunkState::kAbsent;
    present_ += present ? 1 : 0;
  }
  return {};
}

std::vector<BlobImpl::Round> BlobImpl::claim(const std::vector<std::uint32_t>& cis,
                                             std::vector<std::shared_ptr<Flight>>* req_flight) {
  const auto& chunks = meta_.chunks();
  const std::uint64_t round_limit = batch_ * kBatchesPerRound;
  std::vector<Round> rounds;
  std::uint64_t round_bytes = 0;
  for (std::size_t i = 0; i < cis.size(); ++i) {
    const std::uint32_t ci = cis[i];
    switch (state_[ci]) {
      case ChunkState::kPresent:
        break;
      case ChunkState::kInFlight:
        if (req_flight != nullptr && i < req_flight->size()) {
          (*req_flight)[i] = flight_[ci];
        }
        break;
      case ChunkState::kAbsent:
        if (rounds.empty() || round_bytes + chunks[ci].compressed_size > round_limit) {
          rounds.push_back(Round{{}, std::make_shared<Flight>()});
          round_bytes = 0;
        }
        rounds.back().cis.push_back(ci);
        round_bytes += chunks[ci].compressed_size;
        state_[ci] = ChunkState::kInFlight;
        flight_[ci] = rounds.back().flight;
        if (req_flight != nullptr && i < req_flight->size()) {
          (*req_flight)[i] = flight_[ci];
        }
        break;
    }
  }
  return rounds;
}

base::Status BlobImpl::write_chunk(int fd, const erofs::ChunkMeta& c, base::Bytes data) {
  // Rest first, head block last: see the crash-safety note at the top of the file.
  const std::uint64_t head = head_len(c);
  if (data.size() > head) {
    CFN_TRY(base::pwrite_full(fd, data.subspan(head), c.uncompressed_offset + head));
  }
  return base::pwrite_full(fd, data.first(head), c.uncompressed_offset);
}

std::uint64_t BlobImpl::run_round(const Round& round, int write_fd, Deadline deadline) {
  const auto& chunks = meta_.chunks();
  CacheMetrics& m = shared_->metrics;
  const int fd = write_fd >= 0 ? write_fd : fd_.get();

  // Merge compressed-adjacent chunks into one read each, no read beyond a batch, so
  // a registry backend can run the reads of a round in parallel.
  std::vector<std::uint32_t> order = round.cis;
  std::sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
    return chunks[a].compressed_offset < chunks[b].compressed_offset;
  });
  std::uint64_t total = 0;
  for (std::uint32_t ci : order) {
    total += chunks[ci].compressed_size;
  }
  std::vector<std::byte> buf(total);
  struct Run {
    std::size_t first = 0;  // into order
    std::size_t last = 0;
    std::uint64_t buf_off = 0;
  };
  std::vector<Run> runs;
  std::vector<BackendRead> reads;
  std::uint64_t pos = 0;
  for (std::size_t i = 0; i < order.size(); ++i) {
    const erofs::ChunkMeta& c = chunks[order[i]];
    if (!reads.empty()) {
      BackendRead& r = reads.back();
      if (r.offset + r.out.size() == c.compressed_offset &&
          r.out.size() + c.compressed_size <= batch_) {
        r.out = base::MutableBytes(r.out.data(), r.out.size() + c.compressed_size);
        runs.back().last = i + 1;
        pos += c.compressed_size;
        continue;
      }
    }
    BackendRead r;
    r.offset = c.compressed_offset;
    r.out = base::MutableBytes(buf.data() + pos, c.compressed_size);
    reads.push_back(std::move(r));
    runs.push_back(Run{i, i + 1, pos});
    pos += c.compressed_size;
  }
  backend_->read(info_.id, reads, deadline);
  m.backend_requests.fetch_add(reads.size(), std::memory_order_relaxed);

  thread_local std::vector<std::byte> plain;
  std::vector<std::uint32_t> done;
  std::map<std::uint32_t, base::Error> errors;
  std::vector<std::uint32_t> backend_failed;
  std::optional<base::Error> backend_error;
  std::uint64_t filled = 0;
  auto fail = [&](std::uint32_t ci, base::Error e) { errors.emplace(ci, std::move(e)); };
  for (std::size_t r = 0; r < runs.size(); ++r) {
    if (!reads[r].result) {
      // "Fails for good": the backend did its own retries.
      const base::Error e{
          EIO,
          fmt::format("blob {}: {} at {} (+{}): {}", info_.id, backend_->describe(),
                      reads[r].offset, reads[r].out.size(), reads[r].result.error().to_string())};
      // Only a timeout is held (kFailHold): it is the failure that costs the
      // reader the whole budget again; a refused connection fails fast anyway, and
      // the next read must see a registry that is back at once.
      const bool timed_out = reads[r].result.error().code == ETIMEDOUT;
      for (std::size_t i = runs[r].first; i < runs[r].last; ++i) {
        fail(order[i], e);
        if (timed_out) {
          backend_failed.push_back(order[i]);
        }
      }
      if (timed_out) {
        backend_error = e;
      }
      continue;
    }
    m.backend_bytes.fetch_add(reads[r].out.size(), std::memory_order_relaxed);
    std::uint64_t off = runs[r].buf_off;
    for (std::size_t i = runs[r].first; i < runs[r].last; ++i) {
      const std::uint32_t ci = order[i];
      const erofs::ChunkMeta& c = chunks[ci];
      const base::Bytes stored(buf.data() + off, c.compressed_size);
      off += c.compressed_size;
      if (!has_digest_[ci]) {
        fail(ci, base::Error{EBADMSG, fmt::format("blob {}: chunk {} has no bootstrap digest",
                                                  info_.id, ci)});
        continue;
      }
      plain.resize(c.uncompressed_size);
      auto st = erofs::decode_chunk(info_, c, stored, digests_[ci], plain);
      if (!st) {
        m.verify_failures.fetch_add(1, std::memory_order_relaxed);
        fail(ci, std::move(st).error().wrap(fmt::format("blob {} chunk {}", info_.id, ci)));
        continue;
      }
      st = write_chunk(fd, c, plain);
      if (!st) {
        // Best effort: leave no data a restart could mistake for the chunk.
        (void)::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                          static_cast<off_t>(c.uncompressed_offset),
                          static_cast<off_t>(c.uncompressed_size));
        fail(ci, std::move(st).error().wrap(fmt::format("blob {} chunk {}: write", info_.id, ci)));
        continue;
      }
      done.push_back(ci);
      filled += c.uncompressed_size;
    }
  }

  // Publish. Every byte of the chunks in `done` was written above (pwrite returned),
  // so a reader woken here, or a front end answering its kernel, sees them.
  std::vector<std::function<void()>> completed;
  {
    std::lock_guard lk(mu_);
    for (std::uint32_t ci : round.cis) {
      state_[ci] = ChunkState::kAbsent;  // a failed chunk stays absent: the next fill retries
      flight_[ci].reset();
    }
    for (std::uint32_t ci : done) {
      state_[ci] = ChunkState::kPresent;
    }
    const auto hold = std::chrono::steady_clock::now() + kFailHold;
    for (std::uint32_t ci : backend_failed) {
      failed_until_[ci] = hold;
      failing_until_ = hold;
    }
    if (backend_error) {
      last_backend_error_ = std::move(backend_error);
    }
    present_ += done.size();
    round.flight->done = true;
    round.flight->errors = std::move(errors);
    cv_.notify_all();
    if (present_ == state_.size()) {
      completed.swap(on_complete_);  // only one round can be the one that completes
    }
  }
  for (auto& fn : completed) {
    fn();
  }
  return filled;
}

base::Status BlobImpl::fill(std::uint64_t off, std::uint64_t len, int write_fd) {
  if (len == 0) {
    return {};
  }
  if (off >= size()) {
    return base::errorf(ERANGE, "blob {}: fill at {} of a {} byte blob", info_.id, off, size());
  }
  const auto t0 = std::chrono::steady_clock::now();
  CacheMetrics& m = shared_->metrics;
  m.fill_requests.fetch_add(1, std::memory_order_relaxed);
  len = std::min(len, size() - off);
  const auto [first, last] = meta_.chunks_in_range(off, len);
  bool any_absent = false;  // else every chunk is present or someone else's fetch
  {
    // Listeners hear of first demands once the lock is released, before the fetch (a
    // file readahead they queue then keeps this fill from widening).
    FirstDemands fresh;
    auto tell = base::defer([&] { fresh.tell(); });
    std::lock_guard lk(mu_);
    bool all = true;
    for (std::uint32_t ci = first; ci < last; ++ci) {
      demand(ci, fresh);
      all = all && state_[ci] == ChunkState::kPresent;
      any_absent = any_absent || state_[ci] == ChunkState::kAbsent;
    }
    if (all) {
      m.hits.fetch_add(1, std::memory_order_relaxed);
      record_latency(m, std::chrono::steady_clock::now() - t0);
      return {};
    }
    for (std::uint32_t ci = first; ci < last; ++ci) {
      // In flight too: a fetch that made a fill wait its whole timeout in vain.
      if (state_[ci] != ChunkState::kPresent && failed_until_[ci] > t0 && last_backend_error_) {
        m.misses.fetch_add(1, std::memory_order_relaxed);
        return base::Unexpected(last_backend_error_->wrap(
            fmt::format("chunk {} failed less than {} s ago", ci, kFailHold.count())));
      }
    }
  }
  m.misses.fetch_add(1, std::memory_order_relaxed);
  OnDemandScope scope(*shared_);
  // The reader's deadline: our own fetch is cut there (the backend's retries
  // included), and so is the wait for fetches of others.
  const auto read_timeout = shared_->read_timeout;
  const Deadline deadline = read_timeout.count() > 0 ? t0 + read_timeout : kNoDeadline;

  // Widen forward to a batch of uncompressed bytes, never beyond the blob. Chunks of
  // the widening that someone else is fetching are not waited for. A fill that only
  // waits for others' fetches (a prefetch list's, say) does not widen: that would
  // fetch bytes nobody asked for before it even looks at its own chunks. Nor does a
  // fill while a prefetch list of the blob is pending: the list names what the
  // workload reads next, and the widening's neighbours would take its bandwidth.
  const auto& chunks = meta_.chunks();
  std::uint32_t wlast = last;
  const std::uint64_t base_off = chunks[first].uncompressed_offset;
  const bool widen = any_absent && lists_pending_.load(std::memory_order_relaxed) == 0;
  while (widen && wlast < chunks.size() &&
         chunks[wlast].uncompressed_offset + chunks[wlast].uncompressed_size - base_off <= batch_) {
    ++wlast;
  }
  std::vector<std::uint32_t> cis(wlast - first);
  for (std::uint32_t i = 0; i < cis.size(); ++i) {
    cis[i] = first + i;
  }

  // Race this resolves (two fills of the same chunk):
  //   CPU1: lock; chunk absent -> in-flight(F1); unlock; fetch ...; lock; present; done
  //   CPU2:        lock; chunk in-flight(F1) -> wait on F1 ...............; wakes; ok
  // The chunk is fetched once; CPU2 never sees a half-written chunk as present.
  std::vector<std::shared_ptr<Flight>> req_flight(last - first);
  std::vector<Round> rounds;
  {
    std::lock_guard lk(mu_);
    rounds = claim(cis, &req_flight);
  }
  if (!rounds.empty()) {
    // Prefetch-list workers start no new read while this runs: the reader waits for
    // these bytes, so they get the bandwidth.
    std::lock_guard slk(shared_->mu);
    ++shared_->fetching;
  }
  for (const Round& r : rounds) {
    run_round(r, write_fd, deadline);
  }
  if (!rounds.empty()) {
    std::lock_guard slk(shared_->mu);
    if (--shared_->fetching == 0) {
      shared_->cv.notify_all();
    }
  }

  // Each requested chunk is present now, or its flight says why not.
  std::optional<base::Error> err;
  std::unique_lock lk(mu_);
  for (std::uint32_t i = 0; i < req_flight.size(); ++i) {
    const auto& f = req_flight[i];
    if (!f) {
      continue;  // was present already
    }
    if (deadline == kNoDeadline) {
      cv_.wait(lk, [&] { return f->done; });
    } else if (!cv_.wait_until(lk, deadline, [&] { return f->done; })) {
      // Someone else's fetch (a prefetch's, or a fill's that started earlier and
      // still runs) is not done in time: it goes on for later fills, this one fails.
      const base::Error e{EIO, fmt::format("blob {}: chunk {} not fetched within the read "
                                           "timeout of {} ms",
                                           info_.id, first + i, read_timeout.count())};
      failed_until_[first + i] = std::chrono::steady_clock::now() + kFailHold;
      failing_until_ = failed_until_[first + i];
      last_backend_error_ = e;
      if (!err) {
        err = e;
      }
      continue;
    }
    if (!err && state_[first + i] != ChunkState::kPresent) {
      // A failed flight carries its error; a chunk absent after a good flight is one
      // that someone else's failed fetch cleared and a third fill is retrying.
      auto e = f->error_of(first + i);
      err =
          e ? *e
            : base::Error{EAGAIN, fmt::format("blob {}: chunk {} not ready", info_.id, first + i)};
    }
  }
  lk.unlock();
  record_latency(m, std::chrono::steady_clock::now() - t0);
  if (err) {
    return base::Unexpected(std::move(*err));
  }
  return {};
}

std::vector<std::uint32_t> BlobImpl::next_absent(std::uint32_t* cursor, std::uint64_t* compressed) {
  const auto& chunks = meta_.chunks();
  std::vector<std::uint32_t> out;
  *compressed = 0;
  std::uint64_t uspan = 0;
  std::lock_guard lk(mu_);
  while (*cursor < chunks.size() && uspan < batch_) {
    const std::uint32_t ci = (*cursor)++;
    if (state_[ci] != ChunkState::kAbsent || !has_digest_[ci]) {
      continue;
    }
    out.push_back(ci);
    *compressed += chunks[ci].compressed_size;
    uspan += chunks[ci].uncompressed_size;
  }
  return out;
}

base::Result<std::uint64_t> BlobImpl::prefetch_chunks(const std::vector<std::uint32_t>& cis) {
  std::vector<Round> rounds;
  {
    std::lock_guard lk(mu_);
    rounds = claim(cis, nullptr);
  }
  // A prefetch holds its chunks no longer than a reader would wait for them: cut at
  // the read timeout like a fill's own fetch, a read stuck on a stalled registry
  // leaves its chunks to the readers' own fetches once the registry is back.
  const auto read_timeout = shared_->read_timeout;
  const Deadline deadline =
      read_timeout.count() > 0 ? std::chrono::steady_clock::now() + read_timeout : kNoDeadline;
  std::uint64_t filled = 0;
  std::optional<base::Error> err;
  for (const Round& r : rounds) {
    filled += run_round(r, -1, deadline);
    std::lock_guard lk(mu_);
    if (!err && !r.flight->errors.empty()) {
      err = r.flight->errors.begin()->second;
    }
  }
  if (err) {
    return base::Unexpected(std::move(*err));
  }
  return filled;
}

// Token bucket over compressed bytes: capacity one batch, refilled at rate bytes/s.
// take() may run into debt; the caller sleeps for the returned time before fetching.
class TokenBucket {
 public:
  TokenBucket(std::uint64_t rate, std::uint64_t capacity)
      : rate_(static_cast<double>(rate)),
        capacity_(static_cast<double>(capacity)),
        tokens_(capacity_),
        last_(std::chrono::steady_clock::now()) {}

  std::chrono::nanoseconds take(std::uint64_t n) {
    const auto now = std::chrono::steady_clock::now();
    tokens_ =
        std::min(capacity_, tokens_ + rate_ * std::chrono::duration<double>(now - last_).count());
    last_ = now;
    tokens_ -= static_cast<double>(n);
    if (tokens_ >= 0) {
      return std::chrono::nanoseconds(0);
    }
    return std::chrono::nanoseconds(static_cast<std::int64_t>(-tokens_ / rate_ * 1e9));
  }

 private:
  double rate_;
  double capacity_;
  double tokens_;
  std::chrono::steady_clock::time_point last_;
};

class BlobCacheImpl final : public BlobCache {
 public:
  explicit BlobCacheImpl(CacheOptions options)
      : options_(std::move(options)), shared_(std::make_shared<Shared>()) {
    shared_->read_timeout = options_.read_timeout;
    if (options_.prefetch_bandwidth > 0) {
      prefetcher_ = std::thread([this] { prefetch_loop(); });
    }
    for (int i = 0; i < kPrefetchListWorkers; ++i) {
      list_workers_.emplace_back([this] { list_loop(); });
    }
  }

  ~BlobCacheImpl() override {
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

  BlobCacheImpl(const BlobCacheImpl&) = delete;
  BlobCacheImpl& operator=(const BlobCacheImpl&) = delete;

  base::Result<std::shared_ptr<CachedBlob>> open(const erofs::BlobInfo& info,
                                                 const std::vector<erofs::ChunkRecord>& chunks,
                                                 std::shared_ptr<Backend> backend) override;

  void prefetch(const std::shared_ptr<CachedBlob>& blob) override {
    if (options_.prefetch_bandwidth == 0 || !blob) {
      return;
    }
    auto impl = std::dynamic_pointer_cast<BlobImpl>(blob);
    if (!impl) {
      return;
    }
    std::lock_guard lk(shared_->mu);
    queue_.push_back(std::move(impl));
    shared_->cv.notify_all();
  }

  void prefetch_chunks(const std::shared_ptr<CachedBlob>& blob, std::vector<std::uint32_t> cis,
                       bool readahead) override {
    auto impl = std::dynamic_pointer_cast<BlobImpl>(blob);
    if (!impl) {
      return;
    }
    cis = impl->prefetch_order(std::move(cis));
    if (cis.empty()) {
      return;
    }
    std::lock_guard lk(shared_->mu);
    impl->list_pending(1);
    list_jobs_.push_back(ListJob{std::move(impl), std::move(cis), 0, readahead});
    shared_->cv.notify_all();
  }

  CacheMetrics& metrics() override { return shared_->metrics; }

 private:
  struct ListJob {
    std::shared_ptr<BlobImpl> blob;
    std::vector<std::uint32_t> cis;  // fetch order
    std::size_t next = 0;            // first not yet handed to a worker
    bool readahead = false;          // a file's readahead, not a prefetch list
  };
  void list_loop();
  // Background prefetch waits while any of this is going on.
  [[nodiscard]] bool busy() const {
    return shared_->ondemand > 0 || !list_jobs_.empty() || list_running_ > 0;
  }

  base::Result<std::vector<std::byte>> load_meta(const erofs::BlobInfo& info, Backend& backend);
  // The slow part of a first open, with no lock held: the chunk-info table (local copy
  // or backend), its check against the bootstrap, the cache file and its scan.
  base::Result<std::shared_ptr<BlobImpl>> load(const erofs::BlobInfo& info,
                                               const std::vector<erofs::ChunkRecord>& records,
                                               std::shared_ptr<Backend> backend);
  void prefetch_loop();

  const CacheOptions options_;
  std::shared_ptr<Shared> shared_;
  // Guards blobs_ and loading_, never held across I/O: a slow registry holds up only
  // the opens of its own blob, not those of other images.
  std::mutex open_mu_;
  std::condition_variable open_cv_;  // a load of loading_ ended
  std::map<std::string, std::shared_ptr<BlobImpl>> blobs_;
  // Blob ids whose first open is loading them (one load per id at a time; other opens
  // of the id wait for it).
  std::set<std::string> loading_;
  std::deque<std::shared_ptr<BlobImpl>> queue_;  // guarded by shared_->mu
  std::thread prefetcher_;
  std::deque<ListJob> list_jobs_;  // guarded by shared_->mu
  int list_running_ = 0;           // reads of list_jobs_ under way; guarded by shared_->mu
  std::vector<std::thread> list_workers_;
};

// A prefetch-list worker: takes the next range read of the oldest job (the next listed
// chunk still absent, with the chunks after it in the list that continue it in the
// blob file, up to a batch) and fetches it; kPrefetchListWorkers of these keep that
// many reads in flight. A read per take, not a batch of scattered chunks: a fill that
// waits for a listed chunk waits for that one read only (a flight ends with its
// round). No new take while a fill fetches: the reader waiting for it gets the
// bandwidth (the list's reads already in flight still share it).
void BlobCacheImpl::list_loop() {
  std::unique_lock lk(shared_->mu);
  while (!shared_->stop) {
    // On-demand fills first: a reader is waiting for theirs.
    if (list_jobs_.empty() || shared_->fetching > 0) {
      shared_->cv.wait(lk);
      continue;
    }
    ListJob& job = list_jobs_.front();
    std::shared_ptr<BlobImpl> blob = job.blob;
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
      blob->list_pending(-1);
      list_jobs_.pop_front();
      continue;
    }
    // One range read: the next listed chunk, and those after it in the list that
    // continue it in the blob file, up to a batch.
    std::vector<std::uint32_t> slice{job.cis[job.next++]};
    std::uint64_t bytes = blob->compressed_size(slice.back());
    while (job.next < job.cis.size() &&
           blob->compressed_offset(job.cis[job.next]) == blob->compressed_end(slice.back()) &&
           bytes + blob->compressed_size(job.cis[job.next]) <= blob->batch() &&
           blob->absent(job.cis[job.next])) {
      slice.push_back(job.cis[job.next++]);
      bytes += blob->compressed_size(slice.back());
    }
    if (job.next == job.cis.size()) {
      blob->list_pending(-1);
      list_jobs_.pop_front();
    }
    ++list_running_;
    lk.unlock();
    auto filled = blob->prefetch_chunks(slice);
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

base::Result<std::vector<std::byte>> BlobCacheImpl::load_meta(const erofs::BlobInfo& info,
                                                              Backend& backend) {
  const std::uint64_t len = info.ci_compressed_size + erofs::kBlobMetaHeaderSize;
  if (info.ci_compressed_size > kMaxMetaBytes ||
      (info.compressed_size != 0 && !base::in_bounds(info.ci_offset, len, info.compressed_size))) {
    return base::errorf(EBADMSG, "blob {}: chunk-info region [{}, +{}) outside the blob", info.id,
                        info.ci_offset, len);
  }
  const std::string path = options_.cache_dir + "/" + info.id + ".meta";
  auto local = base::read_file(path);
  if (local && local->size() == len) {
    return std::move(*local);
  }
  std::vector<std::byte> bytes(len);
  BackendRead r;
  r.offset = info.ci_offset;
  r.out = bytes;
  // Under the read timeout like a fill: a stalled registry fails the bind in time.
  const auto read_timeout = options_.read_timeout;
  const Deadline deadline =
      read_timeout.count() > 0 ? std::chrono::steady_clock::now() + read_timeout : kNoDeadline;
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
      return std::shared_ptr<CachedBlob>(it->second);
    }
    if (!backend) {
      return base::errorf(EINVAL, "blob {}: no backend", info.id);
    }
    if (!loading_.contains(info.id)) {
      break;
    }
    // Another open loads this blob: wait for that one (it is bounded by the read
    // timeout). If it failed, this open tries again with its own backend.
    open_cv_.wait(lk, [&] { return !loading_.contains(info.id); });
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
  blobs_.emplace(info.id, *loaded);
  return std::shared_ptr<CachedBlob>(std::move(*loaded));
}

base::Result<std::shared_ptr<BlobImpl>> BlobCacheImpl::load(
    const erofs::BlobInfo& info, const std::vector<erofs::ChunkRecord>& records,
    std::shared_ptr<Backend> backend) {
  CFN_ASSIGN_OR_RETURN(auto meta_bytes, load_meta(info, *backend));
  auto meta = erofs::BlobMeta::parse(info, meta_bytes);
  if (!meta) {
    // A corrupt local copy is dropped so the next open reads the backend again.
    (void)::unlink((options_.cache_dir + "/" + info.id + ".meta").c_str());
    return base::Unexpected(std::move(meta).error().wrap("blob " + info.id + " meta"));
  }

  // The bootstrap is the trust root: the blob meta must agree with every chunk
  // record of this blob, place and size, or the blob is refused.
  const auto& cm = meta->chunks();
  std::vector<base::Digest> digests(cm.size());
  std::vector<bool> has_digest(cm.size(), false);
  auto refuse = [&](std::string why) {
    (void)::unlink((options_.cache_dir + "/" + info.id + ".meta").c_str());
    return base::make_error(EBADMSG, fmt::format("blob {}: {}", info.id, why));
  };
  for (const erofs::ChunkRecord& r : records) {
    if (r.blob_index != info.index) {
      continue;
    }
    if (r.index >= cm.size()) {
      return refuse(fmt::format("chunk record ci {} beyond the {} chunks of the blob meta", r.index,
                                cm.size()));
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

  std::error_code ec;
  std::filesystem::create_directories(options_.cache_dir, ec);
  if (ec) {
    return base::errorf(ec.value(), "create {}: {}", options_.cache_dir, ec.message());
  }
  const std::string meta_path = options_.cache_dir + "/" + info.id + ".meta";
  if (::access(meta_path.c_str(), F_OK) != 0) {
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
  std::uint64_t batch = std::max(options_.batch_size, kMinBatch);
  auto blob = std::make_shared<BlobImpl>(shared_, info, std::move(*meta), std::move(digests),
                                         std::move(has_digest), std::move(backend), path,
                                         std::move(fd), batch);
  CFN_TRY(blob->scan());
  return blob;
}

void BlobCacheImpl::prefetch_loop() {
  TokenBucket bucket(options_.prefetch_bandwidth, std::max(options_.batch_size, kMinBatch));
  std::unique_lock lk(shared_->mu);
  while (!shared_->stop) {
    if (queue_.empty()) {
      shared_->cv.wait(lk);
      continue;
    }
    std::shared_ptr<BlobImpl> blob = queue_.front();
    std::uint32_t cursor = 0;
    while (!shared_->stop) {
      // Always behind on-demand fills and prefetch lists: no new step while one is
      // waiting or fetching.
      shared_->cv.wait(lk, [&] { return shared_->stop || !busy(); });
      if (shared_->stop) {
        break;
      }
      lk.unlock();
      std::uint64_t compressed = 0;
      auto cis = blob->next_absent(&cursor, &compressed);
      if (cis.empty()) {
        lk.lock();
        break;
      }
      const auto wait = bucket.take(compressed);
      lk.lock();
      if (wait.count() > 0) {
        shared_->cv.wait_for(lk, wait, [&] { return shared_->stop; });
        if (shared_->stop) {
          break;
        }
        // An on-demand fill may have started while we slept.
        shared_->cv.wait(lk, [&] { return shared_->stop || !busy(); });
        if (shared_->stop) {
          break;
        }
      }
      lk.unlock();
      auto filled = blob->prefetch_chunks(cis);
      if (filled) {
        shared_->metrics.prefetch_bytes.fetch_add(*filled, std::memory_order_relaxed);
      } else if (blob->first_prefetch_error()) {
        spdlog::warn("prefetch of blob {}: {} (failed chunks are left to on-demand fills)",
                     blob->info().id, filled.error().to_string());
      }
      lk.lock();
    }
    if (!queue_.empty() && queue_.front() == blob) {
      queue_.pop_front();
    }
  }
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
