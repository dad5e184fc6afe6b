// SPDX-License-Identifier: Apache-2.0
#include "base/latency_histogram.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace base {
namespace {

using H = LatencyHistogram;

TEST(LatencyHistogram, BucketsTileTheRangeWithoutGaps) {
  EXPECT_EQ(H::bucket_low(0), 0U);
  for (int b = 0; b + 1 < H::kBuckets; ++b) {
    ASSERT_LE(H::bucket_low(b), H::bucket_high(b)) << b;
    ASSERT_EQ(H::bucket_high(b) + 1, H::bucket_low(b + 1)) << b;
    ASSERT_EQ(H::bucket(H::bucket_low(b)), b);
    ASSERT_EQ(H::bucket(H::bucket_high(b)), b);
  }
  EXPECT_EQ(H::bucket_high(H::kBuckets - 1), ~std::uint64_t{0});
}

TEST(LatencyHistogram, BucketWidthIsAQuarterOfItsPower) {
  // 1000 has top bit 512: buckets of 128 from 512.
  EXPECT_EQ(H::bucket_low(H::bucket(1000)), 896U);
  EXPECT_EQ(H::bucket_high(H::bucket(1000)), 1023U);
}

TEST(LatencyHistogram, EmptyQuantileIsZero) {
  H h;
  EXPECT_EQ(h.snapshot().quantile(0.5), 0U);
  EXPECT_EQ(h.snapshot().count, 0U);
}

TEST(LatencyHistogram, QuantilesWithinABucket) {
  H h;
  for (std::uint64_t v = 1; v <= 1000; ++v) {
    h.record(v * 1000);  // 1 us .. 1 ms
  }
  auto s = h.snapshot();
  EXPECT_EQ(s.count, 1000U);
  EXPECT_EQ(s.sum_ns, 500500U * 1000U);
  const auto p50 = static_cast<double>(s.quantile(0.5));
  const auto p99 = static_cast<double>(s.quantile(0.99));
  EXPECT_NEAR(p50, 500e3, 500e3 * 0.13);
  EXPECT_NEAR(p99, 990e3, 990e3 * 0.13);
  EXPECT_LE(s.quantile(0.0), 1200U);
  EXPECT_GE(s.quantile(1.0), 900'000U);
}

TEST(LatencyHistogram, OneOutlierMovesOnlyTheTail) {
  H h;
  for (int i = 0; i < 99; ++i) {
    h.record(100);
  }
  h.record(1'000'000'000);
  auto s = h.snapshot();
  EXPECT_EQ(H::bucket(s.quantile(0.5)), H::bucket(100));
  EXPECT_EQ(H::bucket(s.quantile(0.99)), H::bucket(100));
  EXPECT_EQ(H::bucket(s.quantile(1.0)), H::bucket(1'000'000'000));
}

TEST(LatencyHistogram, ConcurrentRecordsAreAllCounted) {
  H h;
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&h, t] {
      for (int i = 0; i < 10000; ++i) {
        h.record(static_cast<std::uint64_t>(t * 1000 + i));
      }
    });
  }
  for (auto& t : ts) {
    t.join();
  }
  EXPECT_EQ(h.snapshot().count, 40000U);
}

}  // namespace
}  // namespace base
