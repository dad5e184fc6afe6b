// SPDX-License-Identifier: Apache-2.0
#include "snapshotter/grpc_wire.h"

namespace snapshotter {

std::optional<std::chrono::nanoseconds> parse_grpc_timeout(std::string_view v) {
  if (v.size() < 2 || v.size() > 9) {
    return std::nullopt;
  }
  int64_t n = 0;
  for (char c : v.substr(0, v.size() - 1)) {
    if (c < '0' || c > '9') {
      return std::nullopt;
    }
    n = n * 10 + (c - '0');
  }
  // 8 digits of hours (3.6e20 ns) overflow int64 nanoseconds: saturate.
  constexpr int64_t kMax = std::chrono::nanoseconds::max().count();
  auto scaled = [&](int64_t ns_per_unit) {
    return std::chrono::nanoseconds(n > kMax / ns_per_unit ? kMax : n * ns_per_unit);
  };
  switch (v.back()) {
    case 'H':
      return scaled(3600LL * 1000000000LL);
    case 'M':
      return scaled(60LL * 1000000000LL);
    case 'S':
      return scaled(1000000000LL);
    case 'm':
      return scaled(1000000LL);
    case 'u':
      return scaled(1000LL);
    case 'n':
      return scaled(1);
    default:
      return std::nullopt;
  }
}

std::string percent_encode(std::string_view v) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(v.size());
  for (char ch : v) {
    auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c <= 0x7e && c != '%') {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  return out;
}

void append_message(std::string& out, std::string_view msg) {
  auto n = static_cast<uint32_t>(msg.size());
  const char prefix[5] = {0, static_cast<char>(n >> 24), static_cast<char>(n >> 16),
                          static_cast<char>(n >> 8), static_cast<char>(n)};
  out.append(prefix, sizeof prefix);
  out.append(msg);
}

Body parse_body(std::string_view body, uint32_t max_message) {
  if (body.size() < 5) {
    return {};
  }
  auto flag = static_cast<unsigned char>(body[0]);
  if (flag > 1) {
    return {BodyState::kBadFlag, {}};
  }
  if (flag == 1) {
    return {BodyState::kCompressed, {}};
  }
  uint32_t n = 0;
  for (size_t i = 1; i < 5; ++i) {
    n = (n << 8) | static_cast<unsigned char>(body[i]);
  }
  if (n > max_message) {
    return {BodyState::kTooLarge, {}};
  }
  if (body.size() - 5 < n) {
    return {};
  }
  if (body.size() - 5 > n) {
    return {BodyState::kTrailing, {}};
  }
  return {BodyState::kOne, body.substr(5, n)};
}

}  // namespace snapshotter
