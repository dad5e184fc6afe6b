// SPDX-License-Identifier: Apache-2.0
// fscache/protocol: messages built as byte arrays the way the kernel lays them out
// (host byte order), including short, oversized and lying-length cases.
#include "fscache/protocol.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace fscache {
namespace {

using Buf = std::vector<std::byte>;

void put32(Buf& b, std::uint32_t v) {
  const std::size_t at = b.size();
  b.resize(at + 4);
  std::memcpy(b.data() + at, &v, 4);
}

void put64(Buf& b, std::uint64_t v) {
  const std::size_t at = b.size();
  b.resize(at + 8);
  std::memcpy(b.data() + at, &v, 8);
}

void put_str(Buf& b, std::string_view s) {
  for (char c : s) {
    b.push_back(static_cast<std::byte>(c));
  }
}

// A header whose len is the final size unless `len_override` is given.
Buf header(std::uint32_t msg_id, std::uint32_t opcode, std::uint32_t object_id) {
  Buf b;
  put32(b, msg_id);
  put32(b, opcode);
  put32(b, 0);  // len, patched by finish()
  put32(b, object_id);
  return b;
}

Buf finish(Buf b, std::int64_t len_override = -1) {
  const auto len = len_override >= 0 ? static_cast<std::uint32_t>(len_override)
                                     : static_cast<std::uint32_t>(b.size());
  std::memcpy(b.data() + 8, &len, 4);
  return b;
}

// An OPEN exactly as the kernel sends it: volume key with its NUL, then the cookie key.
Buf open_msg(std::uint32_t msg_id, std::uint32_t object_id, std::string_view vkey_with_nul,
             std::string_view ckey, std::uint32_t fd) {
  Buf b = header(msg_id, 0, object_id);
  put32(b, static_cast<std::uint32_t>(vkey_with_nul.size()));
  put32(b, static_cast<std::uint32_t>(ckey.size()));
  put32(b, fd);
  put32(b, 0);
  put_str(b, vkey_with_nul);
  put_str(b, ckey);
  return finish(std::move(b));
}

Buf read_msg(std::uint32_t msg_id, std::uint32_t object_id, std::uint64_t off, std::uint64_t len) {
  Buf b = header(msg_id, 2, object_id);
  put64(b, off);
  put64(b, len);
  return finish(std::move(b));
}

using namespace std::string_view_literals;

TEST(ParseMessage, OpenFsid) {
  const Buf b = open_msg(7, 3, "erofs,img1\0"sv, "img1", 9);
  auto m = parse_message(b);
  ASSERT_TRUE(m) << m.error().to_string();
  EXPECT_EQ(m->msg_id, 7U);
  EXPECT_EQ(m->object_id, 3U);
  EXPECT_EQ(m->opcode(), Opcode::CACHEFILES_OP_OPEN);
  const auto& o = std::get<OpenRequest>(m->body);
  EXPECT_EQ(o.volume_key, "erofs,img1");
  EXPECT_EQ(o.domain(), "img1");
  EXPECT_EQ(o.cookie_key, "img1");
  EXPECT_EQ(o.fd, 9U);
  EXPECT_EQ(o.flags, 0U);
}

TEST(ParseMessage, OpenDomainAndBlobCookie) {
  const std::string blob(64, 'a');
  const Buf b = open_msg(1, 2, "erofs,dom\0"sv, blob, 5);
  auto m = parse_message(b);
  ASSERT_TRUE(m) << m.error().to_string();
  const auto& o = std::get<OpenRequest>(m->body);
  EXPECT_EQ(o.domain(), "dom");
  EXPECT_EQ(o.cookie_key, blob);
}

TEST(ParseMessage, OpenForeignVolumeKeepsWholeKeyAsDomain) {
  auto m = parse_message(open_msg(1, 1, "nfs,x\0"sv, "k", 3));
  ASSERT_TRUE(m);
  EXPECT_EQ(std::get<OpenRequest>(m->body).domain(), "nfs,x");
}

TEST(ParseMessage, OpenCookieKeyIsBinary) {
  const std::string ckey("a\0b\xff", 4);
  auto m = parse_message(open_msg(1, 1, "v\0"sv, ckey, 3));
  ASSERT_TRUE(m) << m.error().to_string();
  EXPECT_EQ(std::get<OpenRequest>(m->body).cookie_key, ckey);
}

TEST(ParseMessage, OpenVolumeKeyWithoutNulIsRejected) {
  auto m = parse_message(open_msg(1, 1, "erofs,x"sv, "x", 3));
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, EBADMSG);
  EXPECT_NE(m.error().message.find("not NUL-terminated"), std::string::npos) << m.error().message;
}

