// SPDX-License-Identifier: Apache-2.0
#include "fscache/protocol.h"

#include <cerrno>
#include <climits>
#include <cstring>
#include <limits>
#include <type_traits>

#include <fmt/format.h>

// Cross-check our wire structs against the system's uapi header when it is there. Only
// sizes and offsets are compared: the parser never casts bytes to the kernel's types.
#if __has_include(<linux/cachefiles.h>)
#include <linux/cachefiles.h>
static_assert(sizeof(fscache::WireMsg) == sizeof(struct cachefiles_msg));
static_assert(offsetof(struct cachefiles_msg, data) == sizeof(fscache::WireMsg));
static_assert(offsetof(struct cachefiles_msg, len) == offsetof(fscache::WireMsg, len));
static_assert(offsetof(struct cachefiles_msg, object_id) == offsetof(fscache::WireMsg, object_id));
static_assert(offsetof(struct cachefiles_open, data) == sizeof(fscache::WireOpen));
static_assert(offsetof(struct cachefiles_open, fd) == offsetof(fscache::WireOpen, fd));
static_assert(sizeof(struct cachefiles_read) == sizeof(fscache::WireRead));
static_assert(offsetof(struct cachefiles_read, len) == offsetof(fscache::WireRead, len));
static_assert(CACHEFILES_MSG_MAX_SIZE == fscache::kMsgMaxSize);
static_assert(CACHEFILES_IOC_READ_COMPLETE == fscache::kIocReadComplete);
static_assert(CACHEFILES_OP_OPEN == static_cast<int>(fscache::Opcode::CACHEFILES_OP_OPEN));
static_assert(CACHEFILES_OP_CLOSE == static_cast<int>(fscache::Opcode::CACHEFILES_OP_CLOSE));
static_assert(CACHEFILES_OP_READ == static_cast<int>(fscache::Opcode::CACHEFILES_OP_READ));
#endif

