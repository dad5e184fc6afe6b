// SPDX-License-Identifier: Apache-2.0
// Byte helpers for parsers: bounds-checked little-endian loads into local structs.
#pragma once

#include <endian.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

namespace base {

using Bytes = std::span<const std::byte>;
using MutableBytes = std::span<std::byte>;

inline Bytes as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}
inline std::string_view as_chars(Bytes b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// True when [off, off+len) lies inside a buffer of `size` bytes (no overflow).
constexpr bool in_bounds(std::uint64_t off, std::uint64_t len, std::uint64_t size) {
  return off <= size && len <= size - off;
}

// Copy sizeof(T) bytes at `off` into a T. The caller has checked bounds.
template <typename T>
T load(Bytes b, std::size_t off) {
  static_assert(std::is_trivially_copyable_v<T>);
  T v;
  std::memcpy(&v, b.data() + off, sizeof(T));
  return v;
}

inline std::uint16_t le16(std::uint16_t v) {
  return le16toh(v);
}
inline std::uint32_t le32(std::uint32_t v) {
  return le32toh(v);
}
inline std::uint64_t le64(std::uint64_t v) {
  return le64toh(v);
}
inline std::uint16_t to_le16(std::uint16_t v) {
  return htole16(v);
}
inline std::uint32_t to_le32(std::uint32_t v) {
  return htole32(v);
}
inline std::uint64_t to_le64(std::uint64_t v) {
  return htole64(v);
}

constexpr std::uint64_t align_up(std::uint64_t v, std::uint64_t a) {
  return (v + a - 1) / a * a;
}
constexpr std::uint64_t align_down(std::uint64_t v, std::uint64_t a) {
  return v / a * a;
}
constexpr bool is_pow2(std::uint64_t v) {
  return v != 0 && (v & (v - 1)) == 0;
}

std::string to_hex(Bytes b);
// Parse lower- or upper-case hex of exactly out.size()*2 characters.
bool from_hex(std::string_view hex, MutableBytes out);

}  // namespace base
