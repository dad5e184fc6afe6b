// SPDX-License-Identifier: Apache-2.0
#include "registry/util.h"

#include <time.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <memory>

#include <curl/curl.h>
#include <nlohmann/json.hpp>
#include <openssl/evp.h>

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
  // HTTP-date (IMF-fixdate, RFC 850 or asctime): curl_getdate reads all three, and
  // more; every HTTP-date has a time of day, a bare date is not one.
  if (value.find(':') == std::string_view::npos) {
    return std::nullopt;
  }
  const std::string s(value);
  const time_t t = curl_getdate(s.c_str(), nullptr);
  if (t == static_cast<time_t>(-1)) {
    return std::nullopt;
  }
  const auto when = std::chrono::system_clock::from_time_t(t);
  if (when <= now) {
    return std::chrono::milliseconds(0);
  }
  return std::chrono::duration_cast<std::chrono::milliseconds>(when - now);
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

namespace {

struct CurlUrlDeleter {
  void operator()(CURLU* u) const { curl_url_cleanup(u); }
};
using CurlUrl = std::unique_ptr<CURLU, CurlUrlDeleter>;

// One part of u; nullopt when u has none.
std::optional<std::string> url_part(CURLU* u, CURLUPart what) {
  char* p = nullptr;
  if (curl_url_get(u, what, &p, 0) != CURLUE_OK || p == nullptr) {
    return std::nullopt;
  }
  std::string out(p);
  curl_free(p);
  return out;
}

base::Status check_chars(std::string_view s, std::string_view what) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return base::errorf(EINVAL, "control character in {}", what);
    }
  }
  return {};
}

// u's parts as a Url: http(s) only, no user information, a plain ASCII host.
base::Result<Url> to_url(CURLU* u, std::string_view text) {
  Url out;
  out.scheme = lower(url_part(u, CURLUPART_SCHEME).value_or(""));
  if (out.scheme != "http" && out.scheme != "https") {
    return base::errorf(EINVAL, "unsupported URL scheme '{}' (http or https only)", out.scheme);
  }
  if (url_part(u, CURLUPART_USER) || url_part(u, CURLUPART_PASSWORD)) {
    return base::errorf(EINVAL, "URL with user information refused: '{}'", text);
  }
  const std::string host = url_part(u, CURLUPART_HOST).value_or("");
  if (host.empty()) {
    return base::errorf(EINVAL, "URL without a host: '{}'", text);
  }
  for (char c : host) {
    if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
      return base::errorf(EINVAL, "bad character in URL host: '{}'", text);
    }
  }
  out.authority = host;
  if (const auto port = url_part(u, CURLUPART_PORT)) {
    out.authority += ":" + *port;
  }
  out.path = url_part(u, CURLUPART_PATH).value_or("/");
  if (out.path.empty() || out.path.front() != '/') {
    out.path = "/" + out.path;
  }
  if (const auto query = url_part(u, CURLUPART_QUERY)) {
    out.path += "?" + *query;
  }
  return out;
}

// text as an absolute URL into u (resolved against what u holds, if anything).
base::Status set_url(CURLU* u, std::string_view text) {
  const std::string s(text);
  const CURLUcode rc = curl_url_set(u, CURLUPART_URL, s.c_str(), 0);
  if (rc != CURLUE_OK) {
    return base::errorf(EINVAL, "bad URL '{}': {}", text.substr(0, 200), curl_url_strerror(rc));
  }
  return {};
}

}  // namespace

base::Result<Url> parse_url(std::string_view url) {
  const auto sep = url.find("://");
  if (sep == std::string_view::npos) {
    return base::errorf(EINVAL, "not an absolute URL: '{}'", url);
  }
  // curl reads "http:///x" as host x; an empty authority is an error here.
  if (sep + 3 == url.size() || url.substr(sep + 3, 1).find_first_of("/?#") == 0) {
    return base::errorf(EINVAL, "URL without a host: '{}'", url);
  }
  CFN_TRY(check_chars(url, "URL"));
  CurlUrl u(curl_url());
  if (!u) {
    return base::make_error(ENOMEM, "curl_url failed");
  }
  // The scheme first, for its own error (curl would refuse an unknown one vaguely).
  const std::string scheme = lower(url.substr(0, sep));
  if (scheme != "http" && scheme != "https") {
    return base::errorf(EINVAL, "unsupported URL scheme '{}' (http or https only)", scheme);
  }
  CFN_TRY(set_url(u.get(), url));
  return to_url(u.get(), url);
}

