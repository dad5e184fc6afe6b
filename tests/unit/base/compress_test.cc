// SPDX-License-Identifier: Apache-2.0
#include "base/compress.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "tests/unit/gzip.h"

namespace base {
namespace {

std::vector<std::byte> sample(std::size_t n) {
  std::vector<std::byte> v(n);
  std::mt19937 rng(42);
  for (std::size_t i = 0; i < n; ++i) {
    // compressible: runs of pseudo-random bytes
    v[i] = static_cast<std::byte>((i / 64) % 7 == 0 ? rng() : i / 512);
  }
  return v;
}

class CompressTest : public ::testing::TestWithParam<Compressor> {};

TEST_P(CompressTest, RoundTrip) {
  for (std::size_t n : {0UL, 1UL, 4095UL, 4096UL, 1UL << 20}) {
    auto in = sample(n);
    std::vector<std::byte> packed;
    ASSERT_TRUE(compress(GetParam(), in, packed));
    std::vector<std::byte> out(n);
    auto st = decompress(GetParam(), packed, out);
    ASSERT_TRUE(st) << st.error().to_string();
    EXPECT_EQ(in, out);
  }
}

TEST_P(CompressTest, WrongSizeIsAnError) {
  auto in = sample(10000);
  std::vector<std::byte> packed;
  ASSERT_TRUE(compress(GetParam(), in, packed));
  std::vector<std::byte> small(9999);
  auto st = decompress(GetParam(), packed, small);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EBADMSG);
  std::vector<std::byte> big(10001);
  EXPECT_FALSE(decompress(GetParam(), packed, big));
}

TEST_P(CompressTest, CorruptInputNeverSucceedsSilently) {
  if (GetParam() == Compressor::kNone) {
    GTEST_SKIP() << "none has no framing to corrupt";
  }
  auto in = sample(50000);
  std::vector<std::byte> packed;
  ASSERT_TRUE(compress(GetParam(), in, packed));
  std::mt19937 rng(7);
  for (int i = 0; i < 200; ++i) {
    auto bad = packed;
    bad[rng() % bad.size()] ^= std::byte{0x5a};
    bad.resize(bad.size() - (rng() % 3));
    std::vector<std::byte> out(in.size());
    auto st = decompress(GetParam(), bad, out);
    // A corrupted stream either fails or (rarely, for lz4 without a checksum)
    // decodes to the right length; it must never crash or overrun.
    if (!st) {
      EXPECT_EQ(st.error().code, EBADMSG);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, CompressTest,
                         ::testing::Values(Compressor::kNone, Compressor::kLz4Block,
                                           Compressor::kZstd),
                         [](const auto& info) { return std::string(compressor_name(info.param)); });

TEST(Compress, ParseNames) {
  EXPECT_EQ(parse_compressor("zstd"), Compressor::kZstd);
  EXPECT_EQ(parse_compressor("lz4_block"), Compressor::kLz4Block);
  EXPECT_EQ(parse_compressor("none"), Compressor::kNone);
  EXPECT_FALSE(parse_compressor("gzip").has_value());
}

// gzip (eStargz members): the first dst.size() bytes of the stream; the rest of the
// member and what follows it are not looked at; a stream short of dst is EBADMSG.
TEST(Compress, GzipIsAPrefixOfTheStream) {
  const std::string chunk(5000, 'c');
  auto member = cfntest::gzip(chunk + std::string(512, '\0') + "next header");
  auto second = cfntest::gzip("another member");
  std::vector<std::byte> stored = member;
  stored.insert(stored.end(), second.begin(), second.end());
  std::vector<std::byte> out(chunk.size());
  ASSERT_TRUE(decompress(Compressor::kGzip, stored, out));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(out.data()), out.size()), chunk);
  // Across members: the second member's bytes follow the first's.
  std::vector<std::byte> all(5000 + 512 + 11 + 14);
  ASSERT_TRUE(decompress(Compressor::kGzip, stored, all));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(all.data()) + 5523, 14), "another member");
  // Past the end of the stream, truncated, not gzip: EBADMSG.
  std::vector<std::byte> too_much(all.size() + 1);
  auto st = decompress(Compressor::kGzip, stored, too_much);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EBADMSG);
  st = decompress(Compressor::kGzip, Bytes(member).first(member.size() / 2), out);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EBADMSG);
  // (A flipped deflate byte may still inflate, to other bytes: only the caller's digest
  // check catches that, tested in tests/unit/estargz/bootstrap_test.cc.)
  std::vector<std::byte> junk(64, std::byte{0x42});
  EXPECT_FALSE(decompress(Compressor::kGzip, junk, out));
  EXPECT_FALSE(decompress(Compressor::kGzip, {}, out));
  // Never written.
  std::vector<std::byte> dst;
  EXPECT_FALSE(compress(Compressor::kGzip, member, dst));
  EXPECT_EQ(compressor_name(Compressor::kGzip), "gzip");
}

}  // namespace
}  // namespace base