TEST(ParseMessage, OpenVolumeKeyWithEmbeddedNulIsRejected) {
  auto m = parse_message(open_msg(1, 1, "erofs\0x\0"sv, "x", 3));
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, EBADMSG);
  EXPECT_NE(m.error().message.find("NUL at byte 5"), std::string::npos) << m.error().message;
}

TEST(ParseMessage, OpenEmptyVolumeKeyIsRejected) {
  auto m = parse_message(open_msg(1, 1, ""sv, "x", 3));
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message.find("volume_key_size is 0"), std::string::npos);
}

TEST(ParseMessage, OpenKeySizesMustMatchPayload) {
  Buf b = open_msg(1, 1, "v\0"sv, "key", 3);
  // Cookie key size one larger than the bytes present.
  std::uint32_t ck = 4;
  std::memcpy(b.data() + 16 + 4, &ck, 4);
  auto m = parse_message(b);
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, EBADMSG);
  EXPECT_NE(m.error().message.find("cookie_key_size 4"), std::string::npos) << m.error().message;
  // Trailing garbage after the keys.
  b = open_msg(1, 1, "v\0"sv, "key", 3);
  b.push_back(std::byte{1});
  b = finish(std::move(b));
  EXPECT_FALSE(parse_message(b));
}

TEST(ParseMessage, OpenHugeKeySizesDoNotWrap) {
  Buf b = header(1, 0, 1);
  put32(b, 0xffffffffU);
  put32(b, 3);  // 0xffffffff + 3 wraps a u32 to 2
  put32(b, 3);
  put32(b, 0);
  put_str(b, "v\0"sv);
  auto m = parse_message(finish(std::move(b)));
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, EBADMSG);
}

TEST(ParseMessage, OpenShortPayload) {
  Buf b = header(1, 0, 1);
  put32(b, 1);
  auto m = parse_message(finish(std::move(b)));
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message.find("shorter than its 16-byte header"), std::string::npos);
  EXPECT_NE(m.error().message.find("msg_id 1"), std::string::npos);
}

TEST(ParseMessage, Read) {
  auto m = parse_message(read_msg(11, 4, 4096, 131072));
  ASSERT_TRUE(m) << m.error().to_string();
  EXPECT_EQ(m->opcode(), Opcode::CACHEFILES_OP_READ);
  const auto& r = std::get<ReadRequest>(m->body);
  EXPECT_EQ(r.off, 4096U);
  EXPECT_EQ(r.len, 131072U);
  EXPECT_EQ(m->object_id, 4U);
}

TEST(ParseMessage, ReadWrongSizeOrWrappingRange) {
  Buf b = read_msg(1, 1, 0, 4096);
  b.pop_back();
  EXPECT_FALSE(parse_message(finish(std::move(b))));
  auto m = parse_message(read_msg(1, 1, UINT64_MAX - 10, 4096));
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message.find("wraps"), std::string::npos);
}

TEST(ParseMessage, Close) {
  auto m = parse_message(finish(header(5, 1, 6)));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->opcode(), Opcode::CACHEFILES_OP_CLOSE);
  EXPECT_EQ(m->object_id, 6U);
  Buf b = header(5, 1, 6);
  put32(b, 0);
  m = parse_message(finish(std::move(b)));
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message.find("CLOSE carries 4 payload bytes"), std::string::npos);
}

