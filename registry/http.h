// SPDX-License-Identifier: Apache-2.0
// The HTTP layer of the registry client over libcurl (internal). One Transport is
// shared by all threads: a CURLSH shares connections, DNS and TLS sessions. It does
// retries (5xx, 429 with Retry-After, resets, timeouts; never other 4xx) with full
// jitter, and follows redirects itself so that Authorization never leaves the host
// it was meant for. It knows nothing of registries or auth.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"
#include "registry/client.h"

namespace registry::http {

// Lower-cased names; a header sent twice keeps both values.
using Headers = std::multimap<std::string, std::string>;
[[nodiscard]] std::optional<std::string> header(const Headers& h, const std::string& lower_name);

// A request body: bytes in memory, or size bytes of fd from offset (re-read with
// pread on every try, so a retried upload sends the same bytes).
struct Body {
  base::Bytes mem;
  int fd = -1;
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
};

// Streaming consumer of a 2xx body. on_headers runs at the start of every try that
// got a 2xx (so it also resets the sink for a retry); on_data returns true to go
// on, false when it has all it wants (the transfer is stopped, not an error).
// An error from either ends the request, without retry.
struct Sink {
  std::function<base::Status(long status, const Headers& headers)> on_headers;
  std::function<base::Result<bool>(base::Bytes data)> on_data;
};

struct Request {
  std::string method = "GET";
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  std::string authorization;         // header value; dropped on a redirect to another host
  std::optional<Body> body;
  Sink* sink = nullptr;               // 2xx bodies go here instead of Response::body
  std::uint64_t max_body = 1U << 20;  // cap on a buffered body (EMSGSIZE), while streaming
  bool retry = true;                  // false for non-idempotent requests (PATCH)
  bool follow_redirects = true;
};

struct Response {
  long status = 0;
  Headers headers;
  std::vector<std::byte> body;  // 2xx without a sink: the body; else the first 16 KiB
  std::string url;              // after redirects
  bool stopped_early = false;   // the sink said it had enough
};

struct TlsOptions {
  bool insecure = false;
  std::string ca_pem;  // system bundle + extra CA files; empty: curl's default
};

struct TransportConfig {
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds request_timeout{60000};
  std::chrono::milliseconds stall_timeout{10000};
  // A thread's cached connections (and DNS and TLS session caches) are closed once it
  // has not made a request for this long; 0: kept until the thread ends.
  std::chrono::milliseconds idle_timeout{60000};
  RetryPolicy retry;
  std::string proxy;
  std::string no_proxy;
  std::string user_agent;
  std::map<std::string, TlsOptions> tls;  // by authority (host[:port])
  // Waits out a back-off in perform() (empty: std::this_thread::sleep_for).
  std::function<void(std::chrono::milliseconds)> sleep;
};

class Transport {
 public:
  [[nodiscard]] static base::Result<std::unique_ptr<Transport>> create(TransportConfig config);
  virtual ~Transport() = default;
  // Retries and redirects included. Any HTTP status is a Response; errors are
  // transport failures (ETIMEDOUT, ECONNRESET, EIO for TLS), EMSGSIZE, EBADMSG for
  // a redirect loop or a bad Location, or the sink's error.
  [[nodiscard]] virtual base::Result<Response> perform(Request& req) = 0;
  // Many requests at once on one curl multi handle (at most max_host_connections
  // per host, HTTP/2 streams multiplexed where the server offers it), driven in the
  // calling thread. Each request has perform()'s semantics (retries, a failed one
  // waiting out its back-off while the others go on; redirects; its sink); result
  // i belongs to reqs[i]. Sinks are called from the calling thread.
  [[nodiscard]] virtual std::vector<base::Result<Response>> perform_many(
      std::span<Request* const> reqs, int max_host_connections) = 0;
};

// Build the PEM trust bundle: curl's default CA file plus extra files.
[[nodiscard]] base::Result<std::string> build_ca_bundle(const std::vector<std::string>& files);

}  // namespace registry::http