base::Result<std::string> resolve_location(std::string_view base, std::string_view location) {
  if (location.empty()) {
    return base::errorf(EINVAL, "empty Location");
  }
  CFN_TRY(check_chars(location, "Location"));
  CFN_TRY(parse_url(base));
  CurlUrl u(curl_url());
  if (!u) {
    return base::make_error(ENOMEM, "curl_url failed");
  }
  CFN_TRY(set_url(u.get(), base));
  CFN_TRY(set_url(u.get(), location));  // RFC 3986 reference resolution
  CFN_TRY(to_url(u.get(), location));
  auto out = url_part(u.get(), CURLUPART_URL);
  if (!out) {
    return base::errorf(EINVAL, "bad Location '{}'", location.substr(0, 200));
  }
  // The fragment never goes on the wire.
  if (const auto hash = out->find('#'); hash != std::string::npos) {
    out->resize(hash);
  }
  return std::move(*out);
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
  // Everything but the unreserved characters (A-Z a-z 0-9 - . _ ~) is %XX-escaped.
  // The handle argument has been unused since curl 7.82.
  char* e = curl_easy_escape(nullptr, s.data(), static_cast<int>(s.size()));
  if (e == nullptr) {
    return {};  // out of memory: an empty parameter fails the request, not the process
  }
  std::string out(e);
  curl_free(e);
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

std::string base64_encode(std::string_view s) {
  std::string out(4 * ((s.size() + 2) / 3), '\0');
  const int n =
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                      reinterpret_cast<const unsigned char*>(s.data()), static_cast<int>(s.size()));
  out.resize(static_cast<std::size_t>(std::max(n, 0)));
  return out;
}

std::optional<std::string> base64_decode(std::string_view s) {
  while (!s.empty() && s.back() == '=') {
    s.remove_suffix(1);
  }
  if (s.size() % 4 == 1 || s.size() > (1U << 30)) {
    return std::nullopt;
  }
  // EVP_DecodeBlock trims white space and takes '=' anywhere: both refused here.
  const bool alphabet = std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
  });
  if (!alphabet) {
    return std::nullopt;
  }
  // It wants whole quads, and decodes the padding as zero bytes: pad, then drop them.
  const std::size_t pad = (4 - s.size() % 4) % 4;
  std::string in(s);
  in.append(pad, '=');
  std::string out(in.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()),
                                static_cast<int>(in.size()));
  if (n < 0 || static_cast<std::size_t>(n) != out.size()) {
    return std::nullopt;
  }
  out.resize(out.size() - pad);
  return out;
}

std::string url_for_log(std::string_view url) {
  std::string_view rest = url;
  std::string out;
  if (const auto scheme = rest.find("://"); scheme != std::string_view::npos) {
    out.append(rest.substr(0, scheme + 3));
    rest.remove_prefix(scheme + 3);
    const auto auth_end = rest.find_first_of("/?#");
    const auto at = rest.substr(0, auth_end).rfind('@');
    if (at != std::string_view::npos) {
      out.append("\u2026@");
      rest.remove_prefix(at + 1);
    }
  }
  const auto query = rest.find_first_of("?#");
  out.append(rest.substr(0, query));
  if (query != std::string_view::npos) {
    out.append(rest[query] == '?' ? "?\u2026" : "#\u2026");
  }
  return out;
}

void add_no_cache(http::Request& req, bool no_cache) {
  if (no_cache) {
    req.headers.emplace_back("Cache-Control: no-cache");
    req.headers.emplace_back("Pragma: no-cache");
  }
}

}  // namespace registry::internal
