// SPDX-License-Identifier: Apache-2.0
#include "convert/options.h"

#include <charconv>
#include <string>

#include "base/bytes.h"

namespace convert {

base::Result<std::uint32_t> parse_chunk_size(std::string_view text) {
  std::string_view digits = text;
  int base_radix = 10;
  if (digits.size() > 2 && digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X')) {
    digits.remove_prefix(2);
    base_radix = 16;
  }
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value, base_radix);
  if (ec != std::errc() || end == digits.data()) {
    return base::errorf(EINVAL, "chunk size '{}': not a number", text);
  }
  std::string suffix(end, digits.data() + digits.size());
  for (char& c : suffix) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  std::uint64_t mult = 1;
  if (suffix.empty() || suffix == "b") {
    mult = 1;
  } else if (suffix == "k" || suffix == "kb" || suffix == "kib") {
    mult = 1ULL << 10;
  } else if (suffix == "m" || suffix == "mb" || suffix == "mib") {
    mult = 1ULL << 20;
  } else {
    return base::errorf(EINVAL, "chunk size '{}': unknown suffix '{}'", text, suffix);
  }
  if (value > (1ULL << 40)) {
    return base::errorf(EINVAL, "chunk size '{}': too large", text);
  }
  value *= mult;
  if (!base::is_pow2(value) || value < kMinChunkSize || value > kMaxChunkSize) {
    return base::errorf(EINVAL, "chunk size '{}': must be a power of two from 4K to 16M", text);
  }
  return static_cast<std::uint32_t>(value);
}

}  // namespace convert
