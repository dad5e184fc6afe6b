// SPDX-License-Identifier: Apache-2.0
#include "daemon/fuse_wire.h"

#include <dirent.h>
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace cfnd::fusewire {
namespace {

// A request as the kernel writes it: header, then the argument bytes.
std::vector<std::byte> request(std::uint32_t opcode, const void* args, std::size_t n,
                               std::uint64_t unique = 42) {
  fuse_in_header h{};
  h.len = static_cast<std::uint32_t>(sizeof h + n);
  h.opcode = opcode;
  h.unique = unique;
  h.nodeid = 1;
  std::vector<std::byte> out(sizeof h + n);
  std::memcpy(out.data(), &h, sizeof h);
  if (n > 0) {
    std::memcpy(out.data() + sizeof h, args, n);
  }
  return out;
}

TEST(FuseWire, ParsesAHeaderAndItsArguments) {
  const char name[] = "etc";
  auto bytes = request(FUSE_LOOKUP, name, sizeof name);
  auto r = parse_request(bytes);
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->header.opcode, FUSE_LOOKUP);
  EXPECT_EQ(r->header.unique, 42U);
  EXPECT_EQ(r->args.size(), sizeof name);
  auto n = name_arg(*r, 0);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, "etc");
}

TEST(FuseWire, RefusesShortAndLyingLengths) {
  auto bytes = request(FUSE_GETATTR, nullptr, 0);
  EXPECT_EQ(parse_request(std::span(bytes).first(sizeof(fuse_in_header) - 1)).error().code,
            EBADMSG);
  // The header says more bytes than were read, or fewer.
  fuse_in_header h{};
  std::memcpy(&h, bytes.data(), sizeof h);
  h.len += 8;
  std::memcpy(bytes.data(), &h, sizeof h);
  EXPECT_EQ(parse_request(bytes).error().code, EBADMSG);
  h.len = 4;
  std::memcpy(bytes.data(), &h, sizeof h);
  EXPECT_EQ(parse_request(bytes).error().code, EBADMSG);
}

TEST(FuseWire, NamesNeedANulAndACharacter) {
  const char no_nul[] = {'a', 'b'};
  auto b1 = request(FUSE_LOOKUP, no_nul, sizeof no_nul);
  EXPECT_EQ(name_arg(*parse_request(b1), 0).error().code, EBADMSG);
  const char empty[] = {'\0'};
  auto b2 = request(FUSE_LOOKUP, empty, sizeof empty);
  EXPECT_EQ(name_arg(*parse_request(b2), 0).error().code, EBADMSG);
  auto b3 = request(FUSE_LOOKUP, nullptr, 0);
  EXPECT_EQ(name_arg(*parse_request(b3), 0).error().code, EBADMSG);
  // GETXATTR: the name follows a fuse_getxattr_in.
  std::vector<char> gx(sizeof(fuse_getxattr_in));
  const char xn[] = "user.a";
  gx.insert(gx.end(), xn, xn + sizeof xn);
  auto b4 = request(FUSE_GETXATTR, gx.data(), gx.size());
  auto n = name_arg(*parse_request(b4), sizeof(fuse_getxattr_in));
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, "user.a");
  EXPECT_EQ(name_arg(*parse_request(b4), gx.size()).error().code, EBADMSG);
}

TEST(FuseWire, FixedArgumentsNeedTheirSize) {
  fuse_read_in in{};
  in.offset = 4096;
  in.size = 131072;
  auto b = request(FUSE_READ, &in, sizeof in);
  auto got = fixed_arg<fuse_read_in>(*parse_request(b));
  ASSERT_TRUE(got);
  EXPECT_EQ(got->offset, 4096U);
  EXPECT_EQ(got->size, 131072U);
  auto shorter = request(FUSE_READ, &in, sizeof in - 1);
  EXPECT_EQ(fixed_arg<fuse_read_in>(*parse_request(shorter)).error().code, EBADMSG);
}

fuse_init_in kernel_init(std::uint32_t minor, std::uint32_t flags, std::uint32_t flags2) {
  fuse_init_in in{};
  in.major = 7;
  in.minor = minor;
  in.max_readahead = 128 << 10;
  in.flags = flags;
  in.flags2 = flags2;
  return in;
}

TEST(FuseWire, InitAnswersWhatBothSidesHave) {
  // A 6.18 kernel: 7.44, offering much, RESEND in flags2 (bit 39 - 32).
  auto in = kernel_init(44,
                        FUSE_ASYNC_READ | FUSE_POSIX_ACL | FUSE_MAX_PAGES | FUSE_DO_READDIRPLUS |
                            FUSE_WRITEBACK_CACHE | FUSE_INIT_EXT,
                        1U << 7);
  auto b = request(FUSE_INIT, &in, sizeof in);
  auto rep = negotiate_init(*parse_request(b), InitWants{});
  ASSERT_TRUE(rep) << rep.error().to_string();
  EXPECT_EQ(rep->out.major, 7U);
  EXPECT_EQ(rep->out.minor, kOurMinor);  // never more than our structs
  EXPECT_EQ(rep->size, sizeof(fuse_init_out));
  EXPECT_EQ(rep->params.kernel_minor, 44U);
  EXPECT_TRUE(can_resend(rep->params));
  // Only what we want and the kernel offers: no writeback cache, no RESEND bit echoed.
  EXPECT_EQ(rep->params.flags,
            std::uint64_t{FUSE_ASYNC_READ | FUSE_POSIX_ACL | FUSE_MAX_PAGES | FUSE_DO_READDIRPLUS});
  EXPECT_EQ(rep->out.flags, rep->params.flags);
  EXPECT_EQ(rep->out.flags2, 0U);
  EXPECT_EQ(rep->out.max_pages, 256U);
  EXPECT_EQ(rep->out.max_readahead, 1U << 20);  // at least 1 MiB
  EXPECT_EQ(rep->out.max_write, InitWants{}.max_write);
}

