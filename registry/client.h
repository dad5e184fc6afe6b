// SPDX-License-Identifier: Apache-2.0
// OCI distribution client: manifests, blobs (whole and by Range), push, every auth
// mode docker uses, mirrors, a proxy, TLS options, retries. One client is shared by
// every thread of a program; each call is synchronous and thread-safe, and calls
// share connections (HTTP/1.1 keep-alive, HTTP/2 where offered) and tokens.
//
// Errors (base::Error codes):
//   ENOENT     manifest or blob unknown (404)
//   EACCES     authentication failed or insufficient scope (401/403 after auth)
//   EBADMSG    digest mismatch, malformed response, a body longer or shorter than said
//              (a short body is retried first, like a reset)
//   EMSGSIZE   a response over the caller's limit
//   ETIMEDOUT  connect or total timeout, a stalled transfer, or a DeadlineScope's end
//   ECONNRESET connection reset / refused / DNS after the retries were spent
//   EIO        any other HTTP failure (5xx after retries, unexpected status)
//   ERANGE     a range past the end of the blob (416)
//   EINVAL     a configuration or argument error (e.g. plain HTTP to a non-loopback host)
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"
#include "registry/manifest.h"
#include "registry/reference.h"

namespace registry {

struct Credentials {
  std::string username;
  std::string password;
  std::string identity_token;  // docker config "identitytoken": an OAuth2 refresh token
};

struct HostConfig {
  // Mirror base URLs ("http://127.0.0.1:5001", "https://mirror.example"), tried in
  // order before the origin for pulls (manifests by digest or tag, blobs). A mirror
  // that fails is skipped for mirror_recheck and then probed with GET /v2/ again.
  std::vector<std::string> mirrors;
  // Extra request headers for a mirror of this host, keyed by its URL as in mirrors
  // (nydusd's mirrors[].headers, e.g. X-Dragonfly-Registry): sent on every request to that
  // mirror, never logged.
  std::map<std::string, std::map<std::string, std::string>> mirror_headers;
  bool insecure_skip_verify = false;       // TLS without verification, this host only
  bool plain_http = false;                 // http:// for this host (loopback hosts: default)
  std::vector<std::string> ca_files;       // extra trusted CAs (PEM)
  std::optional<Credentials> credentials;  // overrides the docker config
};

// Retries: 5xx, 429, connection resets, truncated bodies, timeouts and stalls; never
// other 4xx, never a PATCH. A Retry-After (429/503) replaces the back-off but is
// capped at max_delay, on purpose: a hostile or confused server must not park a
// caller for hours; past the cap we retry early and, if refused, fail.
struct RetryPolicy {
  int max_retries = 3;  // after the first try
  std::chrono::milliseconds base_delay{100};
  std::chrono::milliseconds max_delay{5000};  // full jitter: sleep U(0, min(max, base*2^n))
};

struct ClientConfig {
  std::map<std::string, HostConfig> hosts;  // keyed by host[:port] as in references
  bool plain_http = false;                  // --plain-http: http:// for every host
  // "http://127.0.0.1:3128"; empty: none. Only this proxy is used: http_proxy &
  // co. in the environment are ignored. It is used for every host (loopback too)
  // unless no_proxy (curl's NOPROXY list, e.g. "localhost,127.0.0.1") says otherwise.
  std::string proxy;
  std::string no_proxy;
  std::string docker_config;  // config.json path; empty: $DOCKER_CONFIG or ~/.docker
  Platform platform;
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds request_timeout{60000};  // whole request, per try
  // No byte received (or sent) for this long, once connected: ETIMEDOUT "no data
  // for N ms", retried. Checked to within about a second (read_blob_ranges: 0.1 s).
  std::chrono::milliseconds stall_timeout{10000};
  std::chrono::milliseconds mirror_recheck{30000};
  // A thread's cached connections are closed once it has not made a request for this
  // long (0: kept until the thread ends); see http::TransportConfig::idle_timeout.
  std::chrono::milliseconds idle_connection_timeout{60000};
  RetryPolicy retry;
  std::uint64_t max_manifest_bytes = 4U << 20;
  int max_parallel = 8;  // connections per host for read_blob_ranges
  std::string user_agent = "cachefilesd-nydus/0.1";
  // Time as the client sees it, injectable for tests. clock times token lifetimes
  // and mirror rechecks (empty: std::chrono::steady_clock::now); sleep waits out a
  // retry's back-off or Retry-After (empty: std::this_thread::sleep_for). Deadlines,
  // timeouts and stalls stay on the steady clock: curl measures those.
  std::function<std::chrono::steady_clock::time_point()> clock;
  std::function<void(std::chrono::milliseconds)> sleep;
};

struct FetchedManifest {
  std::string digest;      // sha256 of bytes (verified against a digest reference)
  std::string media_type;  // Content-Type as served
  std::vector<std::byte> bytes;
  std::variant<Manifest, Index> parsed;
};

// An image resolved to one platform's manifest.
struct ResolvedImage {
  std::optional<FetchedManifest> index;  // set when the reference named an index
  FetchedManifest manifest;              // holds a Manifest
  const Manifest& get() const { return std::get<Manifest>(manifest.parsed); }
};

// A deadline for every request the calling thread makes through any Client while
// the scope lives (the daemon's read timeout: a reader waits for its bytes at most
// so long, retries included). A try is cut at the deadline (ETIMEDOUT); no retry,
// back-off, redirect hop, mirror or token request starts after it (ETIMEDOUT
// "deadline passed"). A thread's scope, not a parameter: it must reach every request
// a read can make (token, mirror probe, mirror, origin, redirect). Scopes nest; the
// earliest deadline wins.
class DeadlineScope {
 public:
  explicit DeadlineScope(std::chrono::steady_clock::time_point deadline);
  ~DeadlineScope();
  DeadlineScope(const DeadlineScope&) = delete;
  DeadlineScope& operator=(const DeadlineScope&) = delete;
  // The calling thread's deadline, nullopt outside every scope.
  [[nodiscard]] static std::optional<std::chrono::steady_clock::time_point> current();
  // True when the calling thread is in a scope whose deadline has come: a request that
  // failed then was cut by the caller's deadline, which says nothing of the server.
  // "Come" allows kTimerSlack: curl counts its timeouts in whole milliseconds from its
  // own start of the transfer, so a try cut at the deadline can end a little before it by
  // our clock (seen under load: a mirror cut by the deadline was taken for a dead one).
  static constexpr std::chrono::milliseconds kTimerSlack{10};
  [[nodiscard]] static bool passed();

