// SPDX-License-Identifier: Apache-2.0
#include "registry/util.h"

#include <time.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstring>

#include <nlohmann/json.hpp>

#include "registry/manifest.h"

namespace registry::internal {

std::chrono::milliseconds backoff_delay(const RetryPolicy& p, int attempt, double u) {
  const double base = static_cast<double>(std::max<std::int64_t>(p.base_delay.count(), 0));
  const double cap = static_cast<double>(std::max<std::int64_t>(p.max_delay.count(), 0));
  // 2^attempt overflows nothing below 64; beyond that the cap wins anyway.
  const double ceiling = std::min(cap, base * std::ldexp(1.0, std::clamp(attempt, 0, 62)));
  const double v = std::clamp(u, 0.0, 1.0) * ceiling;
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::min(v, cap)));
}

std::optional<std::chrono::milliseconds> parse_retry_after(
    std::string_view value, std::chrono::system_clock::time_point now) {
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) {
    value.remove_prefix(1);
  }
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) {
    value.remove_suffix(1);
  }
  if (value.empty() || value.size() > 64) {
    return std::nullopt;
  }
  if (std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    std::uint64_t secs = 0;
    auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), secs);
    if (ec != std::errc() || p != value.data() + value.size()) {
      // Absurdly large: treat as "a long time"; the caller caps it.
      secs = 1U << 30;
    }
    secs = std::min<std::uint64_t>(secs, 1U << 30);
    return std::chrono::milliseconds(static_cast<std::int64_t>(secs) * 1000);
  }
  const std::string s(value);
  static constexpr std::array<const char*, 3> kFormats = {
      "%a, %d %b %Y %H:%M:%S GMT",  // IMF-fixdate
      "%A, %d-%b-%y %H:%M:%S GMT",  // RFC 850
      "%a %b %e %H:%M:%S %Y",       // asctime
  };
  for (const char* f : kFormats) {
    struct tm tm = {};
    const char* end = strptime(s.c_str(), f, &tm);
    if (end == nullptr || *end != '\0') {
      continue;
    }
    const time_t t = timegm(&tm);
    if (t == static_cast<time_t>(-1)) {
      return std::nullopt;
    }
    const auto when = std::chrono::system_clock::from_time_t(t);
    if (when <= now) {
      return std::chrono::milliseconds(0);
    }
    return std::chrono::duration_cast<std::chrono::milliseconds>(when - now);
  }
  return std::nullopt;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
  }
  return out;
}

base::Result<Url> parse_url(std::string_view url) {
  const auto sep = url.find("://");
  if (sep == std::string_view::npos) {
    return base::errorf(EINVAL, "not an absolute URL: '{}'", url);
  }
  Url u;
  u.scheme = lower(url.substr(0, sep));
  if (u.scheme != "http" && u.scheme != "https") {
    return base::errorf(EINVAL, "unsupported URL scheme '{}' (http or https only)", u.scheme);
  }
  std::string_view rest = url.substr(sep + 3);
  const auto slash = rest.find_first_of("/?#");
  std::string_view auth = rest.substr(0, slash);
  if (auth.empty()) {
    return base::errorf(EINVAL, "URL without a host: '{}'", url);
  }
  if (auth.find('@') != std::string_view::npos) {
    return base::errorf(EINVAL, "URL with user information refused: '{}'", url);
  }
  for (char c : auth) {
    if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
      return base::errorf(EINVAL, "bad character in URL host: '{}'", url);
    }
  }
  u.authority = std::string(auth);
  if (slash == std::string_view::npos) {
    u.path = "/";
  } else {
    std::string_view p = rest.substr(slash);
    if (const auto hash = p.find('#'); hash != std::string_view::npos) {
      p = p.substr(0, hash);
    }
    u.path = p.empty() || p.front() != '/' ? "/" + std::string(p) : std::string(p);
  }
  return u;
}

base::Result<std::string> resolve_location(std::string_view base, std::string_view location) {
  if (location.empty()) {
    return base::errorf(EINVAL, "empty Location");
  }
  for (char c : location) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return base::errorf(EINVAL, "control character in Location");
    }
  }
  if (location.find("://") != std::string_view::npos &&
      location.find("://") < location.find_first_of("/?")) {
    CFN_TRY(parse_url(location));
    return std::string(location);
  }
  CFN_ASSIGN_OR_RETURN(const Url b, parse_url(base));
  if (location.starts_with("//")) {
    CFN_TRY(parse_url(b.scheme + ":" + std::string(location)));
    return b.scheme + ":" + std::string(location);
  }
  if (location.front() == '/') {
    return b.scheme + "://" + b.authority + std::string(location);
  }
  if (location.front() == '?') {
    const std::string_view bp = std::string_view(b.path).substr(0, b.path.find('?'));
    return b.scheme + "://" + b.authority + std::string(bp) + std::string(location);
  }
  std::string_view dir = std::string_view(b.path).substr(0, b.path.find('?'));
  dir = dir.substr(0, dir.rfind('/') + 1);
  return b.scheme + "://" + b.authority + std::string(dir) + std::string(location);
}

std::string authority_host(std::string_view authority) {
  if (authority.starts_with('[')) {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) {
      return std::string(authority);
    }
    return std::string(authority.substr(1, close - 1));
  }
  // A bare IPv6 address has several colons: no port.
  if (std::count(authority.begin(), authority.end(), ':') > 1) {
    return std::string(authority);
  }
  return std::string(authority.substr(0, authority.find(':')));
}