TEST(ParseMessage, ShortHeader) {
  for (std::size_t n = 0; n < 16; ++n) {
    const Buf b(n, std::byte{0});
    auto m = parse_message(b);
    ASSERT_FALSE(m) << n;
    EXPECT_EQ(m.error().code, EBADMSG);
  }
}

TEST(ParseMessage, LyingLength) {
  const Buf ok = read_msg(1, 1, 0, 4096);
  for (std::int64_t len : {0L, 16L, 31L, 33L, 1024L, 0xffffffffL}) {
    auto m = parse_message(finish(ok, len));
    ASSERT_FALSE(m) << len;
    EXPECT_NE(m.error().message.find("len field"), std::string::npos);
  }
}

TEST(ParseMessage, UnknownOpcode) {
  auto m = parse_message(finish(header(9, 3, 1)));
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, EOPNOTSUPP);
  EXPECT_NE(m.error().message.find("unknown opcode 3"), std::string::npos);
}

TEST(EncodeMessage, RoundTrips) {
  Message open{12, 34, OpenRequest{"erofs,d", std::string(64, 'f'), 8, 0}};
  Message read{13, 34, ReadRequest{8192, 4096}};
  Message close{14, 34, CloseRequest{}};
  for (const Message& m : {open, read, close}) {
    const Buf b = encode_message(m);
    auto back = parse_message(b);
    ASSERT_TRUE(back) << back.error().to_string();
    EXPECT_EQ(back->msg_id, m.msg_id);
    EXPECT_EQ(back->object_id, m.object_id);
    EXPECT_EQ(back->opcode(), m.opcode());
    EXPECT_EQ(encode_message(*back), b);
  }
  EXPECT_EQ(encode_message(open), open_msg(12, 34, "erofs,d\0"sv, std::string(64, 'f'), 8));
}

TEST(Copen, Formats) {
  EXPECT_EQ(format_copen(7, 4096).value(), "copen 7,4096");
  EXPECT_EQ(format_copen(0, 0).value(), "copen 0,0");
  EXPECT_EQ(format_copen(4294967295U, INT64_MAX).value(), "copen 4294967295,9223372036854775807");
  EXPECT_EQ(format_copen(1, static_cast<std::uint64_t>(INT64_MAX) + 1).error().code, EOVERFLOW);
  EXPECT_EQ(format_copen_error(7, ENOENT).value(), "copen 7,-2");
  EXPECT_EQ(format_copen_error(7, 4095).value(), "copen 7,-4095");
  EXPECT_EQ(format_copen_error(7, 0).error().code, EINVAL);
  EXPECT_EQ(format_copen_error(7, -2).error().code, EINVAL);
  EXPECT_EQ(format_copen_error(7, 4096).error().code, EINVAL);
}

TEST(Commands, Session) {
  EXPECT_EQ(format_dir("/var/cache/x y").value(), "dir /var/cache/x y");
  EXPECT_EQ(format_tag("nydus").value(), "tag nydus");
  EXPECT_EQ(format_bind_ondemand(), "bind ondemand");
  EXPECT_EQ(format_restore(), "restore");
  EXPECT_EQ(format_inuse("Dabc").value(), "inuse Dabc");
  EXPECT_EQ(format_cull("Dabc").value(), "cull Dabc");
}

TEST(Commands, RejectWhatTheKernelWouldMangle) {
  EXPECT_EQ(format_dir("").error().code, EINVAL);
  EXPECT_EQ(format_dir(" /x").error().code, EINVAL);
  EXPECT_EQ(format_dir("\t/x").error().code, EINVAL);
  EXPECT_EQ(format_dir("/x\n").error().code, EINVAL);
  EXPECT_EQ(format_tag("a\0b"sv).error().code, EINVAL);
  EXPECT_TRUE(format_dir(std::string(4091, 'a')));  // "dir " + 4091 = 4095
  EXPECT_EQ(format_dir(std::string(4092, 'a')).error().code, ENAMETOOLONG);
}

}  // namespace
}  // namespace fscache
