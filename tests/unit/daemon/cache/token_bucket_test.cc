// SPDX-License-Identifier: Apache-2.0
#include "daemon/cache/token_bucket.h"

#include <gtest/gtest.h>

namespace cfnd::cache {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;

// The wait, exact to the nanosecond the double arithmetic allows.
void expect_wait(nanoseconds got, nanoseconds want) {
  EXPECT_NEAR(static_cast<double>(got.count()), static_cast<double>(want.count()), 1);
}

TEST(TokenBucket, StartsFullThenWaitsForTheDebt) {
  const TokenBucket::time_point t0{};
  TokenBucket b(1000, 500, t0);  // 1000 bytes/s, 500 bytes
  expect_wait(b.take(500, t0), nanoseconds(0));
  expect_wait(b.take(250, t0), milliseconds(250));  // 250 bytes of debt at 1000/s
  // Half a second later 500 came in: 250 pay the debt, 250 left.
  expect_wait(b.take(250, t0 + milliseconds(500)), nanoseconds(0));
  expect_wait(b.take(1, t0 + milliseconds(500)), milliseconds(1));
}

TEST(TokenBucket, RefillStopsAtCapacity) {
  const TokenBucket::time_point t0{};
  TokenBucket b(1000, 500, t0);
  expect_wait(b.take(500, t0), nanoseconds(0));
  // An hour idle refills one capacity, not more.
  const auto later = t0 + seconds(3600);
  expect_wait(b.take(500, later), nanoseconds(0));
  expect_wait(b.take(100, later), milliseconds(100));
}

TEST(TokenBucket, TimeGoingBackIsNoRefill) {
  const TokenBucket::time_point t0 = TokenBucket::time_point{} + seconds(10);
  TokenBucket b(1000, 500, t0);
  expect_wait(b.take(500, t0), nanoseconds(0));
  expect_wait(b.take(100, t0 - seconds(5)), milliseconds(100));
}

}  // namespace
}  // namespace cfnd::cache
