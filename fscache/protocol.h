// SPDX-License-Identifier: Apache-2.0
// The cachefiles on-demand protocol of /dev/cachefiles (Linux >= 5.19 with
// CONFIG_CACHEFILES_ONDEMAND), as pure code: messages from bytes, replies and session
// commands to strings. No I/O, no logging.
//
// The kernel side is include/uapi/linux/cachefiles.h and fs/cachefiles/{daemon,ondemand}.c;
// the names here are the kernel's (msg_id, object_id, volume_key_size, copen ...) so a grep
// works across both.
//
// Protocol, in short:
//   daemon: open("/dev/cachefiles", O_RDWR)   (one opener per host; CAP_SYS_ADMIN)
//           write "dir <path>", "tag <name>", "bind ondemand"   (one command per write)
//           or, taking over a live fd from a dead daemon: write "restore"
//   kernel: one message per read(); read() returns 0 when nothing is pending
//     OPEN  -> daemon writes "copen <msg_id>,<size>" (or ",-<errno>", then closes fd itself)
//     READ  -> daemon pwrite()s [off, off+len) into the anon fd (direct I/O into the cache
//              file: page-aligned offset and buffer), then
//              ioctl(anon_fd, CACHEFILES_IOC_READ_COMPLETE, msg_id)
//     CLOSE -> no reply; the daemon closes every anon fd of object_id
//
// Byte order: the kernel copies its structs to user space as they are in memory, so every
// field is in the HOST's byte order (not little-endian on big-endian hosts). The parser
// therefore memcpy()s into the wire structs below and uses the fields as they are.
#pragma once

#include <sys/ioctl.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"

namespace fscache {

// ---- wire format (include/uapi/linux/cachefiles.h), host byte order ----

// The size of the read() buffer the kernel expects a daemon to offer (uapi
// CACHEFILES_MSG_MAX_SIZE); a smaller buffer makes read() fail with EMSGSIZE.
inline constexpr std::size_t kMsgMaxSize = 1024;

// ioctl(anon_fd, kIocReadComplete, msg_id) ends a READ (uapi CACHEFILES_IOC_READ_COMPLETE).
inline constexpr unsigned long kIocReadComplete = _IOW(0x98, 1, int);

// The opcode of a message (uapi enum cachefiles_opcode).
enum class Opcode : std::uint32_t {
  CACHEFILES_OP_OPEN = 0,
  CACHEFILES_OP_CLOSE = 1,
  CACHEFILES_OP_READ = 2,
};

// struct cachefiles_msg without its flexible data[].
struct WireMsg {
  std::uint32_t msg_id;     // request id, the first number of a copen / READ_COMPLETE
  std::uint32_t opcode;     // Opcode
  std::uint32_t len;        // whole message: this header + payload
  std::uint32_t object_id;  // the cache file this message is about
};

// struct cachefiles_open without data[] (= volume key, then cookie key).
struct WireOpen {
  std::uint32_t volume_key_size;  // including the volume key's terminating NUL
  std::uint32_t cookie_key_size;  // binary, no terminator
  std::uint32_t fd;               // anon fd to the cache file, already in the reader's fd table
  std::uint32_t flags;            // none defined yet
};

// struct cachefiles_read.
struct WireRead {
  std::uint64_t off;  // start of the wanted range in the cache file
  std::uint64_t len;  // its length
};

static_assert(sizeof(WireMsg) == 16);
static_assert(offsetof(WireMsg, msg_id) == 0);
static_assert(offsetof(WireMsg, opcode) == 4);
static_assert(offsetof(WireMsg, len) == 8);
static_assert(offsetof(WireMsg, object_id) == 12);
static_assert(sizeof(WireOpen) == 16);
static_assert(offsetof(WireOpen, volume_key_size) == 0);
static_assert(offsetof(WireOpen, cookie_key_size) == 4);
static_assert(offsetof(WireOpen, fd) == 8);
static_assert(offsetof(WireOpen, flags) == 12);
static_assert(sizeof(WireRead) == 16);
static_assert(offsetof(WireRead, off) == 0);
static_assert(offsetof(WireRead, len) == 8);

// ---- parsed messages ----

// The prefix EROFS puts before the fsid or domain_id in its volume keys.
inline constexpr std::string_view kErofsVolumePrefix = "erofs,";

struct OpenRequest {
  std::string volume_key;  // without its NUL, e.g. "erofs,<domain_id or fsid>"
  std::string cookie_key;  // the raw cookie key bytes: the fsid, or a blob's device tag
  std::uint32_t fd = 0;    // the anon fd; the daemon owns it from now on (close it on error)
  std::uint32_t flags = 0;

