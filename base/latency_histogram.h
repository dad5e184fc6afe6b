// SPDX-License-Identifier: Apache-2.0
// LatencyHistogram: a lock-free log-linear histogram of durations in nanoseconds, fine
// enough for quantiles (p50, p99) within about 12%: values below 4 have a bucket each,
// every power of two above is split into 4 equal buckets. record() is one relaxed atomic
// add per call from any thread; snapshot() copies the counts (not atomically as a
// whole: a record racing it may be missing, never torn).
#pragma once

#include <array>
#include <atomic>
#include <bit>
#include <cstdint>

namespace base {

class LatencyHistogram {
 public:
  static constexpr int kSubBits = 2;  // 2^kSubBits buckets per power of two
  static constexpr int kSub = 1 << kSubBits;
  static constexpr int kBuckets = (64 - kSubBits + 1) * kSub;

  // The bucket of value v: v itself below kSub; else, with e = floor(log2 v), the
  // power's block (e - kSubBits + 1) and the kSubBits bits below the top bit.
  static constexpr int bucket(std::uint64_t v) {
    if (v < kSub) {
      return static_cast<int>(v);
    }
    const int e = std::bit_width(v) - 1;
    const int sub = static_cast<int>((v >> (e - kSubBits)) & (kSub - 1));
    return (e - kSubBits + 1) * kSub + sub;
  }
  // The smallest and largest value that land in bucket b.
  static constexpr std::uint64_t bucket_low(int b) {
    if (b < kSub) {
      return static_cast<std::uint64_t>(b);
    }
    const int e = b / kSub + kSubBits - 1;
    return static_cast<std::uint64_t>(kSub + b % kSub) << (e - kSubBits);
  }
  static constexpr std::uint64_t bucket_high(int b) {
    if (b < kSub) {
      return static_cast<std::uint64_t>(b);
    }
    const int e = b / kSub + kSubBits - 1;
    return bucket_low(b) + ((std::uint64_t{1} << (e - kSubBits)) - 1);
  }

  void record(std::uint64_t ns) {
    counts_[static_cast<std::size_t>(bucket(ns))].fetch_add(1, std::memory_order_relaxed);
    sum_ns_.fetch_add(ns, std::memory_order_relaxed);
  }

  struct Snapshot {
    std::array<std::uint64_t, kBuckets> counts{};
    std::uint64_t count = 0;
    std::uint64_t sum_ns = 0;

    // The value below which a fraction q (0..1) of the records lie: the midpoint of the
    // bucket holding the ceil(q * count)-th smallest record. 0 when empty.
    [[nodiscard]] std::uint64_t quantile(double q) const {
      if (count == 0) {
        return 0;
      }
      q = q < 0 ? 0 : (q > 1 ? 1 : q);
      auto rank = static_cast<std::uint64_t>(q * static_cast<double>(count) + 0.999999);
      rank = rank == 0 ? 1 : rank;
      std::uint64_t seen = 0;
      for (int b = 0; b < kBuckets; ++b) {
        seen += counts[static_cast<std::size_t>(b)];
        if (seen >= rank) {
          return bucket_low(b) + (bucket_high(b) - bucket_low(b)) / 2;
        }
      }
      return bucket_high(kBuckets - 1);
    }
  };

  [[nodiscard]] Snapshot snapshot() const {
    Snapshot s;
    for (std::size_t b = 0; b < counts_.size(); ++b) {
      s.counts[b] = counts_[b].load(std::memory_order_relaxed);
      s.count += s.counts[b];
    }
    s.sum_ns = sum_ns_.load(std::memory_order_relaxed);
    return s;
  }

 private:
  std::array<std::atomic<std::uint64_t>, kBuckets> counts_{};
  std::atomic<std::uint64_t> sum_ns_{0};
};

static_assert(LatencyHistogram::bucket(3) == 3);
static_assert(LatencyHistogram::bucket(4) == 4);
static_assert(LatencyHistogram::bucket(7) == 7);
static_assert(LatencyHistogram::bucket(8) == 8);
static_assert(LatencyHistogram::bucket(~std::uint64_t{0}) == LatencyHistogram::kBuckets - 1);

}  // namespace base
