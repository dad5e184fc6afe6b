// SPDX-License-Identifier: Apache-2.0
#include "daemon/fuse_wire.h"

#include <algorithm>

namespace cfnd::fusewire {

base::Result<Request> parse_request(std::span<const std::byte> bytes) {
  Request r;
  if (bytes.size() < sizeof r.header) {
    return base::errorf(EBADMSG, "fuse request of {} bytes: shorter than its header", bytes.size());
  }
  std::memcpy(&r.header, bytes.data(), sizeof r.header);
  if (r.header.len != bytes.size()) {
    return base::errorf(EBADMSG, "fuse request: header says {} bytes, {} read", r.header.len,
                        bytes.size());
  }
  r.args = bytes.subspan(sizeof r.header);
  return r;
}

base::Result<std::string_view> name_arg(const Request& r, std::size_t skip) {
  if (skip >= r.args.size()) {
    return base::errorf(EBADMSG, "fuse opcode {}: no name", r.header.opcode);
  }
  const auto* p = reinterpret_cast<const char*>(r.args.data()) + skip;
  const std::size_t n = r.args.size() - skip;
  const auto* nul = static_cast<const char*>(std::memchr(p, 0, n));
  if (nul == nullptr || nul == p) {
    return base::errorf(EBADMSG, "fuse opcode {}: name without NUL or empty", r.header.opcode);
  }
  return std::string_view(p, static_cast<std::size_t>(nul - p));
}

base::Result<InitReply> negotiate_init(const Request& r, const InitWants& wants) {
  // The kernel sends 16 bytes before 7.36 (no flags2), 64 from then on.
  constexpr std::size_t kShortInit = offsetof(fuse_init_in, flags2);
  if (r.args.size() < kShortInit) {
    return base::errorf(EBADMSG, "fuse INIT: {} argument bytes", r.args.size());
  }
  fuse_init_in in{};
  std::memcpy(&in, r.args.data(), std::min(r.args.size(), sizeof in));
  if (in.major != kOurMajor || in.minor < 12) {
    return base::errorf(EPROTO, "fuse INIT: kernel protocol {}.{}, this daemon speaks {}.12..{}",
                        in.major, in.minor, kOurMajor, kOurMinor);
  }
  std::uint64_t offered = in.flags;
  if ((in.flags & FUSE_INIT_EXT) != 0 && r.args.size() >= sizeof in) {
    offered |= static_cast<std::uint64_t>(in.flags2) << 32;
  }
  constexpr std::uint64_t kWanted = FUSE_ASYNC_READ | FUSE_PARALLEL_DIROPS | FUSE_DO_READDIRPLUS |
                                    FUSE_READDIRPLUS_AUTO | FUSE_AUTO_INVAL_DATA | FUSE_ASYNC_DIO |
                                    FUSE_POSIX_ACL | FUSE_MAX_PAGES;
  InitReply rep;
  auto& p = rep.params;
  p.kernel_minor = in.minor;
  p.minor = std::min(in.minor, kOurMinor);
  p.flags = offered & kWanted;
  p.max_readahead = std::max(in.max_readahead, wants.min_readahead);
  p.max_write = wants.max_write;
  p.max_pages = (p.flags & FUSE_MAX_PAGES) != 0 ? wants.max_pages : 0;
  p.time_gran = 1;
  auto& o = rep.out;
  o.major = kOurMajor;
  o.minor = p.minor;
  o.max_readahead = p.max_readahead;
  o.flags = static_cast<std::uint32_t>(p.flags);
  o.flags2 = static_cast<std::uint32_t>(p.flags >> 32);
  o.max_write = p.max_write;
  o.time_gran = p.time_gran;
  o.max_pages = static_cast<std::uint16_t>(p.max_pages);
  rep.size = p.minor < 23 ? FUSE_COMPAT_22_INIT_OUT_SIZE : sizeof o;
  return rep;
}

fuse_out_header resend_notification() {
  fuse_out_header h{};
  h.len = sizeof h;
  h.error = static_cast<std::int32_t>(kNotifyResend);
  h.unique = 0;
  return h;
}

fuse_out_header reply_header(std::uint64_t unique, int err, std::size_t payload) {
  fuse_out_header h{};
  h.len = static_cast<std::uint32_t>(sizeof h + payload);
  h.error = -err;
  h.unique = unique;
  return h;
}

namespace {

// The dirent part of an entry at `at`, name included; the padding is zeroed.
void put_dirent(std::byte* at, std::size_t padded, std::uint64_t ino, std::uint64_t off,
                std::uint32_t type, std::string_view name) {
  fuse_dirent d{};
  d.ino = ino;
  d.off = off;
  d.namelen = static_cast<std::uint32_t>(name.size());
  d.type = type;
  std::memset(at, 0, padded);
  std::memcpy(at, &d, FUSE_NAME_OFFSET);
  std::memcpy(at + FUSE_NAME_OFFSET, name.data(), name.size());
}

}  // namespace

std::size_t add_dirent(std::span<std::byte> out, std::size_t used, std::uint64_t ino,
                       std::uint64_t off, std::uint32_t type, std::string_view name) {
  const std::size_t n = FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + name.size());
  if (used > out.size() || n > out.size() - used) {
    return 0;
  }
  put_dirent(out.data() + used, n, ino, off, type, name);
  return n;
}

std::size_t add_direntplus(std::span<std::byte> out, std::size_t used, const fuse_entry_out& entry,
                           std::uint64_t off, std::uint32_t type, std::string_view name) {
  const std::size_t n = FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET_DIRENTPLUS + name.size());
  if (used > out.size() || n > out.size() - used) {
    return 0;
  }
  std::byte* at = out.data() + used;
  std::memcpy(at, &entry, sizeof entry);
  put_dirent(at + sizeof entry, n - sizeof entry, entry.attr.ino, off, type, name);
  return n;
}

}  // namespace cfnd::fusewire
