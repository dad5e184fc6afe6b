// SPDX-License-Identifier: Apache-2.0
// The FUSE wire protocol (linux/fuse.h), as pure functions: a request's header and
// arguments from the bytes one read(2) of /dev/fuse returned, the INIT negotiation, reply
// headers and the layout of directory entries. No I/O, no logging.
//
// The daemon speaks the protocol on /dev/fuse itself instead of through libfuse, because
// a restarted daemon (failover) takes over a session whose INIT the dead daemon already
// answered: libfuse's session refuses every request before it has seen an INIT and has
// no way to start from remembered INIT parameters. InitParams is what a successor needs.
#pragma once

#include <linux/fuse.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

#include "base/result.h"

namespace cfnd::fusewire {

// Protocol 7.40 (Linux 6.9), newer than Debian 12's <linux/fuse.h> (7.38).
inline constexpr std::uint32_t kNotifyResend = 7;           // FUSE_NOTIFY_RESEND
inline constexpr std::uint64_t kUniqueResend = 1ULL << 63;  // FUSE_UNIQUE_RESEND: a re-sent request
inline constexpr std::uint32_t kResendMinor = 40;           // the first minor with RESEND

// The protocol version this daemon answers with: the structs of <linux/fuse.h>.
inline constexpr std::uint32_t kOurMajor = FUSE_KERNEL_VERSION;
inline constexpr std::uint32_t kOurMinor = FUSE_KERNEL_MINOR_VERSION;

// What INIT settled for a connection. A daemon that takes a live session over starts
// from these (the kernel sends INIT once per connection).
struct InitParams {
  std::uint32_t kernel_minor = 0;  // the kernel's protocol minor (major is 7)
  std::uint32_t minor = 0;         // the minor answered: min(kernel_minor, kOurMinor)
  std::uint64_t flags = 0;         // the flags answered (flags | flags2 << 32)
  std::uint32_t max_readahead = 0;
  std::uint32_t max_write = 0;
  std::uint32_t max_pages = 0;  // 0: the kernel's default (FUSE_MAX_PAGES not answered)
  std::uint32_t time_gran = 0;

  bool operator==(const InitParams&) const = default;
};

// True when the kernel takes FUSE_NOTIFY_RESEND (protocol >= 7.40).
[[nodiscard]] inline bool can_resend(const InitParams& p) {
  return p.kernel_minor >= kResendMinor;
}

// What this daemon asks for in INIT.
struct InitWants {
  std::uint32_t min_readahead = 1U << 20;  // answer at least this max_readahead
  std::uint32_t max_pages = 256;           // the largest READ, in pages
  std::uint32_t max_write = 1U << 16;      // no writes come (read-only); bounds the read buffer
};

// One request: its header and the bytes after it (header.len - sizeof header).
struct Request {
  fuse_in_header header{};
  std::span<const std::byte> args;
};

// Pure. EBADMSG when shorter than a header or when header.len is not bytes.size().
[[nodiscard]] base::Result<Request> parse_request(std::span<const std::byte> bytes);

// Pure. The first sizeof(T) argument bytes as a T. EBADMSG when fewer are there.
template <typename T>
[[nodiscard]] base::Result<T> fixed_arg(const Request& r) {
  if (r.args.size() < sizeof(T)) {
    return base::errorf(EBADMSG, "fuse opcode {}: {} argument bytes, {} needed", r.header.opcode,
                        r.args.size(), sizeof(T));
  }
  T t;
  std::memcpy(&t, r.args.data(), sizeof t);
  return t;
}

// Pure. The NUL-terminated name that starts `skip` bytes into the arguments. EBADMSG
// when there is no NUL or the name is empty.
[[nodiscard]] base::Result<std::string_view> name_arg(const Request& r, std::size_t skip);

struct InitReply {
  fuse_init_out out{};
  std::size_t size = 0;  // bytes of `out` to send (older minors take a shorter struct)
  InitParams params;
};

// Pure. The answer to an INIT request (r.header.opcode == FUSE_INIT). Flags answered:
// those the kernel offers among ASYNC_READ, PARALLEL_DIROPS, DO_READDIRPLUS,
// READDIRPLUS_AUTO, AUTO_INVAL_DATA, ASYNC_DIO, POSIX_ACL and MAX_PAGES. EPROTO for a
// major other than 7 or a minor below 12; EBADMSG for a truncated fuse_init_in.
[[nodiscard]] base::Result<InitReply> negotiate_init(const Request& r, const InitWants& wants);

// Pure. The bytes of a FUSE_NOTIFY_RESEND message (a header alone, unique 0).
[[nodiscard]] fuse_out_header resend_notification();

// Pure. A reply header: err is 0 or a positive errno (sent negated), payload the bytes
// after the header.
[[nodiscard]] fuse_out_header reply_header(std::uint64_t unique, int err, std::size_t payload);

// Pure. Append one READDIR entry to out at `used`; returns the bytes added, 0 when it
// does not fit (the kernel asks again from this entry's offset). off is the offset of
// the entry after this one.
[[nodiscard]] std::size_t add_dirent(std::span<std::byte> out, std::size_t used, std::uint64_t ino,
                                     std::uint64_t off, std::uint32_t type, std::string_view name);
// Pure. The same for READDIRPLUS, with the entry's lookup answer.
[[nodiscard]] std::size_t add_direntplus(std::span<std::byte> out, std::size_t used,
                                         const fuse_entry_out& entry, std::uint64_t off,
                                         std::uint32_t type, std::string_view name);

}  // namespace cfnd::fusewire
