// SPDX-License-Identifier: Apache-2.0
#include "daemon/targz.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>
#include <string>
#include <vector>

#include "tests/unit/gzip.h"

namespace cfnd {
namespace {

std::vector<std::byte> bytes(std::string_view s) {
  auto b = base::as_bytes(s);
  return {b.begin(), b.end()};
}

// One ustar header + data + padding.
void add_entry(std::vector<std::byte>& tar, const std::string& name, std::string_view data,
               char type = '0', const std::string& prefix = "") {
  std::array<char, 512> h{};
  std::memcpy(h.data(), name.data(), std::min<std::size_t>(name.size(), 100));
  std::snprintf(h.data() + 100, 8, "%07o", 0644);
  std::snprintf(h.data() + 124, 12, "%011llo", static_cast<unsigned long long>(data.size()));
  std::snprintf(h.data() + 136, 12, "%011o", 0);
  h[156] = type;
  std::memcpy(h.data() + 257, "ustar", 6);
  std::memcpy(h.data() + 263, "00", 2);
  std::memcpy(h.data() + 345, prefix.data(), std::min<std::size_t>(prefix.size(), 155));
  std::memset(h.data() + 148, ' ', 8);
  unsigned sum = 0;
  for (char c : h) {
    sum += static_cast<unsigned char>(c);
  }
  std::snprintf(h.data() + 148, 8, "%06o", sum);
  auto hb = base::as_bytes(std::string_view(h.data(), h.size()));
  tar.insert(tar.end(), hb.begin(), hb.end());
  auto db = base::as_bytes(data);
  tar.insert(tar.end(), db.begin(), db.end());
  tar.resize(base::align_up(tar.size(), 512));
}

void finish(std::vector<std::byte>& tar) {
  tar.resize(tar.size() + 1024);
}

using cfntest::gzip;

TEST(TarGz, FindsTheMember) {
  std::vector<std::byte> tar;
  add_entry(tar, "image/", "", '5');
  add_entry(tar, "image/other", "zzz");
  add_entry(tar, "image/image.boot", "BOOTSTRAP");
  finish(tar);
  auto r = extract_tar_gz_member(gzip(tar), "image/image.boot", 1 << 20, 1 << 20);
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(*r, bytes("BOOTSTRAP"));
  // "./" spellings and a ustar prefix name the same member.
  std::vector<std::byte> t2;
  add_entry(t2, "image.boot", "P", '0', "./image");
  auto r2 = extract_tar_member(t2, "image/image.boot", 10);
  ASSERT_TRUE(r2) << r2.error().to_string();
  EXPECT_EQ(*r2, bytes("P"));
}

TEST(TarGz, PaxPathAndConcatenatedGzip) {
  std::vector<std::byte> tar;
  add_entry(tar, "PaxHeaders/x", "25 path=image/image.boot\n", 'x');
  add_entry(tar, "short-name", "DATA");
  finish(tar);
  auto r = extract_tar_member(tar, "image/image.boot", 100);
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(*r, bytes("DATA"));
  auto half = std::vector<std::byte>(tar.begin(), tar.begin() + 512);
  auto rest = std::vector<std::byte>(tar.begin() + 512, tar.end());
  auto gz = gzip(half);
  auto gz2 = gzip(rest);
  gz.insert(gz.end(), gz2.begin(), gz2.end());
  auto r2 = extract_tar_gz_member(gz, "image/image.boot", 100, 1 << 20);
  ASSERT_TRUE(r2) << r2.error().to_string();
  EXPECT_EQ(*r2, bytes("DATA"));
}

TEST(TarGz, Errors) {
  std::vector<std::byte> tar;
  add_entry(tar, "image/image.boot", std::string(5000, 'a'));
  finish(tar);
  EXPECT_EQ(extract_tar_member(tar, "image/nope", 1 << 20).error().code, ENOENT);
  EXPECT_EQ(extract_tar_member(tar, "image/image.boot", 4999).error().code, EMSGSIZE);
  EXPECT_EQ(extract_tar_gz_member(gzip(tar), "image/image.boot", 1 << 20, 4096).error().code,
            EMSGSIZE);
  // Truncated inside the data, a broken checksum, a lying size.
  std::vector<std::byte> cut(tar.begin(), tar.begin() + 2048);
  EXPECT_EQ(extract_tar_member(cut, "image/image.boot", 1 << 20).error().code, EBADMSG);
  auto bad = tar;
  bad[10] = std::byte{'X'};
  EXPECT_EQ(extract_tar_member(bad, "image/image.boot", 1 << 20).error().code, EBADMSG);
  std::vector<std::byte> lie;
  add_entry(lie, "image/image.boot", "x");
  std::memcpy(lie.data() + 124, "77777777777", 11);
  EXPECT_EQ(extract_tar_member(lie, "image/image.boot", 1 << 20).error().code, EBADMSG);
  std::vector<std::byte> twice;
  add_entry(twice, "image/image.boot", "1");
  add_entry(twice, "./image/image.boot", "2");
  EXPECT_EQ(extract_tar_member(twice, "image/image.boot", 10).error().code, EBADMSG);
  std::vector<std::byte> link;
  add_entry(link, "image/image.boot", "", '2');
  EXPECT_EQ(extract_tar_member(link, "image/image.boot", 10).error().code, EINVAL);
  // Corrupt and truncated gzip.
  auto gz = gzip(tar);
  EXPECT_EQ(extract_tar_gz_member(std::span(gz).first(gz.size() / 2), "image/image.boot", 1 << 20,
                                  1 << 20)
                .error()
                .code,
            EBADMSG);
  gz[gz.size() / 2] ^= std::byte{0xFF};
  EXPECT_FALSE(extract_tar_gz_member(gz, "image/image.boot", 1 << 20, 1 << 20));
  EXPECT_FALSE(gunzip(bytes("not gzip at all"), 100));
}

}  // namespace
}  // namespace cfnd