std::string url_escape(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~') {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::string registry_error_text(const http::Response& resp) {
  const std::string_view text = base::as_chars(resp.body);
  if (text.empty()) {
    return {};
  }
  const auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_discarded() && j.is_object()) {
    const auto errs = j.find("errors");
    if (errs != j.end() && errs->is_array() && !errs->empty() && (*errs)[0].is_object()) {
      const auto& e = (*errs)[0];
      std::string out;
      if (const auto c = e.find("code"); c != e.end() && c->is_string()) {
        out = c->get<std::string>();
      }
      if (const auto m = e.find("message"); m != e.end() && m->is_string()) {
        out += (out.empty() ? "" : ": ") + m->get<std::string>();
      }
      return out.substr(0, 300);
    }
  }
  std::string excerpt;
  for (char c : text.substr(0, 200)) {
    excerpt.push_back(c >= 0x20 && c < 0x7f ? c : ' ');
  }
  return excerpt;
}

base::Unexpected status_error(const http::Response& resp, std::string_view what) {
  const std::string detail = registry_error_text(resp);
  const std::string suffix = detail.empty() ? "" : " (" + detail + ")";
  switch (resp.status) {
    case 404:
      return base::errorf(ENOENT, "{}: not found{}", what, suffix);
    case 401:
    case 403:
      return base::errorf(EACCES, "{}: access denied, HTTP {}{}", what, resp.status, suffix);
    case 416:
      return base::errorf(ERANGE, "{}: range not satisfiable (HTTP 416)", what);
    default:
      return base::errorf(EIO, "{}: unexpected HTTP {}{}", what, resp.status, suffix);
  }
}

base::Status check_digest_arg(std::string_view digest) {
  if (is_valid_digest(digest)) {
    return {};
  }
  const auto colon = digest.find(':');
  if (colon != std::string_view::npos && colon > 0 && digest.substr(0, colon) != "sha256") {
    return base::errorf(EINVAL, "unsupported digest algorithm '{}' (only sha256)",
                        digest.substr(0, std::min<std::size_t>(colon, 32)));
  }
  return base::errorf(EINVAL, "malformed digest '{}'", digest.substr(0, 80));
}

std::optional<std::uint64_t> parse_u64(std::string_view s) {
  if (s.empty() || s.size() > 19) {
    return std::nullopt;
  }
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') {
      return std::nullopt;
    }
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return v;
}

std::string with_query(const std::string& url, std::string_view kv) {
  return url + (url.find('?') == std::string::npos ? "?" : "&") + std::string(kv);
}

std::optional<ContentRange> parse_content_range(std::string_view v) {
  if (!v.starts_with("bytes ")) {
    return std::nullopt;
  }
  v.remove_prefix(6);
  const auto dash = v.find('-');
  const auto slash = v.find('/');
  if (dash == std::string_view::npos || slash == std::string_view::npos || dash > slash) {
    return std::nullopt;
  }
  ContentRange r;
  auto a = parse_u64(v.substr(0, dash));
  auto b = parse_u64(v.substr(dash + 1, slash - dash - 1));
  if (!a || !b || *b < *a) {
    return std::nullopt;
  }
  r.first = *a;
  r.last = *b;
  if (v.substr(slash + 1) != "*") {
    r.total = parse_u64(v.substr(slash + 1));
    if (!r.total) {
      return std::nullopt;
    }
  }
  return r;
}

namespace {
constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}  // namespace

std::string base64_encode(std::string_view s) {
  std::string out;
  out.reserve((s.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= s.size(); i += 3) {
    const std::uint32_t v = (static_cast<unsigned char>(s[i]) << 16) |
                            (static_cast<unsigned char>(s[i + 1]) << 8) |
                            static_cast<unsigned char>(s[i + 2]);
    out.push_back(kB64[(v >> 18) & 63]);
    out.push_back(kB64[(v >> 12) & 63]);
    out.push_back(kB64[(v >> 6) & 63]);
    out.push_back(kB64[v & 63]);
  }
  const std::size_t rem = s.size() - i;
  if (rem == 1) {
    const std::uint32_t v = static_cast<unsigned char>(s[i]) << 16;
    out.push_back(kB64[(v >> 18) & 63]);
    out.push_back(kB64[(v >> 12) & 63]);
    out += "==";
  } else if (rem == 2) {
    const std::uint32_t v =
        (static_cast<unsigned char>(s[i]) << 16) | (static_cast<unsigned char>(s[i + 1]) << 8);
    out.push_back(kB64[(v >> 18) & 63]);
    out.push_back(kB64[(v >> 12) & 63]);
    out.push_back(kB64[(v >> 6) & 63]);
    out.push_back('=');
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view s) {
  while (!s.empty() && s.back() == '=') {
    s.remove_suffix(1);
  }
  if (s.size() % 4 == 1) {
    return std::nullopt;
  }
  std::string out;
  out.reserve(s.size() * 3 / 4);
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    const char* p = c == '\0' ? nullptr : std::strchr(kB64, c);
    if (p == nullptr) {
      return std::nullopt;
    }
    acc = (acc << 6) | static_cast<std::uint32_t>(p - kB64);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

}  // namespace registry::internal
