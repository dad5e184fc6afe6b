// SPDX-License-Identifier: Apache-2.0
#include "daemon/early_ranges.h"

#include <algorithm>
#include <cstring>

#include "base/log.h"

namespace cfnd {

EarlyRanges::EarlyRanges(registry::Client& client) : client_(client) {}

EarlyRanges::~EarlyRanges() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) {
    t.join();
  }
}

void EarlyRanges::add(const registry::Reference& repo, const std::string& blob_id,
                      const std::string& digest,
                      const std::vector<std::pair<std::uint64_t, std::uint64_t>>& ranges) {
  std::lock_guard lk(mu_);
  if (stopping_) {
    return;
  }
  for (const auto& [offset, length] : ranges) {
    // Overlaps with pieces of this blob already here: the range is left out.
    auto after = pieces_.lower_bound(Key{blob_id, offset});
    const bool overlaps =
        (after != pieces_.end() && after->first.first == blob_id &&
         after->first.second < offset + length) ||
        (after != pieces_.begin() && std::prev(after)->first.first == blob_id &&
         std::prev(after)->first.second + std::prev(after)->second.length > offset);
    if (length == 0 || overlaps) {
      continue;
    }
    for (std::uint64_t pos = offset; pos < offset + length; pos += kPieceBytes) {
      Piece p;
      p.digest = digest;
      p.repo = repo;
      p.offset = pos;
      p.length = std::min(kPieceBytes, offset + length - pos);
      auto [it, _] = pieces_.emplace(Key{blob_id, pos}, std::move(p));
      queue_.push_back(&it->second);
    }
  }
  while (threads_.size() < kFetchers && next_ + threads_.size() < queue_.size()) {
    threads_.emplace_back([this] { fetch_loop(); });
  }
  cv_.notify_all();
}

void EarlyRanges::fetch_loop() {
  std::unique_lock lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stopping_ || next_ < queue_.size(); });
    if (stopping_) {
      return;
    }
    Piece& p = *queue_[next_++];
    p.state = Piece::State::kFetching;
    if (stats_.first_get_ms.count() == 0) {
      stats_.first_get_ms = std::max(std::chrono::milliseconds(1),
                                     std::chrono::duration_cast<std::chrono::milliseconds>(
                                         std::chrono::steady_clock::now() - born_));
    }
    std::vector<std::byte> buf(p.length);
    const registry::Reference repo = p.repo;
    const std::string digest = p.digest;
    const std::uint64_t offset = p.offset;
    lk.unlock();
    // Nobody else touches a fetching piece but take(), which only waits on its state.
    auto st = client_.read_blob_range(repo, digest, offset, buf);
    lk.lock();
    if (st) {
      p.bytes = std::move(buf);
      p.state = Piece::State::kDone;
      stats_.fetched_bytes += p.length;
      stats_.held_bytes += p.length;
    } else {
      p.state = Piece::State::kFailed;
      ++stats_.failed_pieces;
      spdlog::debug("early range {} [{}, +{}): {} (read again when asked)", digest, offset,
                    p.length, st.error().to_string());
    }
    stats_.done_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - born_);
    cv_.notify_all();
  }
}

std::size_t EarlyRanges::take(const std::string& blob_id, std::uint64_t offset,
                              base::MutableBytes out,
                              std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lk(mu_);
  std::size_t copied = 0;
  while (copied < out.size()) {
    const std::uint64_t pos = offset + copied;
    auto it = pieces_.upper_bound(Key{blob_id, pos});
    if (it == pieces_.begin()) {
      break;
    }
    --it;
    if (it->first.first != blob_id || pos >= it->first.second + it->second.length) {
      break;
    }
    Piece& p = it->second;
    const auto settled = [&] {
      return stopping_ || (p.state != Piece::State::kQueued && p.state != Piece::State::kFetching);
    };
    if (deadline == std::chrono::steady_clock::time_point::max()) {
      cv_.wait(lk, settled);
    } else if (!cv_.wait_until(lk, deadline, settled)) {
      break;
    }
    if (p.state != Piece::State::kDone) {
      break;
    }
    const std::uint64_t from = pos - p.offset;
    const std::size_t n =
        static_cast<std::size_t>(std::min<std::uint64_t>(p.length - from, out.size() - copied));
    std::memcpy(out.data() + copied, p.bytes.data() + from, n);
    copied += n;
    p.served += n;
    stats_.served_bytes += n;
    if (p.served >= p.length) {
      // Served in full (a read of bytes already served counts again: the piece may go
      // early, and what follows is read from the registry).
      p.state = Piece::State::kFreed;
      std::vector<std::byte>().swap(p.bytes);
      stats_.held_bytes -= p.length;
    }
  }
  return copied;
}

EarlyRanges::Stats EarlyRanges::stats() const {
  std::lock_guard lk(mu_);
  return stats_;
}

}  // namespace cfnd
