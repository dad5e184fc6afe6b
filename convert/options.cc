// SPDX-License-Identifier: Apache-2.0
#include "convert/options.h"

#include <cctype>
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

base::Result<std::vector<std::string>> parse_prefetch_list(std::string_view text) {
  std::vector<std::string> out;
  std::size_t lineno = 0;
  while (!text.empty()) {
    ++lineno;
    const std::size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.front())) != 0) {
      line.remove_prefix(1);
    }
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back())) != 0) {
      line.remove_suffix(1);
    }
    if (line.empty() || line.front() == '#') {
      continue;
    }
    if (line.find('\0') != std::string_view::npos) {
      return base::errorf(EINVAL, "prefetch list line {}: a NUL byte in the path", lineno);
    }
    std::string path;
    std::size_t pos = 0;
    while (pos <= line.size()) {
      std::size_t slash = line.find('/', pos);
      if (slash == std::string_view::npos) {
        slash = line.size();
      }
      const std::string_view comp = line.substr(pos, slash - pos);
      pos = slash + 1;
      if (comp.empty()) {
        continue;
      }
      if (comp == "." || comp == "..") {
        return base::errorf(EINVAL, "prefetch list line {}: '{}' has a '{}' component", lineno,
                            line, comp);
      }
      path += "/";
      path += comp;
    }
    out.push_back(path.empty() ? "/" : path);
  }
  return out;
}

}  // namespace convert