TEST(FuseWire, InitOfAnOlderKernel) {
  // 7.31 (Linux 5.x) sends no flags2: the short 16-byte fuse_init_in. No RESEND.
  auto in = kernel_init(31, FUSE_ASYNC_READ, 0);
  auto b = request(FUSE_INIT, &in, offsetof(fuse_init_in, flags2));
  auto rep = negotiate_init(*parse_request(b), InitWants{});
  ASSERT_TRUE(rep) << rep.error().to_string();
  EXPECT_EQ(rep->out.minor, 31U);
  EXPECT_FALSE(can_resend(rep->params));
  EXPECT_EQ(rep->params.max_pages, 0U);  // FUSE_MAX_PAGES not offered: the kernel's default
  EXPECT_EQ(rep->out.max_pages, 0U);
  // 7.22 takes the 24-byte answer.
  auto old = kernel_init(22, 0, 0);
  auto b2 = request(FUSE_INIT, &old, offsetof(fuse_init_in, flags2));
  EXPECT_EQ(negotiate_init(*parse_request(b2), InitWants{})->size,
            std::size_t{FUSE_COMPAT_22_INIT_OUT_SIZE});
}

TEST(FuseWire, InitRefusesOtherMajorsAndTruncation) {
  auto in = kernel_init(40, 0, 0);
  in.major = 8;
  auto b = request(FUSE_INIT, &in, sizeof in);
  EXPECT_EQ(negotiate_init(*parse_request(b), InitWants{}).error().code, EPROTO);
  in.major = 7;
  in.minor = 11;
  auto b2 = request(FUSE_INIT, &in, sizeof in);
  EXPECT_EQ(negotiate_init(*parse_request(b2), InitWants{}).error().code, EPROTO);
  auto b3 = request(FUSE_INIT, &in, 15);
  EXPECT_EQ(negotiate_init(*parse_request(b3), InitWants{}).error().code, EBADMSG);
}

TEST(FuseWire, ResendIsAHeaderAlone) {
  auto h = resend_notification();
  EXPECT_EQ(h.len, sizeof h);
  EXPECT_EQ(h.error, 7);  // FUSE_NOTIFY_RESEND
  EXPECT_EQ(h.unique, 0U);
}

TEST(FuseWire, ReplyHeaderNegatesTheErrno) {
  auto h = reply_header(7, ENOENT, 0);
  EXPECT_EQ(h.error, -ENOENT);
  EXPECT_EQ(h.len, sizeof h);
  EXPECT_EQ(h.unique, 7U);
  // A resent request's unique keeps its high bit in the answer.
  EXPECT_EQ(reply_header(kUniqueResend | 8, 0, 100).unique, kUniqueResend | 8);
  EXPECT_EQ(reply_header(8, 0, 100).len, sizeof h + 100);
}

TEST(FuseWire, DirentsArePaddedAndStopWhenFull) {
  std::vector<std::byte> buf(64, std::byte{0xff});
  const std::size_t n = add_dirent(buf, 0, 5, 1, DT_REG, "abc");
  EXPECT_EQ(n, 32U);  // 24-byte head + 3, rounded to 8
  fuse_dirent d{};
  std::memcpy(&d, buf.data(), FUSE_NAME_OFFSET);
  EXPECT_EQ(d.ino, 5U);
  EXPECT_EQ(d.off, 1U);
  EXPECT_EQ(d.namelen, 3U);
  EXPECT_EQ(d.type, std::uint32_t{DT_REG});
  EXPECT_EQ(std::memcmp(buf.data() + FUSE_NAME_OFFSET, "abc", 3), 0);
  for (std::size_t i = FUSE_NAME_OFFSET + 3; i < n; ++i) {
    EXPECT_EQ(buf[i], std::byte{0}) << i;  // padding is zeroed
  }
  EXPECT_EQ(add_dirent(buf, n, 6, 2, DT_DIR, "defgh"), 32U);
  EXPECT_EQ(add_dirent(buf, 2 * n, 7, 3, DT_DIR, "x"), 0U);  // full
  EXPECT_EQ(add_dirent(buf, 100, 7, 3, DT_DIR, "x"), 0U);    // past the end
}

TEST(FuseWire, DirentPlusCarriesTheEntry) {
  std::vector<std::byte> buf(512);
  fuse_entry_out e{};
  e.nodeid = 9;
  e.attr.ino = 9;
  e.attr.mode = 0100644;
  const std::size_t n = add_direntplus(buf, 0, e, 4, DT_REG, "file");
  EXPECT_EQ(n, FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET_DIRENTPLUS + 4));
  fuse_direntplus dp{};
  std::memcpy(&dp, buf.data(), sizeof dp);
  EXPECT_EQ(dp.entry_out.nodeid, 9U);
  EXPECT_EQ(dp.dirent.ino, 9U);
  EXPECT_EQ(dp.dirent.off, 4U);
  EXPECT_EQ(dp.dirent.namelen, 4U);
  EXPECT_EQ(add_direntplus(std::span(buf).first(n - 1), 0, e, 4, DT_REG, "file"), 0U);
}

}  // namespace
}  // namespace cfnd::fusewire
