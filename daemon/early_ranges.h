// SPDX-License-Identifier: Apache-2.0
// Blob bytes fetched before the image's backend exists: an eStargz image's prioritized
// files (the .prefetch.landmark's members) are known as soon as a layer's TOC is parsed,
// while the bootstrap that maps them into the cache is still being built. Their Range GETs
// start then, into memory; the registry backend serves reads that fall inside these
// ranges from here (waiting for a GET still in flight) and the blob cache checks every
// chunk against its digest as for any other read. A piece's memory is given back once
// all its bytes were served, or with the backend.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/bytes.h"
#include "registry/client.h"
#include "registry/reference.h"

namespace cfnd {

class EarlyRanges {
 public:
  // Ranges are cut into pieces of at most kPieceBytes, fetched in order by kFetchers
  // threads, so the first pieces are there before the last are asked for.
  static constexpr std::uint64_t kPieceBytes = 1ULL << 20;
  static constexpr std::size_t kFetchers = 2;

  // client is used by the fetch threads until this object is destroyed (which waits for
  // them): it must outlive it.
  explicit EarlyRanges(registry::Client& client);
  ~EarlyRanges();
  EarlyRanges(const EarlyRanges&) = delete;
  EarlyRanges& operator=(const EarlyRanges&) = delete;

  // Start fetching [offset, offset + length) of each range of blob `digest` (the layer,
  // "sha256:<blob_id>") of repo. Ranges overlapping one already added are skipped.
  void add(const registry::Reference& repo, const std::string& blob_id, const std::string& digest,
           const std::vector<std::pair<std::uint64_t, std::uint64_t>>& ranges);

  // Copy into out the bytes held from offset on (waiting for pieces still being fetched,
  // until deadline), through consecutive pieces; returns how many were copied from out's
  // start: 0 when offset is in no piece, its GET failed or the deadline passed first.
  std::size_t take(const std::string& blob_id, std::uint64_t offset, base::MutableBytes out,
                   std::chrono::steady_clock::time_point deadline =
                       std::chrono::steady_clock::time_point::max());

  struct Stats {
    std::uint64_t fetched_bytes = 0;  // by GETs that succeeded
    std::uint64_t served_bytes = 0;   // copied out by take
    // In memory now: fetched, not yet served in full (a piece is freed once all its bytes
    // were served; the rest goes with this object).
    std::uint64_t held_bytes = 0;
    std::uint64_t failed_pieces = 0;
    // When the first GET started and the last one ended, since this object was made
    // (zero until then).
    std::chrono::milliseconds first_get_ms{0};
    std::chrono::milliseconds done_ms{0};
  };
  [[nodiscard]] Stats stats() const;

 private:
  struct Piece {
    std::string digest;
    registry::Reference repo;
    std::uint64_t offset = 0;
    std::vector<std::byte> bytes;  // length = its size; freed (empty) once served
    std::uint64_t length = 0;
    std::uint64_t served = 0;
    enum class State { kQueued, kFetching, kDone, kFailed, kFreed } state = State::kQueued;
  };
  using Key = std::pair<std::string, std::uint64_t>;  // blob id, offset

  void fetch_loop();

  registry::Client& client_;
  const std::chrono::steady_clock::time_point born_ = std::chrono::steady_clock::now();
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<Key, Piece> pieces_;
  std::vector<Piece*> queue_;  // in fetch order; pointers into pieces_ (map nodes are stable)
  std::size_t next_ = 0;
  bool stopping_ = false;
  Stats stats_;
  std::vector<std::thread> threads_;
};

}  // namespace cfnd
