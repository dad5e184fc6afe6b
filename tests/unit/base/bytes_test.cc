// SPDX-License-Identifier: Apache-2.0
#include "base/bytes.h"

#include <gtest/gtest.h>

#include <array>

namespace base {
namespace {

TEST(Bytes, HexRoundTrip) {
  std::array<std::byte, 4> in{std::byte{0x00}, std::byte{0xab}, std::byte{0x10}, std::byte{0xff}};
  EXPECT_EQ(to_hex(in), "00ab10ff");
  std::array<std::byte, 4> out{};
  ASSERT_TRUE(from_hex("00AB10ff", out));
  EXPECT_EQ(in, out);
}

TEST(Bytes, FromHexRejectsBadInput) {
  std::array<std::byte, 2> out{};
  EXPECT_FALSE(from_hex("abc", out));
  EXPECT_FALSE(from_hex("abcg", out));
  EXPECT_FALSE(from_hex("abcdef", out));
}

TEST(Bytes, InBoundsHandlesOverflow) {
  EXPECT_TRUE(in_bounds(0, 10, 10));
  EXPECT_TRUE(in_bounds(10, 0, 10));
  EXPECT_FALSE(in_bounds(11, 0, 10));
  EXPECT_FALSE(in_bounds(5, 6, 10));
  EXPECT_FALSE(in_bounds(1, UINT64_MAX, 10));
  EXPECT_FALSE(in_bounds(UINT64_MAX, 2, 10));
}

TEST(Bytes, Align) {
  EXPECT_EQ(align_up(0, 4096), 0U);
  EXPECT_EQ(align_up(1, 4096), 4096U);
  EXPECT_EQ(align_up(4096, 4096), 4096U);
  EXPECT_EQ(align_down(4097, 4096), 4096U);
  EXPECT_TRUE(is_pow2(4096));
  EXPECT_FALSE(is_pow2(0));
  EXPECT_FALSE(is_pow2(3000));
}

}  // namespace
}  // namespace base