  // The volume key without "erofs," (EROFS: the domain_id, or the fsid when the mount has
  // no domain_id); the whole volume key when it has no such prefix.
  [[nodiscard]] std::string_view domain() const;
};

struct CloseRequest {};

struct ReadRequest {
  std::uint64_t off = 0;
  std::uint64_t len = 0;
};

struct Message {
  std::uint32_t msg_id = 0;
  std::uint32_t object_id = 0;
  std::variant<OpenRequest, CloseRequest, ReadRequest> body;

  [[nodiscard]] Opcode opcode() const;
};

// Parse one message as read() returned it: `msg` is exactly the bytes read. Checks, in
// order: the header fits; len equals the bytes read; the opcode is known; the payload size
// is exact for the opcode; OPEN key sizes add up (no overflow) to the payload, the volume
// key is non-empty and NUL-terminated at its last byte with no NUL before it; a READ range
// does not wrap. Errors: EBADMSG (malformed), EOPNOTSUPP (unknown opcode); the message
// says which check failed and the values seen.
[[nodiscard]] base::Result<Message> parse_message(base::Bytes msg);

// The bytes the kernel would send for `m` (tests, fuzzing and fakes). `len` is computed.
[[nodiscard]] std::vector<std::byte> encode_message(const Message& m);

// ---- replies and session commands (each is one write() to /dev/cachefiles) ----

// "copen <msg_id>,<cache_size>": the OPEN succeeded and the cache file holds cache_size
// bytes (the kernel reads it as a signed long). EOVERFLOW when cache_size > INT64_MAX.
[[nodiscard]] base::Result<std::string> format_copen(std::uint32_t msg_id,
                                                     std::uint64_t cache_size);
// "copen <msg_id>,-<err>": fail the OPEN with errno `err` (1..4095, else EINVAL). The
// kernel then fails the mount or device; it sends no CLOSE, so the daemon closes the fd.
[[nodiscard]] base::Result<std::string> format_copen_error(std::uint32_t msg_id, int err);

// "dir <path>": the cache directory (on a filesystem with xattrs, tmpfile and sync_fs,
// e.g. ext4; tmpfs fails at bind). "tag <name>": the cache's tag. "inuse <name>",
// "cull <name>": act on a file in the daemon's current working directory.
// The argument must be non-empty, start with no whitespace (the kernel skips it), and
// hold no NUL and no newline (the kernel rejects NUL and cuts at a newline); the whole
// command must fit in a page less one byte. Errors: EINVAL (with the reason), ENAMETOOLONG.
[[nodiscard]] base::Result<std::string> format_dir(std::string_view path);
[[nodiscard]] base::Result<std::string> format_tag(std::string_view tag);
[[nodiscard]] base::Result<std::string> format_inuse(std::string_view name);
[[nodiscard]] base::Result<std::string> format_cull(std::string_view name);
// "bind ondemand": start the cache in on-demand mode (after dir; a second bind is EBUSY).
[[nodiscard]] std::string format_bind_ondemand();
// "restore" (Linux >= 6.8): on a /dev/cachefiles fd taken over from a dead daemon, mark the
// requests it read but never answered as new again, so this daemon reads them.
[[nodiscard]] std::string format_restore();

// The longest command the kernel takes (PAGE_SIZE - 1 on 4 KiB pages).
inline constexpr std::size_t kMaxCommandSize = 4095;

}  // namespace fscache
