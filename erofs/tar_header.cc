// SPDX-License-Identifier: Apache-2.0
#include "erofs/tar_header.h"

#include <algorithm>
#include <cstring>
#include <optional>

namespace erofs {
namespace {

// Field offsets and sizes of the header block.
constexpr std::size_t kNameOff = 0, kNameLen = 100;
constexpr std::size_t kSizeOff = 124, kSizeLen = 12;
constexpr std::size_t kMtimeOff = 136;
constexpr std::size_t kChksumOff = 148, kChksumLen = 8;
constexpr std::size_t kTypeOff = 156;
constexpr std::size_t kMagicOff = 257;
constexpr std::size_t kPrefixOff = 345, kPrefixLen = 155;
constexpr std::string_view kGnuMagic{"ustar  \0", 8};
constexpr std::string_view kUstarMagic{"ustar\0", 6};

std::string_view field_str(base::Bytes h, std::size_t off, std::size_t len) {
  const std::string_view s = base::as_chars(h.subspan(off, len));
  return s.substr(0, s.find('\0'));
}

// Octal digits with spaces or NULs before and after; GNU base-256 when the first
// byte has its high bit (a set 0x40 bit too would be negative: refused).
std::optional<std::uint64_t> parse_number(base::Bytes f) {
  const auto first = std::to_integer<unsigned>(f[0]);
  if ((first & 0x80U) != 0) {
    if ((first & 0x40U) != 0) {
      return std::nullopt;
    }
    std::uint64_t v = first & 0x3FU;
    for (std::size_t i = 1; i < f.size(); ++i) {
      if (v > (UINT64_MAX >> 8)) {
        return std::nullopt;
      }
      v = (v << 8) | std::to_integer<std::uint64_t>(f[i]);
    }
    return v;
  }
  const std::string_view s = base::as_chars(f);
  std::size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\0')) {
    ++i;
  }
  std::uint64_t v = 0;
  bool any = false;
  for (; i < s.size() && s[i] >= '0' && s[i] <= '7'; ++i) {
    if (v > (UINT64_MAX >> 3)) {
      return std::nullopt;
    }
    v = (v << 3) | static_cast<std::uint64_t>(s[i] - '0');
    any = true;
  }
  for (; i < s.size(); ++i) {
    if (s[i] != ' ' && s[i] != '\0') {
      return std::nullopt;
    }
  }
  return any ? std::optional<std::uint64_t>(v) : std::nullopt;
}

// The checksum field counts as eight spaces.
std::uint32_t unsigned_sum(base::Bytes h) {
  std::uint32_t sum = 0;
  for (std::size_t i = 0; i < kTarBlockSize; ++i) {
    const bool in_field = i >= kChksumOff && i < kChksumOff + kChksumLen;
    sum += in_field ? std::uint32_t{' '} : std::to_integer<std::uint32_t>(h[i]);
  }
  return sum;
}

std::int32_t signed_sum(base::Bytes h) {
  std::int32_t sum = 0;
  for (std::size_t i = 0; i < kTarBlockSize; ++i) {
    const bool in_field = i >= kChksumOff && i < kChksumOff + kChksumLen;
    sum += in_field ? std::int32_t{' '} : static_cast<signed char>(h[i]);
  }
  return sum;
}

void put_octal(std::vector<std::byte>& h, std::size_t off, std::size_t digits, std::uint64_t v) {
  for (std::size_t i = digits; i-- > 0;) {
    h[off + i] = static_cast<std::byte>('0' + (v & 7));
    v >>= 3;
  }
  h[off + digits] = std::byte{0};
}

}  // namespace

bool is_zero_tar_block(base::Bytes block) {
  return std::all_of(block.begin(), block.end(), [](std::byte b) { return b == std::byte{0}; });
}

base::Result<TarHeader> decode_tar_header(base::Bytes h) {
  if (h.size() != kTarBlockSize) {
    return base::errorf(EBADMSG, "tar header is {} bytes, not {}", h.size(), kTarBlockSize);
  }
  const auto stored = parse_number(h.subspan(kChksumOff, kChksumLen));
  if (!stored || (*stored != unsigned_sum(h) &&
                  static_cast<std::int64_t>(*stored) != std::int64_t{signed_sum(h)})) {
    return base::make_error(EBADMSG, "tar header checksum mismatch");
  }
  const auto size = parse_number(h.subspan(kSizeOff, kSizeLen));
  if (!size) {
    return base::make_error(EBADMSG, "tar header has a bad size field");
  }
  TarHeader out;
  out.size = *size;
  out.type = static_cast<char>(h[kTypeOff]);
  const std::string_view magic = base::as_chars(h.subspan(kMagicOff, kGnuMagic.size()));
  if (magic == kGnuMagic) {
    out.magic = TarMagic::kGnu;
  } else if (magic.starts_with(kUstarMagic)) {
    out.magic = TarMagic::kUstar;
  }
  out.name = std::string(field_str(h, kNameOff, kNameLen));
  const std::string_view prefix = field_str(h, kPrefixOff, kPrefixLen);
  if (out.magic == TarMagic::kUstar && !prefix.empty()) {
    out.name = std::string(prefix) + "/" + out.name;
  }
  return out;
}

std::vector<std::byte> encode_tar_header(std::string_view name, std::uint64_t size) {
  std::vector<std::byte> h(kTarBlockSize, std::byte{0});
  const std::size_t n = std::min(name.size(), kNameLen - 1);
  std::memcpy(h.data() + kNameOff, name.data(), n);
  if (size < (1ULL << 33)) {
    put_octal(h, kSizeOff, 11, size);
  } else {
    // GNU base-256: a leading 0x80 byte, then the value big-endian.
    h[kSizeOff] = std::byte{0x80};
    for (std::size_t i = kSizeLen; i-- > 1;) {
      h[kSizeOff + i] = static_cast<std::byte>(size & 0xff);
      size >>= 8;
    }
  }
  put_octal(h, kMtimeOff, 11, 0);
  h[kTypeOff] = std::byte{'0'};
  std::memcpy(h.data() + kMagicOff, kGnuMagic.data(), kGnuMagic.size());
  put_octal(h, kChksumOff, 7, unsigned_sum(h));  // 7 digits + NUL
  return h;
}

}  // namespace erofs