namespace fscache {
namespace {

constexpr std::size_t kHeaderSize = sizeof(WireMsg);

base::Result<OpenRequest> parse_open(base::Bytes payload) {
  if (payload.size() < sizeof(WireOpen)) {
    return base::errorf(EBADMSG, "OPEN payload of {} bytes is shorter than its {}-byte header",
                        payload.size(), sizeof(WireOpen));
  }
  const auto w = base::load<WireOpen>(payload, 0);
  const base::Bytes keys = payload.subspan(sizeof(WireOpen));
  // 64-bit sum: two u32 sizes cannot wrap it.
  const std::uint64_t want = std::uint64_t{w.volume_key_size} + w.cookie_key_size;
  if (want != keys.size()) {
    return base::errorf(EBADMSG,
                        "OPEN volume_key_size {} + cookie_key_size {} != {} key bytes in the "
                        "message",
                        w.volume_key_size, w.cookie_key_size, keys.size());
  }
  if (w.volume_key_size == 0) {
    return base::errorf(EBADMSG, "OPEN volume_key_size is 0 (the key needs its NUL)");
  }
  const base::Bytes vkey = keys.first(w.volume_key_size);
  if (vkey.back() != std::byte{0}) {
    return base::errorf(EBADMSG, "OPEN volume key of {} bytes is not NUL-terminated",
                        w.volume_key_size);
  }
  const std::string_view vchars = base::as_chars(vkey.first(vkey.size() - 1));
  if (const auto nul = vchars.find('\0'); nul != std::string_view::npos) {
    return base::errorf(EBADMSG, "OPEN volume key has a NUL at byte {} before its end ({})", nul,
                        w.volume_key_size - 1);
  }
  OpenRequest r;
  r.volume_key = std::string(vchars);
  r.cookie_key = std::string(base::as_chars(keys.subspan(w.volume_key_size)));
  r.fd = w.fd;
  r.flags = w.flags;
  return r;
}

base::Result<ReadRequest> parse_read(base::Bytes payload) {
  if (payload.size() != sizeof(WireRead)) {
    return base::errorf(EBADMSG, "READ payload is {} bytes, not {}", payload.size(),
                        sizeof(WireRead));
  }
  const auto w = base::load<WireRead>(payload, 0);
  if (w.len > std::numeric_limits<std::uint64_t>::max() - w.off) {
    return base::errorf(EBADMSG, "READ range off {} len {} wraps around", w.off, w.len);
  }
  return ReadRequest{w.off, w.len};
}

// Checks one command argument against the kernel's command parser (daemon.c).
base::Result<std::string> format_command(std::string_view cmd, std::string_view arg) {
  if (arg.empty()) {
    return base::errorf(EINVAL, "{}: empty argument", cmd);
  }
  if (arg.find('\0') != std::string_view::npos) {
    return base::errorf(EINVAL, "{}: argument has a NUL byte", cmd);
  }
  if (arg.find('\n') != std::string_view::npos) {
    return base::errorf(EINVAL, "{}: argument has a newline (the kernel cuts the command there)",
                        cmd);
  }
  const auto c = static_cast<unsigned char>(arg.front());
  if (c == ' ' || (c >= '\t' && c <= '\r')) {
    return base::errorf(EINVAL, "{}: argument starts with whitespace (the kernel drops it)", cmd);
  }
  std::string out;
  out.reserve(cmd.size() + 1 + arg.size());
  out.append(cmd).append(" ").append(arg);
  if (out.size() > kMaxCommandSize) {
    return base::errorf(ENAMETOOLONG, "{}: command of {} bytes exceeds the kernel's {}", cmd,
                        out.size(), kMaxCommandSize);
  }
  return out;
}

template <typename T>
void append_pod(std::vector<std::byte>& out, const T& v) {
  static_assert(std::is_trivially_copyable_v<T>);
  const std::size_t at = out.size();
  out.resize(at + sizeof(T));
  std::memcpy(out.data() + at, &v, sizeof(T));
}

}  // namespace

std::string_view OpenRequest::domain() const {
  std::string_view v = volume_key;
  if (v.starts_with(kErofsVolumePrefix)) {
    v.remove_prefix(kErofsVolumePrefix.size());
  }
  return v;
}

Opcode Message::opcode() const {
  if (std::holds_alternative<OpenRequest>(body)) {
    return Opcode::CACHEFILES_OP_OPEN;
  }
  if (std::holds_alternative<CloseRequest>(body)) {
    return Opcode::CACHEFILES_OP_CLOSE;
  }
  return Opcode::CACHEFILES_OP_READ;
}

base::Result<Message> parse_message(base::Bytes msg) {
  if (msg.size() < kHeaderSize) {
    return base::errorf(EBADMSG, "message of {} bytes is shorter than the {}-byte header",
                        msg.size(), kHeaderSize);
  }
  const auto h = base::load<WireMsg>(msg, 0);
  if (h.len != msg.size()) {
    return base::errorf(EBADMSG, "message len field {} != {} bytes read (msg_id {})", h.len,
                        msg.size(), h.msg_id);
  }
  const base::Bytes payload = msg.subspan(kHeaderSize);
  Message m;
  m.msg_id = h.msg_id;
  m.object_id = h.object_id;
  switch (static_cast<Opcode>(h.opcode)) {
    case Opcode::CACHEFILES_OP_OPEN: {
      auto open = parse_open(payload);
      if (!open) {
        return base::Unexpected(std::move(open).error().wrap(fmt::format("msg_id {}", h.msg_id)));
      }
      m.body = std::move(*open);
      return m;
    }
    case Opcode::CACHEFILES_OP_CLOSE:
      if (!payload.empty()) {
        return base::errorf(EBADMSG, "msg_id {}: CLOSE carries {} payload bytes, expected none",
                            h.msg_id, payload.size());
      }
      m.body = CloseRequest{};
      return m;
    case Opcode::CACHEFILES_OP_READ: {
      auto read = parse_read(payload);
      if (!read) {
        return base::Unexpected(std::move(read).error().wrap(fmt::format("msg_id {}", h.msg_id)));
      }
      m.body = *read;
      return m;
    }
  }
  return base::errorf(EOPNOTSUPP, "msg_id {}: unknown opcode {}", h.msg_id, h.opcode);
}

std::vector<std::byte> encode_message(const Message& m) {
  std::vector<std::byte> payload;
  if (const auto* o = std::get_if<OpenRequest>(&m.body)) {
    WireOpen w{};
    w.volume_key_size = static_cast<std::uint32_t>(o->volume_key.size() + 1);
    w.cookie_key_size = static_cast<std::uint32_t>(o->cookie_key.size());
    w.fd = o->fd;
    w.flags = o->flags;
    append_pod(payload, w);
    const base::Bytes v = base::as_bytes(o->volume_key);
    payload.insert(payload.end(), v.begin(), v.end());
    payload.push_back(std::byte{0});
    const base::Bytes c = base::as_bytes(o->cookie_key);
    payload.insert(payload.end(), c.begin(), c.end());
  } else if (const auto* r = std::get_if<ReadRequest>(&m.body)) {
    append_pod(payload, WireRead{r->off, r->len});
  }
  WireMsg h{};
  h.msg_id = m.msg_id;
  h.opcode = static_cast<std::uint32_t>(m.opcode());
  h.len = static_cast<std::uint32_t>(kHeaderSize + payload.size());
  h.object_id = m.object_id;
  std::vector<std::byte> out;
  out.reserve(h.len);
  append_pod(out, h);
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

base::Result<std::string> format_copen(std::uint32_t msg_id, std::uint64_t cache_size) {
  if (cache_size > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    return base::errorf(EOVERFLOW, "copen {}: size {} does not fit the kernel's signed long",
                        msg_id, cache_size);
  }
  return fmt::format("copen {},{}", msg_id, cache_size);
}

base::Result<std::string> format_copen_error(std::uint32_t msg_id, int err) {
  // The kernel takes -1..-4095 (IS_ERR_VALUE) as an errno; any other negative is EINVAL.
  if (err < 1 || err > 4095) {
    return base::errorf(EINVAL, "copen {}: errno {} is outside 1..4095", msg_id, err);
  }
  return fmt::format("copen {},-{}", msg_id, err);
}

base::Result<std::string> format_dir(std::string_view path) {
  return format_command("dir", path);
}

base::Result<std::string> format_tag(std::string_view tag) {
  return format_command("tag", tag);
}

base::Result<std::string> format_inuse(std::string_view name) {
  return format_command("inuse", name);
}

base::Result<std::string> format_cull(std::string_view name) {
  return format_command("cull", name);
}

std::string format_bind_ondemand() {
  return "bind ondemand";
}

std::string format_restore() {
  return "restore";
}

}  // namespace fscache
