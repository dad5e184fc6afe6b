// SPDX-License-Identifier: Apache-2.0
// The pure parts of the cachefiles front end: default fsid, name checks, READ windows.
#include "daemon/cachefiles_frontend.h"

#include <gtest/gtest.h>

#include <cstddef>
#include <string>
#include <vector>

namespace cfnd {
namespace {

TEST(DefaultFsid, FirstHalfOfSha256) {
  // sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
  const std::string abc = "abc";
  auto fsid = default_fsid(base::Bytes(reinterpret_cast<const std::byte*>(abc.data()), 3));
  EXPECT_EQ(fsid, "ba7816bf8f01cfea414140de5dae2223");
  EXPECT_TRUE(check_fscache_name("fsid", fsid));
}

TEST(CheckFscacheName, AcceptsPlainNames) {
  for (const char* ok : {"a", "vm-image_1.0", "ABCdef123"}) {
    EXPECT_TRUE(check_fscache_name("fsid", ok)) << ok;
  }
  EXPECT_TRUE(check_fscache_name("fsid", std::string(128, 'x')));
}

TEST(CheckFscacheName, RejectsWhatBreaksMountOptionsOrPaths) {
  for (const char* bad : {"", ".", "..", "a,b", "a=b", "a/b", "a b", "a\nb", "é"}) {
    auto st = check_fscache_name("domain_id", bad);
    ASSERT_FALSE(st) << bad;
    EXPECT_EQ(st.error().code, EINVAL);
    EXPECT_NE(st.error().to_string().find("domain_id"), std::string::npos);
  }
  EXPECT_FALSE(check_fscache_name("fsid", std::string(129, 'x')));
}

TEST(ReadWindow, AlignedInside) {
  auto w = read_window(8192, 4096, 1 << 20);
  EXPECT_EQ(w.off, 8192U);
  EXPECT_EQ(w.len, 4096U);
  EXPECT_EQ(w.data_len, 4096U);
}

TEST(ReadWindow, UnalignedRoundsOut) {
  auto w = read_window(5000, 100, 1 << 20);
  EXPECT_EQ(w.off, 4096U);
  EXPECT_EQ(w.len, 4096U);
  EXPECT_EQ(w.data_len, 4096U);
}

TEST(ReadWindow, TailIsZeroPaddedToAPage) {
  // size 10000: the last page holds 10000 - 8192 = 1808 data bytes.
  auto w = read_window(8192, 4096, 10000);
  EXPECT_EQ(w.off, 8192U);
  EXPECT_EQ(w.len, 4096U);
  EXPECT_EQ(w.data_len, 1808U);
  // A READ reaching far past the end is clipped at the padded end.
  w = read_window(0, 1ULL << 40, 10000);
  EXPECT_EQ(w.off, 0U);
  EXPECT_EQ(w.len, 12288U);
  EXPECT_EQ(w.data_len, 10000U);
}

TEST(ReadWindow, NothingAtOrPastTheEnd) {
  EXPECT_EQ(read_window(10000, 4096, 10000).len, 0U);
  EXPECT_EQ(read_window(1ULL << 40, 4096, 10000).len, 0U);
  EXPECT_EQ(read_window(0, 0, 10000).len, 0U);
  EXPECT_EQ(read_window(0, 4096, 0).len, 0U);
}

TEST(ReadWindow, NoOverflowNearTheTop) {
  auto w = read_window(4096, UINT64_MAX, 1ULL << 62);
  EXPECT_EQ(w.off, 4096U);
  EXPECT_EQ(w.len, (1ULL << 62) - 4096);
  EXPECT_EQ(w.data_len, (1ULL << 62) - 4096);
}

}  // namespace
}  // namespace cfnd
