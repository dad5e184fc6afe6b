// SPDX-License-Identifier: Apache-2.0
// The tar header codec on byte arrays: GNU, POSIX ustar and v7 headers, both checksum
// conventions, octal and base-256 sizes, and lying or broken fields.
#include "erofs/tar_header.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

namespace erofs {
namespace {

// A header with the checksum left for seal().
std::vector<std::byte> raw(std::string_view name, std::string_view size_field, char type,
                           std::string_view magic) {
  std::vector<std::byte> h(kTarBlockSize, std::byte{0});
  std::memcpy(h.data(), name.data(), name.size());
  std::memcpy(h.data() + 124, size_field.data(), size_field.size());
  h[156] = static_cast<std::byte>(type);
  std::memcpy(h.data() + 257, magic.data(), magic.size());
  return h;
}

// Fill in the checksum: the unsigned byte sum, or the signed one old tars wrote.
void seal(std::vector<std::byte>& h, bool signed_sum = false) {
  std::memset(h.data() + 148, ' ', 8);
  long sum = 0;
  for (std::byte b : h) {
    sum += signed_sum ? static_cast<signed char>(b) : std::to_integer<unsigned char>(b);
  }
  const std::string f = fmt::format("{:06o}", sum);
  std::memset(h.data() + 148, 0, 8);
  std::memcpy(h.data() + 148, f.data(), std::min<std::size_t>(f.size(), 7));
}

TEST(TarHeader, RoundTrip) {
  for (std::uint64_t size : {0ULL, 1ULL, 511ULL, 8589934591ULL, 8589934592ULL, 1ULL << 40}) {
    auto h = encode_tar_header("image/image.boot", size);
    ASSERT_EQ(h.size(), kTarBlockSize);
    auto d = decode_tar_header(h);
    ASSERT_TRUE(d) << size << ": " << d.error().message;
    EXPECT_EQ(d->name, "image/image.boot");
    EXPECT_EQ(d->size, size);
    EXPECT_EQ(d->type, '0');
    EXPECT_EQ(d->magic, TarMagic::kGnu);
  }
  // A name longer than the field is cut, never spilled into the next field.
  auto h = encode_tar_header(std::string(300, 'n'), 1);
  EXPECT_EQ(decode_tar_header(h)->name, std::string(99, 'n'));
}

TEST(TarHeader, UstarPrefixAndV7) {
  auto h = raw("image.boot", "0000012\0", '0',
               std::string_view("ustar\0"
                                "00",
                                8));
  std::memcpy(h.data() + 345, "image", 5);
  seal(h);
  auto d = decode_tar_header(h);
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->magic, TarMagic::kUstar);
  EXPECT_EQ(d->name, "image/image.boot");
  EXPECT_EQ(d->size, 10U);

  // GNU keeps no prefix there: the bytes at 345 are other fields.
  h = raw("a", "12 ", '5', std::string_view("ustar  \0", 8));
  std::memcpy(h.data() + 345, "zzz", 3);
  seal(h);
  d = decode_tar_header(h);
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->name, "a");
  EXPECT_EQ(d->type, '5');

  h = raw("old", " 7 ", '\0', "");
  seal(h, /*signed_sum=*/true);
  d = decode_tar_header(h);
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->magic, TarMagic::kNone);
  EXPECT_EQ(d->size, 7U);
}

TEST(TarHeader, SignedChecksumWithHighBytes) {
  auto h = raw("\xe9t\xe9", "1", '0', "");
  seal(h, /*signed_sum=*/true);
  EXPECT_TRUE(decode_tar_header(h));
  seal(h, /*signed_sum=*/false);
  EXPECT_TRUE(decode_tar_header(h));
}

TEST(TarHeader, Refused) {
  auto good = encode_tar_header("x", 100);
  EXPECT_EQ(decode_tar_header(std::span(good).first(511)).error().code, EBADMSG);
  std::vector<std::byte> longer(good);
  longer.push_back(std::byte{0});
  EXPECT_EQ(decode_tar_header(longer).error().code, EBADMSG);

  auto h = good;
  h[0] = std::byte{'y'};  // checksum no longer matches
  EXPECT_EQ(decode_tar_header(h).error().code, EBADMSG);

  for (std::string_view size : {std::string_view("12x", 3), std::string_view("", 0),
                                std::string_view("        ", 8), std::string_view("1 2", 3)}) {
    h = raw("x", size, '0', "");
    seal(h);
    EXPECT_EQ(decode_tar_header(h).error().code, EBADMSG) << size;
  }
  // Base-256: negative, and too large for 64 bits.
  h = raw("x", "", '0', "");
  h[124] = std::byte{0xff};
  seal(h);
  EXPECT_EQ(decode_tar_header(h).error().code, EBADMSG);
  h = raw("x", "", '0', "");
  h[124] = std::byte{0x80};
  h[126] = std::byte{0x01};  // 2^72
  seal(h);
  EXPECT_EQ(decode_tar_header(h).error().code, EBADMSG);
}

TEST(TarHeader, ZeroBlock) {
  std::vector<std::byte> z(kTarBlockSize, std::byte{0});
  EXPECT_TRUE(is_zero_tar_block(z));
  z[511] = std::byte{1};
  EXPECT_FALSE(is_zero_tar_block(z));
  // A zero block is not a header: its checksum field is empty.
  z[511] = std::byte{0};
  EXPECT_EQ(decode_tar_header(z).error().code, EBADMSG);
}

}  // namespace
}  // namespace erofs