 private:
  std::optional<std::chrono::steady_clock::time_point> saved_;
};

struct RangeRead {
  std::uint64_t offset = 0;
  base::MutableBytes out;  // exactly out.size() bytes are read at offset
  base::Status result;     // filled by read_blob_ranges
  // Past every cache on the way: the request says "Cache-Control: no-cache" (and
  // "Pragma: no-cache"), for a range that came back with the wrong bytes before.
  bool no_cache = false;
  // A mirror's base URL to leave out for this read (the one that served bad bytes);
  // the origin is never left out. read_blob_ranges takes it from the first read.
  std::string avoid_endpoint{};
  // Filled by read_blob_ranges on success: the base URL of the mirror or the origin
  // that answered.
  std::string endpoint{};
};

struct PushOptions {
  std::uint64_t chunk_size = 0;  // 0: monolithic POST + PUT; else PATCH chunks of this size
  std::string mount_from;        // repository to try a cross-repository mount from first
};

class Client {
 public:
  [[nodiscard]] static base::Result<std::unique_ptr<Client>> create(ClientConfig config);
  virtual ~Client() = default;

  // GET the manifest or index the reference names (Accept: OCI and Docker types).
  // A digest reference is verified against the bytes.
  [[nodiscard]] virtual base::Result<FetchedManifest> get_manifest(const Reference& ref) = 0;
  // get_manifest, then through an index to the configured platform's manifest.
  [[nodiscard]] virtual base::Result<ResolvedImage> resolve(const Reference& ref) = 0;

  // Whole blob into memory, at most max_bytes, sha256-verified against digest.
  [[nodiscard]] virtual base::Result<std::vector<std::byte>> get_blob(const Reference& repo,
                                                                      const std::string& digest,
                                                                      std::uint64_t max_bytes) = 0;
  // Whole blob streamed to fd (written from its current position), verified.
  // Returns the byte count.
  [[nodiscard]] virtual base::Result<std::uint64_t> get_blob_to_fd(const Reference& repo,
                                                                   const std::string& digest,
                                                                   int fd) = 0;
  // One Range GET of out.size() bytes at offset. A 200 in place of a 206 is accepted
  // (bytes before offset are skipped as they stream); a 416 is ERANGE.
  [[nodiscard]] virtual base::Status read_blob_range(const Reference& repo,
                                                     const std::string& digest,
                                                     std::uint64_t offset,
                                                     base::MutableBytes out) = 0;
  // Many ranges of one blob concurrently; each result lands in its RangeRead, with
  // read_blob_range's errors. One range is read first, alone (it settles auth, the
  // mirror or origin, and the blob URL after redirects); the rest run at once on one
  // curl multi handle in the calling thread, at most max_parallel connections to
  // the host (HTTP/2 streams where offered), each retried on its own.
  virtual void read_blob_ranges(const Reference& repo, const std::string& digest,
                                std::span<RangeRead> reads) = 0;
  // Size of a blob, or nullopt when the registry does not have it.
  [[nodiscard]] virtual base::Result<std::optional<std::uint64_t>> head_blob(
      const Reference& repo, const std::string& digest) = 0;

  // Upload size bytes read from fd (from offset 0) as digest. Skips the upload when
  // the blob exists; tries a cross-repository mount first when asked.
  [[nodiscard]] virtual base::Status push_blob(const Reference& repo, const std::string& digest,
                                               int fd, std::uint64_t size,
                                               const PushOptions& options) = 0;
  [[nodiscard]] virtual base::Status push_blob(const Reference& repo, const std::string& digest,
                                               base::Bytes data, const PushOptions& options) = 0;
  // PUT a manifest or index under ref.manifest_ref(); returns its digest.
  [[nodiscard]] virtual base::Result<std::string> push_manifest(const Reference& ref,
                                                                std::string_view media_type,
                                                                base::Bytes body) = 0;

  // Whole blobs (get_blob, get_blob_to_fd) fetched once more, past the caches, after a
  // body failed its digest; and of those, the ones that came back right. Counted over
  // this client's life (the daemon's metrics sum its clients).
  [[nodiscard]] virtual std::uint64_t blob_refetches() const { return 0; }
  [[nodiscard]] virtual std::uint64_t blob_refetch_successes() const { return 0; }
};

}  // namespace registry
