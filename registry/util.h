// SPDX-License-Identifier: Apache-2.0
// Small pure helpers of the registry client, exposed for unit tests: retry
// back-off, Retry-After, URLs, base64, the distribution API's error answers and
// header values. Internal: not part of the public API.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"
#include "registry/client.h"
#include "registry/http.h"

namespace registry::internal {

// Full jitter: U(0, min(max_delay, base_delay * 2^attempt)); u is a uniform sample
// in [0, 1). attempt counts from 0 for the first retry.
[[nodiscard]] std::chrono::milliseconds backoff_delay(const RetryPolicy& p, int attempt, double u);

// Retry-After: delta-seconds or an HTTP date (IMF-fixdate, RFC 850 or asctime).
// nullopt for anything else. A date in the past gives 0.
[[nodiscard]] std::optional<std::chrono::milliseconds> parse_retry_after(
    std::string_view value, std::chrono::system_clock::time_point now);

struct Url {
  std::string scheme;     // "http" / "https", lower case
  std::string authority;  // host[:port] as written ("[::1]:5000")
  std::string path;       // from the first '/', with the query; "/" when absent
};
// Absolute http(s) URLs only; EINVAL otherwise (userinfo is refused).
[[nodiscard]] base::Result<Url> parse_url(std::string_view url);
// Resolve a Location header against the URL it came from (absolute, scheme-relative,
// absolute-path and relative-path forms).
[[nodiscard]] base::Result<std::string> resolve_location(std::string_view base,
                                                         std::string_view location);
// The host of an authority without the port ("[::1]:5000" -> "::1").
[[nodiscard]] std::string authority_host(std::string_view authority);

// application/x-www-form-urlencoded / query component escaping.
[[nodiscard]] std::string url_escape(std::string_view s);

[[nodiscard]] std::string base64_encode(std::string_view s);
// Standard alphabet, padding optional, whitespace refused; nullopt when malformed.
[[nodiscard]] std::optional<std::string> base64_decode(std::string_view s);

// Lower-case ASCII.
[[nodiscard]] std::string lower(std::string_view s);

// "CODE: message" from a distribution error body, or a short printable excerpt of
// the body; "" for an empty body.
[[nodiscard]] std::string registry_error_text(const http::Response& resp);
// The error for an unexpected status: 404 ENOENT, 401/403 EACCES, 416 ERANGE, else
// EIO; what names the request.
[[nodiscard]] base::Unexpected status_error(const http::Response& resp, std::string_view what);
// EINVAL unless digest is a valid sha256 digest (naming another algorithm apart).
[[nodiscard]] base::Status check_digest_arg(std::string_view digest);

// Decimal digits only, at most 19 of them.
[[nodiscard]] std::optional<std::uint64_t> parse_u64(std::string_view s);
// url with "key=value" appended as a query parameter.
[[nodiscard]] std::string with_query(const std::string& url, std::string_view kv);
// A URL as logs and error messages show it: the query (a presigned blob URL carries its
// signature there) and any user:password@ are replaced by "?…" and "…@".
[[nodiscard]] std::string url_for_log(std::string_view url);
// A refetch of bytes that were wrong: no cache on the way may answer it (RFC 9111
// 5.2.1.4; Pragma for HTTP/1.0 caches). Nothing is added when no_cache is false.
void add_no_cache(http::Request& req, bool no_cache);

struct ContentRange {
  std::uint64_t first = 0;
  std::uint64_t last = 0;
  std::optional<std::uint64_t> total;  // nullopt for "*"
};
// "bytes 1000-1999/1048576" (total may be "*"); nullopt when malformed.
[[nodiscard]] std::optional<ContentRange> parse_content_range(std::string_view v);

}  // namespace registry::internal
