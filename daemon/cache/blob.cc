// SPDX-License-Identifier: Apache-2.0
// A blob's chunk states and fills (see blob.h).
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
#include "daemon/cache/blob.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <unordered_set>
#include <utility>

#include "base/defer.h"
#include "base/file.h"
#include "base/log.h"

namespace cfnd::cache {
namespace {

constexpr std::uint64_t kBlock = 4096;
// A huge fill (or a prefetch step) is fetched in rounds of at most this many batches,
// so its buffers stay bounded and early chunks are released early.
constexpr std::uint64_t kBatchesPerRound = 8;

// The head block of a chunk: written last, so it is data only once the rest is.
std::uint64_t head_len(const erofs::ChunkMeta& c) {
  return std::min<std::uint64_t>(kBlock, c.uncompressed_size);
}

void record_latency(CacheMetrics& m, std::chrono::steady_clock::duration d) {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
  m.fill_latency.record(static_cast<std::uint64_t>(std::max<std::int64_t>(0, ns)));
}

}  // namespace

std::optional<base::Error> Blob::Flight::error_of(std::uint32_t ci) const {
  auto it = errors.find(ci);
  return it == errors.end() ? std::nullopt : std::optional<base::Error>(it->second);
}

void Blob::FirstDemands::tell() const {
  for (const auto& l : listeners) {
    for (std::uint32_t ci : cis) {
      l->first_demand(ci);
    }
  }
}

Blob::Blob(std::shared_ptr<Shared> shared, erofs::BlobInfo info, erofs::BlobMeta meta,
           std::vector<base::Digest> digests, std::vector<bool> has_digest,
           std::shared_ptr<Backend> backend, std::string path, base::UniqueFd fd,
           std::uint64_t batch, std::uint64_t window)
    : shared_(std::move(shared)),
      info_(std::move(info)),
      meta_(std::move(meta)),
      digests_(std::move(digests)),
      has_digest_(std::move(has_digest)),
      backend_(std::move(backend)),
      path_(std::move(path)),
      fd_(std::move(fd)),
      batch_(batch),
      window_(std::max(batch, window)),
      state_(meta_.chunks().size(), ChunkState::kAbsent),
      flight_(meta_.chunks().size()),
      demanded_(meta_.chunks().size(), 0),
      failed_until_(meta_.chunks().size()) {
  touch();
}

Blob::~Blob() {
  // fd_ is still open here (members go after the body).
  for (auto& fn : on_close_) {
    fn();
  }
}

void Blob::on_close(std::function<void()> fn) {
  std::lock_guard lk(mu_);
  on_close_.push_back(std::move(fn));
}

std::uint64_t Blob::ready_chunks() const {
  std::lock_guard lk(mu_);
  return present_;
}

bool Blob::complete() const {
  std::lock_guard lk(mu_);
  return present_ == state_.size();
}

bool Blob::on_complete(std::function<void()> fn) {
  std::lock_guard lk(mu_);
  if (present_ == state_.size()) {
    return false;
  }
  on_complete_.push_back(std::move(fn));
  return true;
}

bool Blob::ready(std::uint64_t off, std::uint64_t len) const {
  if (len == 0) {
    return true;
  }
  if (off >= size()) {
    return false;
  }
  touch();
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

void Blob::add_demand_listener(std::weak_ptr<DemandListener> l) {
  std::lock_guard lk(mu_);
  std::erase_if(listeners_, [](const auto& w) { return w.expired(); });
  listeners_.push_back(std::move(l));
}

std::vector<CachedBlob::Demand> Blob::demanded_chunks() const {
  std::vector<Demand> out;
  std::lock_guard lk(mu_);
  for (std::uint32_t ci = 0; ci < demanded_.size(); ++ci) {
    if (demanded_[ci] != 0) {
      out.push_back(Demand{ci, demanded_[ci]});
    }
  }
  std::sort(out.begin(), out.end(), [](const Demand& a, const Demand& b) { return a.seq < b.seq; });
  return out;
}

void Blob::demand(std::uint32_t ci, FirstDemands& fresh) const {
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

std::vector<std::uint32_t> Blob::prefetch_order(std::vector<std::uint32_t> cis) const {
  const auto& chunks = meta_.chunks();
  std::unordered_set<std::uint32_t> seen(cis.size());
  std::erase_if(cis, [&](std::uint32_t ci) {
    return ci >= chunks.size() || !has_digest_[ci] || !seen.insert(ci).second;
  });
  return cis;
}

bool Blob::failing() const {
  std::lock_guard lk(mu_);
  return shared_->now() < failing_until_;
}

bool Blob::absent(std::uint32_t ci) const {
  std::lock_guard lk(mu_);
  return state_[ci] == ChunkState::kAbsent;
}

base::Status Blob::scan() {
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

Blob::Check Blob::check(std::uint32_t first, std::uint32_t last,
                        std::chrono::steady_clock::time_point t0) {
  // Listeners hear of first demands once the lock is released, before the fetch (a
  // file readahead they queue then keeps this fill from widening).
  FirstDemands fresh;
  auto tell = base::defer([&] { fresh.tell(); });
  std::lock_guard lk(mu_);
  Check c;
  bool all = true;
  for (std::uint32_t ci = first; ci < last; ++ci) {
    demand(ci, fresh);
    all = all && state_[ci] == ChunkState::kPresent;
    c.any_absent = c.any_absent || state_[ci] == ChunkState::kAbsent;
  }
  if (all) {
    c.hit = true;
    return c;
  }
  for (std::uint32_t ci = first; ci < last; ++ci) {
    // In flight too: a fetch that made a fill wait its whole timeout in vain.
    if (state_[ci] != ChunkState::kPresent && failed_until_[ci] > t0 && last_backend_error_) {
      c.held = last_backend_error_->wrap(
          fmt::format("chunk {} failed less than {} s ago", ci, kFailHold.count()));
      return c;
    }
  }
  return c;
}

std::vector<std::uint32_t> Blob::widen(std::uint32_t first, std::uint32_t last,
                                       bool any_absent) const {
  // Read amplification: widen forward to the window (CacheOptions::amplify_io) of
  // uncompressed bytes, never beyond the blob. The builder lays files out in directory
  // order, so the chunks after a missed one are likely what the workload reads next
  // (the next module of a package); fetched in the same merged range read, they cost
  // no round trip of their own. Chunks of the widening that someone else is fetching
  // are not waited for. A fill that only waits for others' fetches (a prefetch list's,
  // say) does not widen: that would fetch bytes nobody asked for before it even looks
  // at its own chunks. Nor does a fill while a prefetch list of the blob is pending:
  // the list names what the workload reads next, and the widening's neighbours would
  // take its bandwidth.
  const bool wide = any_absent && lists_pending_.load(std::memory_order_relaxed) == 0;
  const std::uint32_t wlast = wide ? widen_forward(meta_.chunks(), first, last, window_) : last;
  std::vector<std::uint32_t> cis(wlast - first);
  for (std::uint32_t i = 0; i < cis.size(); ++i) {
    cis[i] = first + i;
  }
  return cis;
}

std::vector<Blob::Round> Blob::claim(const std::vector<std::uint32_t>& cis,
                                     std::vector<std::shared_ptr<Flight>>* req_flight,
                                     std::uint64_t max_read) {
  const auto& chunks = meta_.chunks();
  const std::uint64_t round_limit = std::max({batch_ * kBatchesPerRound, window_, max_read});
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

base::Status Blob::write_chunk(int fd, const erofs::ChunkMeta& c, base::Bytes data) {
  // Rest first, head block last: see the crash-safety note at the top of the file.
  const std::uint64_t head = head_len(c);
  if (data.size() > head) {
    CFN_TRY(shared_->file_io->pwrite(fd, data.subspan(head), c.uncompressed_offset + head));
  }
  return shared_->file_io->pwrite(fd, data.first(head), c.uncompressed_offset);
}

void Blob::fetch(const ReadPlan& plan, std::vector<std::byte>& buf, std::vector<BackendRead>& reads,
                 Deadline deadline, const std::map<std::uint32_t, std::string>* refetch_of) {
  buf.resize(plan.total);
  reads.resize(plan.reads.size());
  for (std::size_t r = 0; r < plan.reads.size(); ++r) {
    reads[r].offset = plan.reads[r].offset;
    reads[r].out = base::MutableBytes(buf.data() + plan.reads[r].buf_off, plan.reads[r].size);
    if (refetch_of != nullptr) {
      // Not from where the bad bytes came (the first chunk's source: the chunks of
      // one round come from one source but for a mirror that failed part way).
      reads[r].refetch = true;
      auto it = refetch_of->find(plan.order[plan.reads[r].first]);
      reads[r].avoid = it == refetch_of->end() ? std::string() : it->second;
    }
  }
  backend_->read(info_.id, reads, deadline);
  shared_->metrics.backend_requests.fetch_add(reads.size(), std::memory_order_relaxed);
}

base::Error Blob::write_failed(int fd, std::uint32_t ci, const erofs::ChunkMeta& c,
                               const base::Error& e) {
  // Take back what was written of the chunk: a reader of the file (fanotify's
  // kernel, a later scan) must not find part of it as data. Should the punch fail
  // too, the chunk stays absent here (every read of it asks for a fill again, which
  // rewrites all of it). A restart takes it for absent while its head block, written
  // last, is a hole: so when the rest's write failed (nearly all of a chunk). Only a
  // head write that failed part way, with the punch failing as well, leaves a chunk
  // a restart cannot tell: the warning says so.
  auto punched = shared_->file_io->punch_hole(fd, c.uncompressed_offset, c.uncompressed_size);
  if (!punched) {
    static base::RateLimit rl;
    if (rl.allow()) {
      spdlog::warn(
          "blob {} chunk {}: after a failed write: {} (if the daemon restarts before the "
          "chunk is filled again, drop {})",
          info_.id, ci, punched.error().to_string(), path_);
    }
  }
  if (e.code == ENOSPC || e.code == EDQUOT) {
    // The file system is full: make room now (unused entries, LRU first), so the
    // reader's next try of this chunk finds it. This reader still gets EIO.
    shared_->metrics.no_space_events.fetch_add(1, std::memory_order_relaxed);
    shared_->out_of_space();
  }
  // EIO to the reader, whatever the write's errno: read(2) has no ENOSPC.
  return base::Error{EIO, fmt::format("blob {} chunk {}: write: {}", info_.id, ci, e.to_string())};
}

Blob::RoundOutcome Blob::decode_and_write(const ReadPlan& plan, const std::vector<std::byte>& buf,
                                          const std::vector<BackendRead>& reads, int fd) {
  const auto& chunks = meta_.chunks();
  CacheMetrics& m = shared_->metrics;
  thread_local std::vector<std::byte> plain;
  RoundOutcome out;
  auto fail = [&](std::uint32_t ci, base::Error e) { out.errors.emplace(ci, std::move(e)); };
  for (std::size_t r = 0; r < plan.reads.size(); ++r) {
    const ReadPlan::Read& pr = plan.reads[r];
    if (!reads[r].result) {
      // "Fails for good": the backend did its own retries.
      const base::Error e{
          EIO, fmt::format("blob {}: {} at {} (+{}): {}", info_.id, backend_->describe(), pr.offset,
                           pr.size, reads[r].result.error().to_string())};
      // Only a timeout is held (kFailHold): it is the failure that costs the
      // reader the whole budget again; a refused connection fails fast anyway, and
      // the next read must see a registry that is back at once.
      const bool timed_out = reads[r].result.error().code == ETIMEDOUT;
      for (std::size_t i = pr.first; i < pr.last; ++i) {
        fail(plan.order[i], e);
        if (timed_out) {
          out.timed_out.push_back(plan.order[i]);
        }
      }
      if (timed_out) {
        out.backend_error = e;
      }
      continue;
    }
    m.backend_bytes.fetch_add(pr.size, std::memory_order_relaxed);
    for (std::size_t i = pr.first; i < pr.last; ++i) {
      const std::uint32_t ci = plan.order[i];
      const erofs::ChunkMeta& c = chunks[ci];
      const base::Bytes stored(buf.data() + plan.chunk_buf_off(pr, c), c.compressed_size);
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
        out.corrupt.emplace(ci, reads[r].source);
        continue;
      }
      st = write_chunk(fd, c, plain);
      if (!st) {
        fail(ci, write_failed(fd, ci, c, st.error()));
        continue;
      }
      out.done.push_back(ci);
      out.filled += c.uncompressed_size;
      shared_->note_written(c.uncompressed_size);
    }
  }
  return out;
}

void Blob::publish(const Round& round, RoundOutcome&& out) {
  // Every byte of the chunks in out.done was written (pwrite returned), so a reader
  // woken here, or a front end answering its kernel, sees them.
  std::vector<std::function<void()>> completed;
  {
    std::lock_guard lk(mu_);
    for (std::uint32_t ci : round.cis) {
      state_[ci] = ChunkState::kAbsent;  // a failed chunk stays absent: the next fill retries
      flight_[ci].reset();
    }
    for (std::uint32_t ci : out.done) {
      state_[ci] = ChunkState::kPresent;
    }
    const auto hold = shared_->now() + kFailHold;
    for (std::uint32_t ci : out.timed_out) {
      failed_until_[ci] = hold;
      failing_until_ = hold;
    }
    if (out.backend_error) {
      last_backend_error_ = std::move(out.backend_error);
    }
    present_ += out.done.size();
    round.flight->done = true;
    round.flight->errors = std::move(out.errors);
    cv_.notify_all();
    if (present_ == state_.size()) {
      completed.swap(on_complete_);  // only one round can be the one that completes
    }
  }
  for (auto& fn : completed) {
    fn();
  }
}

void Blob::refetch(RoundOutcome& out, int fd, Deadline deadline) {
  // Bytes that fail their digest were most likely damaged on the way (a flaky proxy,
  // a cache that kept a bad copy), not at the blob's home: read them once more, past
  // the caches and from another mirror if there is one, before the reader gets EIO.
  // Once only: a chunk wrong twice is EBADMSG (the reader's EIO), as before.
  CacheMetrics& m = shared_->metrics;
  std::vector<std::uint32_t> cis;
  cis.reserve(out.corrupt.size());
  for (const auto& [ci, source] : out.corrupt) {
    cis.push_back(ci);
  }
  m.refetches.fetch_add(cis.size(), std::memory_order_relaxed);
  const ReadPlan plan = plan_reads(meta_.chunks(), cis, batch_, kMaxReadGap);
  std::vector<std::byte> buf;
  std::vector<BackendRead> reads;
  fetch(plan, buf, reads, deadline, &out.corrupt);
  RoundOutcome again = decode_and_write(plan, buf, reads, fd);
  m.refetch_successes.fetch_add(again.done.size(), std::memory_order_relaxed);
  for (std::uint32_t ci : again.done) {
    out.errors.erase(ci);
    out.done.push_back(ci);
  }
  out.filled += again.filled;
  for (auto& [ci, e] : again.errors) {
    out.errors.insert_or_assign(ci, std::move(e).wrap("refetched once"));
  }
  out.timed_out.insert(out.timed_out.end(), again.timed_out.begin(), again.timed_out.end());
  if (again.backend_error) {
    out.backend_error = std::move(again.backend_error);
  }
  out.corrupt = std::move(again.corrupt);
}

std::uint64_t Blob::run_round(const Round& round, int write_fd, Deadline deadline,
                              std::uint64_t max_read) {
  const int fd = write_fd >= 0 ? write_fd : fd_.get();
  // A fill's window is one range read where its absent chunks continue each other.
  const ReadPlan plan =
      plan_reads(meta_.chunks(), round.cis, max_read == 0 ? window_ : max_read, kMaxReadGap);
  std::vector<std::byte> buf;
  std::vector<BackendRead> reads;
  fetch(plan, buf, reads, deadline);
  RoundOutcome out = decode_and_write(plan, buf, reads, fd);
  if (!out.corrupt.empty()) {
    refetch(out, fd, deadline);
  }
  const std::uint64_t filled = out.filled;
  publish(round, std::move(out));
  return filled;
}

base::Status Blob::wait_for(std::uint32_t first,
                            const std::vector<std::shared_ptr<Flight>>& req_flight,
                            Deadline deadline) {
  // Each requested chunk is present now, or its flight says why not.
  std::optional<base::Error> err;
  std::unique_lock lk(mu_);
  for (std::uint32_t i = 0; i < req_flight.size(); ++i) {
    const auto& f = req_flight[i];
    if (!f) {
      continue;  // was present already
    }
    if (!shared_->clock->wait_until(lk, cv_, deadline, [&] { return f->done; })) {
      // Someone else's fetch (a prefetch's, or a fill's that started earlier and
      // still runs) is not done in time: it goes on for later fills, this one fails.
      const base::Error e{EIO, fmt::format("blob {}: chunk {} not fetched within the read "
                                           "timeout of {} ms",
                                           info_.id, first + i, shared_->read_timeout.count())};
      failed_until_[first + i] = shared_->now() + kFailHold;
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
  if (err) {
    return base::Unexpected(std::move(*err));
  }
  return {};
}

base::Status Blob::fill(std::uint64_t off, std::uint64_t len, int write_fd) {
  if (len == 0) {
    return {};
  }
  if (off >= size()) {
    return base::errorf(ERANGE, "blob {}: fill at {} of a {} byte blob", info_.id, off, size());
  }
  touch();
  const auto t0 = shared_->now();
  CacheMetrics& m = shared_->metrics;
  m.fill_requests.fetch_add(1, std::memory_order_relaxed);
  len = std::min(len, size() - off);
  const auto [first, last] = meta_.chunks_in_range(off, len);

  // 1. Check: present, held after a failure, or what is missing.
  const Check c = check(first, last, t0);
  if (c.hit) {
    m.hits.fetch_add(1, std::memory_order_relaxed);
    record_latency(m, shared_->now() - t0);
    return {};
  }
  m.misses.fetch_add(1, std::memory_order_relaxed);
  if (c.held) {
    return base::Unexpected(*c.held);
  }
  CountScope scope(*shared_, &Shared::ondemand);
  // The reader's deadline: our own fetch is cut there (the backend's retries
  // included), and so is the wait for fetches of others.
  const Deadline deadline = shared_->deadline_from(t0);

  // 2. Widen.
  const std::vector<std::uint32_t> cis = widen(first, last, c.any_absent);

  // 3. Claim. Race this resolves (two fills of the same chunk):
  //   CPU1: lock; chunk absent -> in-flight(F1); unlock; fetch ...; lock; present; done
  //   CPU2:        lock; chunk in-flight(F1) -> wait on F1 ...............; wakes; ok
  // The chunk is fetched once; CPU2 never sees a half-written chunk as present.
  std::vector<std::shared_ptr<Flight>> req_flight(last - first);
  std::vector<Round> rounds;
  {
    std::lock_guard lk(mu_);
    rounds = claim(cis, &req_flight);
  }
  // 4. Fetch, decode and write, publish. Prefetch-list workers start no new read
  // meanwhile: the reader waits for these bytes, so they get the bandwidth.
  if (!rounds.empty()) {
    CountScope fetching(*shared_, &Shared::fetching);
    for (const Round& r : rounds) {
      run_round(r, write_fd, deadline);
    }
  }

  // 5. Wait for the requested chunks that others fetch.
  auto st = wait_for(first, req_flight, deadline);
  record_latency(m, shared_->now() - t0);
  return st;
}

std::vector<std::uint32_t> Blob::next_absent(std::uint32_t* cursor, std::uint64_t* compressed) {
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

base::Result<std::uint64_t> Blob::prefetch_chunks(const std::vector<std::uint32_t>& cis,
                                                  std::uint64_t max_read) {
  std::vector<Round> rounds;
  {
    std::lock_guard lk(mu_);
    rounds = claim(cis, nullptr, max_read);
  }
  // A prefetch holds its chunks no longer than a reader would wait for them: cut at
  // the read timeout like a fill's own fetch, a read stuck on a stalled registry
  // leaves its chunks to the readers' own fetches once the registry is back.
  const Deadline deadline = shared_->deadline_from(shared_->now());
  std::uint64_t filled = 0;
  std::optional<base::Error> err;
  for (const Round& r : rounds) {
    filled += run_round(r, -1, deadline, max_read);
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

}  // namespace cfnd::cache
