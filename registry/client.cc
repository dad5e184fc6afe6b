// SPDX-License-Identifier: Apache-2.0
// The registry client: endpoints (origin and mirrors), auth (basic, bearer tokens
// cached per scope set), and the distribution API calls on top of http::Transport.
#include "registry/client.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <mutex>
#include <set>

#include <nlohmann/json.hpp>

#include "base/digest.h"
#include "base/file.h"
#include "base/log.h"
#include "registry/docker_config.h"
#include "registry/http.h"
#include "registry/util.h"
#include "registry/www_authenticate.h"

namespace registry {
namespace {

using Clock = std::chrono::steady_clock;
using Scopes = std::set<std::string>;

constexpr std::string_view kClientId = "cachefilesd-nydus";
constexpr std::uint64_t kMaxTokenResponse = 1U << 20;
constexpr auto kDefaultTokenTtl = std::chrono::seconds(60);

struct Endpoint {
  std::string base;          // "https://host:port" (a mirror may carry a path prefix)
  std::string authority;     // "host:port"
  std::string cred_host;     // the key for credentials: the reference's host, or the mirror's
  bool relaxed_tls = false;  // plain HTTP or insecure configured: a plain-HTTP token realm is OK
  bool mirror = false;
};

std::string repo_url(const Endpoint& ep, const std::string& repository, std::string_view tail) {
  return ep.base + "/v2/" + repository + std::string(tail);
}

// "CODE: message" from a distribution error body, or a short excerpt of the body.
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

std::string scope_pull(const std::string& repo) {
  return "repository:" + repo + ":pull";
}
std::string scope_push(const std::string& repo) {
  return "repository:" + repo + ":pull,push";
}

std::string join(const Scopes& s, std::string_view sep) {
  std::string out;
  for (const std::string& x : s) {
    if (!out.empty()) {
      out += sep;
    }
    out += x;
  }
  return out;
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

struct ContentRange {
  std::uint64_t first = 0;
  std::uint64_t last = 0;
  std::optional<std::uint64_t> total;
};
// "bytes 1000-1999/1048576" (total may be "*").
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

std::string with_query(const std::string& url, std::string_view kv) {
  return url + (url.find('?') == std::string::npos ? "?" : "&") + std::string(kv);
}

// The body side of one Range GET of out.size() bytes at offset: a 206 starting at
// offset, or a 200 (the whole blob) whose bytes before offset are skipped as they
// stream. sink() points into this object, so it stays put (not copyable).
class RangeBody {
 public:
  RangeBody(const std::string& digest, std::uint64_t offset, base::MutableBytes out)
      : digest_(digest), offset_(offset), out_(out) {
    sink_.on_headers = [this](long status, const http::Headers& h) {
      return on_headers(status, h);
    };
    sink_.on_data = [this](base::Bytes data) { return on_data(data); };
  }
  RangeBody(const RangeBody&) = delete;
  RangeBody& operator=(const RangeBody&) = delete;

  http::Sink& sink() { return sink_; }
  std::string range_header() const {
    return fmt::format("Range: bytes={}-{}", offset_, offset_ + out_.size() - 1);
  }

  // Whether resp, the answer to the request that used sink(), filled out exactly.
  base::Status check(const http::Response& resp, std::string_view what) const {
    if (resp.status != 200 && resp.status != 206) {
      return status_error(resp, what);
    }
    if (got_ != out_.size()) {
      if (total_ && offset_ + out_.size() > *total_) {
        return base::errorf(ERANGE, "{}: past the end of the blob ({} bytes)", what, *total_);
      }
      if (resp.status == 200 && skip_ > 0) {
        return base::errorf(ERANGE, "{}: past the end of the blob", what);
      }
      return base::errorf(EBADMSG, "{}: short body ({} bytes)", what, got_);
    }
    return {};
  }

 private:
  base::Status on_headers(long status, const http::Headers& h) {
    got_ = 0;
    skip_ = 0;
    whole_blob_ = false;
    total_.reset();
    if (status == 206) {
      const auto cr = http::header(h, "content-range");
      const auto range = cr ? parse_content_range(*cr) : std::nullopt;
      if (!range) {
        return base::errorf(EBADMSG, "blob {}: 206 with a bad Content-Range '{}'", digest_,
                            cr.value_or(""));
      }
      if (range->first != offset_) {
        return base::errorf(EBADMSG, "blob {}: asked for bytes from {}, got {}", digest_, offset_,
                            range->first);
      }
      total_ = range->total;
    } else if (status == 200) {
      skip_ = offset_;  // a whole-blob answer: drop what comes before the range
      whole_blob_ = true;
    } else {
      return base::errorf(EBADMSG, "blob {}: HTTP {} to a Range request", digest_, status);
    }
    return {};
  }

  base::Result<bool> on_data(base::Bytes data) {
    if (skip_ > 0) {
      const std::uint64_t s = std::min<std::uint64_t>(skip_, data.size());
      skip_ -= s;
      data = data.subspan(static_cast<std::size_t>(s));
    }
    const std::size_t n = std::min(data.size(), out_.size() - got_);
    std::copy_n(data.begin(), n, out_.begin() + static_cast<std::ptrdiff_t>(got_));
    got_ += n;
    // A 200 streams the whole blob: stop once the range is in (the connection is
    // lost). A 206 ends by itself at its Content-Length: stopping it at its last
    // byte would close a connection that could be reused.
    return got_ < out_.size() || !whole_blob_;
  }

  const std::string& digest_;
  std::uint64_t offset_;
  base::MutableBytes out_;
  http::Sink sink_;
  std::uint64_t skip_ = 0;
  std::size_t got_ = 0;
  bool whole_blob_ = false;
  std::optional<std::uint64_t> total_;
};

class RegistryClient final : public Client {
 public:
  explicit RegistryClient(ClientConfig config) : config_(std::move(config)) {}

  base::Status init() {
    http::TransportConfig tc;
    tc.connect_timeout = config_.connect_timeout;
    tc.request_timeout = config_.request_timeout;
    tc.stall_timeout = config_.stall_timeout;
    tc.retry = config_.retry;
    tc.proxy = config_.proxy;
    tc.no_proxy = config_.no_proxy;
    tc.user_agent = config_.user_agent;
    if (!config_.proxy.empty()) {
      CFN_TRY(internal::parse_url(config_.proxy));
    }
    for (const auto& [host, hc] : config_.hosts) {
      http::TlsOptions tls;
      tls.insecure = hc.insecure_skip_verify;
      if (!hc.ca_files.empty()) {
        CFN_ASSIGN_OR_RETURN(tls.ca_pem, http::build_ca_bundle(hc.ca_files));
      }
      if (!tls.insecure && tls.ca_pem.empty()) {
        continue;
      }
      tc.tls[internal::lower(host)] = tls;
      if (host == "docker.io") {
        tc.tls["registry-1.docker.io"] = tls;
      }
    }
    // Mirrors inherit their registry's TLS options unless configured themselves.
    for (const auto& [host, hc] : config_.hosts) {
      for (const std::string& m : hc.mirrors) {
        CFN_ASSIGN_OR_RETURN(const internal::Url u, internal::parse_url(m));
        const std::string a = internal::lower(u.authority);
        if (tc.tls.count(a) == 0 && tc.tls.count(internal::lower(host)) != 0) {
          tc.tls[a] = tc.tls[internal::lower(host)];
        }
      }
    }
    CFN_ASSIGN_OR_RETURN(http_, http::Transport::create(std::move(tc)));
    return {};
  }

  base::Result<FetchedManifest> get_manifest(const Reference& ref) override {
    if (!ref.digest.empty()) {
      CFN_TRY(check_digest_arg(ref.digest));
    }
    return pull<FetchedManifest>(ref,
                                 [&](const Endpoint& ep) { return get_manifest_from(ep, ref); });
  }

  base::Result<ResolvedImage> resolve(const Reference& ref) override {
    CFN_ASSIGN_OR_RETURN(FetchedManifest top, get_manifest(ref));
    ResolvedImage out;
    if (std::holds_alternative<Manifest>(top.parsed)) {
      out.manifest = std::move(top);
      return out;
    }
    const Index& idx = std::get<Index>(top.parsed);
    CFN_ASSIGN_OR_RETURN(const Descriptor d, select_platform(idx, config_.platform));
    Reference child = ref;
    child.digest = d.digest;
    CFN_ASSIGN_OR_RETURN(FetchedManifest m, get_manifest(child));
    if (m.bytes.size() != d.size) {
      return base::errorf(EBADMSG, "{}: manifest {} is {} bytes, the index says {}",
                          ref.to_string(), d.digest, m.bytes.size(), d.size);
    }
    if (!std::holds_alternative<Manifest>(m.parsed)) {
      return base::errorf(EBADMSG, "{}: index entry {} is an index, not a manifest",
                          ref.to_string(), d.digest);
    }
    out.index = std::move(top);
    out.manifest = std::move(m);
    return out;
  }

  base::Result<std::vector<std::byte>> get_blob(const Reference& repo, const std::string& digest,
                                                std::uint64_t max_bytes) override {
    CFN_TRY(check_digest_arg(digest));
    return pull<std::vector<std::byte>>(
        repo, [&](const Endpoint& ep) -> base::Result<std::vector<std::byte>> {
          http::Request req;
          req.url = repo_url(ep, repo.repository, "/blobs/" + digest);
          req.max_body = max_bytes;
          CFN_ASSIGN_OR_RETURN(http::Response resp, call(ep, req, {scope_pull(repo.repository)}));
          const std::string what = fmt::format("blob {} of {}", digest, repo.repository);
          if (resp.status != 200) {
            return status_error(resp, what);
          }
          const std::string got = base::oci_digest(base::sha256(resp.body));
          if (got != digest) {
            return base::errorf(EBADMSG, "{}: digest mismatch (got {} from {})", what, got,
                                ep.authority);
          }
          return std::move(resp.body);
        });
  }

  base::Result<std::uint64_t> get_blob_to_fd(const Reference& repo, const std::string& digest,
                                             int fd) override {
    CFN_TRY(check_digest_arg(digest));
    const off_t start = ::lseek(fd, 0, SEEK_CUR);
    // Set once any byte went to fd, by any endpoint: a later try (a retry, the next
    // mirror, the origin) must rewind and truncate first.
    bool dirty = false;
    return pull<std::uint64_t>(repo, [&](const Endpoint& ep) -> base::Result<std::uint64_t> {
      base::Hasher hasher(base::DigestAlgo::kSha256);
      std::uint64_t written = 0;
      http::Sink sink;
      sink.on_headers = [&](long, const http::Headers&) -> base::Status {
        if (dirty) {
          if (start < 0 || ::lseek(fd, start, SEEK_SET) < 0) {
            return base::errorf(EIO, "blob {}: cannot restart the download on this fd", digest);
          }
          struct stat st;
          if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && ::ftruncate(fd, start) != 0) {
            return base::errno_error("truncating the blob file for a retry");
          }
        }
        hasher.reset();
        written = 0;
        return {};
      };
      sink.on_data = [&](base::Bytes data) -> base::Result<bool> {
        dirty = true;
        CFN_TRY(base::write_full(fd, data));
        hasher.update(data);
        written += data.size();
        return true;
      };
      http::Request req;
      req.url = repo_url(ep, repo.repository, "/blobs/" + digest);
      req.sink = &sink;
      CFN_ASSIGN_OR_RETURN(http::Response resp, call(ep, req, {scope_pull(repo.repository)}));
      const std::string what = fmt::format("blob {} of {}", digest, repo.repository);
      if (resp.status != 200) {
        return status_error(resp, what);
      }
      const std::string got = base::oci_digest(hasher.finish());
      if (got != digest) {
        return base::errorf(EBADMSG, "{}: digest mismatch (got {} from {})", what, got,
                            ep.authority);
      }
      return written;
    });
  }

  base::Status read_blob_range(const Reference& repo, const std::string& digest,
                               std::uint64_t offset, base::MutableBytes out) override {
    CFN_TRY(check_digest_arg(digest));
    return read_one(repo, digest, offset, out, nullptr);
  }

  void read_blob_ranges(const Reference& repo, const std::string& digest,
                        std::span<RangeRead> reads) override {
    if (auto s = check_digest_arg(digest); !s) {
      for (RangeRead& r : reads) {
        r.result = s;
      }
      return;
    }
    std::vector<RangeRead*> todo;  // the reads that need a request, in order
    for (RangeRead& r : reads) {
      if (r.out.empty() || r.offset > UINT64_MAX - r.out.size()) {
        r.result = read_one(repo, digest, r.offset, r.out, nullptr);  // done or EINVAL
      } else {
        todo.push_back(&r);
      }
    }
    // One read alone first: it settles auth (a token), the endpoint (a mirror or
    // the origin) and the blob's URL after redirects, so the others neither race
    // through the 401 dance nor each follow the redirect. A read that fails only
    // for its own range (past the end) hands that job to the next.
    std::optional<BlobSource> source;
    std::size_t first = 0;
    while (first < todo.size() && !source) {
      RangeRead& r = *todo[first++];
      BlobSource found;
      r.result = read_one(repo, digest, r.offset, r.out, &found);
      if (r.result) {
        source = std::move(found);
      } else if (r.result.error().code != ERANGE) {
        break;
      }
    }
    const std::span<RangeRead*> rest = std::span(todo).subspan(first);
    if (rest.empty()) {
      return;
    }
    if (!source) {
      // The lone read failed for good (after its retries, on every endpoint): the
      // rest would meet the same and spend the same time again, so a stalled
      // registry failed a fill only after twice (retries + 1) x stall_timeout. They
      // fail now: a read_blob_ranges call takes at most one read's retries.
      const base::Error& e = todo[first - 1]->result.error();
      for (RangeRead* r : rest) {
        r->result = base::Unexpected(base::Error{e.code, "not tried after: " + e.message});
      }
      return;
    }
    // The rest on one multi handle: up to max_parallel connections to the host
    // (HTTP/2 streams where offered), each range with its own retries.
    std::deque<RangeBody> bodies;
    std::vector<http::Request> reqs(rest.size());
    std::vector<http::Request*> ptrs;
    for (std::size_t i = 0; i < rest.size(); ++i) {
      RangeBody& body = bodies.emplace_back(digest, rest[i]->offset, rest[i]->out);
      http::Request& q = reqs[i];
      q.url = source->url;
      q.authorization = source->authorization;
      q.headers.push_back(body.range_header());
      q.sink = &body.sink();
      q.retry = !source->ep.mirror;  // as in call(): the next endpoint is a mirror's retry
      ptrs.push_back(&q);
    }
    std::vector<base::Result<http::Response>> results =
        http_->perform_many(ptrs, config_.max_parallel);

    std::vector<RangeRead*> redo;
    bool mirror_failed = false;
    for (std::size_t i = 0; i < rest.size(); ++i) {
      RangeRead& r = *rest[i];
      if (results[i] && (results[i]->status == 401 || results[i]->status == 403)) {
        // A token that expired meanwhile, or a pre-signed URL that did: the full
        // path (auth dance, a fresh redirect) for this one.
        redo.push_back(&r);
        continue;
      }
      r.result = results[i] ? bodies[i].check(*results[i],
                                              range_what(repo, digest, r.offset, r.out.size()))
                            : base::Status(base::Unexpected(results[i].error()));
      const int code = r.result ? 0 : r.result.error().code;
      if (source->ep.mirror && (code == ECONNRESET || code == ETIMEDOUT || code == EIO) &&
          !DeadlineScope::passed()) {  // the deadline's failure, not the mirror's
        // As pull() does: the mirror is skipped for a while, the read goes elsewhere.
        mirror_failed = true;
        redo.push_back(&r);
      }
    }
    if (mirror_failed) {
      mark_mirror(source->ep, false);
      spdlog::warn(
          "registry: mirror {} failed range reads; skipping it for {} s", source->ep.base,
          std::chrono::duration_cast<std::chrono::seconds>(config_.mirror_recheck).count());
    }
    for (RangeRead* r : redo) {
      r->result = read_one(repo, digest, r->offset, r->out, nullptr);
    }
  }

  base::Result<std::optional<std::uint64_t>> head_blob(const Reference& repo,
                                                       const std::string& digest) override {
    CFN_TRY(check_digest_arg(digest));
    CFN_ASSIGN_OR_RETURN(const Endpoint ep, origin(repo));
    return head_blob_at(ep, repo, digest, {scope_pull(repo.repository)});
  }

  base::Status push_blob(const Reference& repo, const std::string& digest, int fd,
                         std::uint64_t size, const PushOptions& options) override {
    return push_blob_body(repo, digest, http::Body{{}, fd, 0, size}, size, options);
  }

  base::Status push_blob(const Reference& repo, const std::string& digest, base::Bytes data,
                         const PushOptions& options) override {
    return push_blob_body(repo, digest, http::Body{data, -1, 0, 0}, data.size(), options);
  }

  base::Result<std::string> push_manifest(const Reference& ref, std::string_view media_type,
                                          base::Bytes body) override {
    const std::string ours = base::oci_digest(base::sha256(body));
    if (!ref.digest.empty() && ref.digest != ours) {
      return base::errorf(EINVAL, "push manifest {}: body digest is {}", ref.to_string(), ours);
    }
    if (media_type.empty() || media_type.size() > 256 ||
        media_type.find_first_of("\r\n") != std::string_view::npos) {
      return base::errorf(EINVAL, "push manifest {}: bad media type", ref.to_string());
    }
    CFN_ASSIGN_OR_RETURN(const Endpoint ep, origin(ref));
    http::Request req;
    req.method = "PUT";
    req.url = repo_url(ep, ref.repository, "/manifests/" + ref.manifest_ref());
    req.headers.push_back("Content-Type: " + std::string(media_type));
    req.body = http::Body{body, -1, 0, 0};
    CFN_ASSIGN_OR_RETURN(http::Response resp, call(ep, req, {scope_push(ref.repository)}));
    const std::string what = fmt::format("push manifest {}", ref.to_string());
    if (resp.status != 201 && resp.status != 200) {
      return status_error(resp, what);
    }
    if (auto d = http::header(resp.headers, "docker-content-digest"); d && *d != ours) {
      return base::errorf(EBADMSG, "{}: registry says digest {}, ours is {}", what, *d, ours);
    }
    return ours;
  }

 private:
  // Where a blob's ranges go once one read got through: the endpoint it was read
  // from, the URL after redirects and the Authorization sent there.
  struct BlobSource {
    Endpoint ep;
    std::string url;
    std::string authorization;
  };

  // read_blob_range without the digest check; source as in read_range_from.
  base::Status read_one(const Reference& repo, const std::string& digest, std::uint64_t offset,
                        base::MutableBytes out, BlobSource* source) {
    if (out.empty()) {
      return {};
    }
    if (offset > UINT64_MAX - out.size()) {
      return base::errorf(EINVAL, "range at {} of {} bytes overflows", offset, out.size());
    }
    return pull<bool>(repo,
                      [&](const Endpoint& ep) -> base::Result<bool> {
                        return read_range_from(ep, repo, digest, offset, out, source);
                      })
        .map([](bool) {});
  }

  struct HostAuth {
    enum class Scheme { kNone, kBasic, kBearer } scheme = Scheme::kNone;
    std::string realm;
    std::string service;
  };
  struct Token {
    std::string value;
    Clock::time_point refresh_at;
    Clock::time_point expires_at;
  };
  struct MirrorState {
    bool unhealthy = false;
    Clock::time_point recheck_at;
  };

  const HostConfig* host_config(const std::string& host) const {
    const auto it = config_.hosts.find(host);
    return it == config_.hosts.end() ? nullptr : &it->second;
  }

  // The registry itself. Loopback hosts without configuration get what docker
  // gives them: HTTPS when the port speaks TLS, else plain HTTP (probed once).
  base::Result<Endpoint> origin(const Reference& ref) {
    Endpoint ep;
    ep.authority = ref.api_host();
    ep.cred_host = ref.host;
    const HostConfig* hc = host_config(ref.host);
    const bool plain = config_.plain_http || (hc != nullptr && hc->plain_http);
    ep.relaxed_tls = plain || (hc != nullptr && hc->insecure_skip_verify);
    if (plain) {
      ep.base = "http://" + ep.authority;
      return ep;
    }
    if (!is_loopback_host(ep.authority)) {
      ep.base = "https://" + ep.authority;
      return ep;
    }
    ep.relaxed_tls = true;
    {
      std::lock_guard lock(mu_);
      if (const auto it = schemes_.find(ep.authority); it != schemes_.end()) {
        ep.base = it->second + "://" + ep.authority;
        return ep;
      }
    }
    const std::string scheme = probe_scheme(ep.authority);
    ep.base = scheme + "://" + ep.authority;
    return ep;
  }

  std::string probe_scheme(const std::string& authority) {
    auto probe = [&](const std::string& scheme) {
      http::Request req;
      req.url = scheme + "://" + authority + "/v2/";
      req.retry = false;
      req.follow_redirects = false;
      req.max_body = 64U << 10;
      return http_->perform(req);
    };
    std::string scheme;
    if (auto tls = probe("https"); tls) {
      scheme = "https";
    } else if (auto plain = probe("http"); plain) {
      // Go's TLS servers answer plain HTTP with a 400 naming HTTPS: then the TLS
      // failure (certificate, most likely) is the real story.
      const bool tls_port =
          plain->status == 400 && base::as_chars(plain->body).find("HTTPS") != std::string::npos;
      scheme = tls_port ? "https" : "http";
    } else {
      return "https";  // nothing answers; do not cache
    }
    spdlog::debug("registry: {} speaks {}", authority, scheme);
    std::lock_guard lock(mu_);
    schemes_[authority] = scheme;
    return scheme;
  }

  std::vector<Endpoint> mirror_endpoints(const Reference& ref) const {
    std::vector<Endpoint> out;
    const HostConfig* hc = host_config(ref.host);
    if (hc == nullptr) {
      return out;
    }
    for (const std::string& m : hc->mirrors) {
      auto u = internal::parse_url(m);
      if (!u) {
        continue;  // checked in create()
      }
      Endpoint ep;
      ep.base = m;
      while (!ep.base.empty() && ep.base.back() == '/') {
        ep.base.pop_back();
      }
      ep.authority = u->authority;
      ep.cred_host = u->authority;
      ep.mirror = true;
      const HostConfig* mc = host_config(u->authority);
      ep.relaxed_tls = u->scheme == "http" || (mc != nullptr && mc->insecure_skip_verify) ||
                       hc->insecure_skip_verify;
      out.push_back(std::move(ep));
    }
    return out;
  }

  // Whether to try this mirror now: healthy, or its recheck time has come and
  // GET /v2/ answers (any status below 500; 401 is an answer).
  bool mirror_usable(const Endpoint& ep) {
    {
      std::lock_guard lock(mu_);
      MirrorState& st = mirrors_[ep.base];
      if (!st.unhealthy) {
        return true;
      }
      if (Clock::now() < st.recheck_at) {
        return false;
      }
      st.recheck_at = Clock::now() + config_.mirror_recheck;  // one prober at a time
    }
    http::Request req;
    req.url = ep.base + "/v2/";
    req.retry = false;
    req.max_body = 64U << 10;
    auto r = http_->perform(req);
    const bool ok = r && r->status < 500;
    std::lock_guard lock(mu_);
    MirrorState& st = mirrors_[ep.base];
    st.unhealthy = !ok;
    st.recheck_at = Clock::now() + config_.mirror_recheck;
    if (ok) {
      spdlog::info("registry: mirror {} is healthy again", ep.base);
    }
    return ok;
  }

  void mark_mirror(const Endpoint& ep, bool healthy) {
    std::lock_guard lock(mu_);
    MirrorState& st = mirrors_[ep.base];
    st.unhealthy = !healthy;
    if (!healthy) {
      st.recheck_at = Clock::now() + config_.mirror_recheck;
    }
  }

  // Run a pull through each usable mirror, then the origin.
  template <typename T, typename F>
  base::Result<T> pull(const Reference& ref, F&& fn) {
    for (const Endpoint& ep : mirror_endpoints(ref)) {
      if (!mirror_usable(ep)) {
        continue;
      }
      base::Result<T> r = fn(ep);
      if (r) {
        return r;
      }
      const int code = r.error().code;
      if (DeadlineScope::passed()) {
        return r;  // the caller's deadline cut it, not the mirror: no time left to go on
      }
      if (code == ECONNRESET || code == ETIMEDOUT || code == EIO) {
        mark_mirror(ep, false);
        spdlog::warn(
            "registry: mirror {} failed ({}); skipping it for {} s", ep.base, r.error().message,
            std::chrono::duration_cast<std::chrono::seconds>(config_.mirror_recheck).count());
      } else {
        spdlog::debug("registry: mirror {}: {}; trying the next", ep.base, r.error().message);
      }
    }
    CFN_ASSIGN_OR_RETURN(const Endpoint ep, origin(ref));
    return fn(ep);
  }

  base::Result<std::optional<Credentials>> credentials_for(const std::string& host) {
    if (const HostConfig* hc = host_config(host); hc != nullptr && hc->credentials) {
      return hc->credentials;
    }
    {
      std::lock_guard lock(mu_);
      if (const auto it = creds_.find(host); it != creds_.end()) {
        return it->second;
      }
    }
    CFN_ASSIGN_OR_RETURN(std::optional<Credentials> c,
                         docker_credentials(config_.docker_config, host));
    std::lock_guard lock(mu_);
    creds_[host] = c;
    return c;
  }

  static std::string token_key(const Endpoint& ep, const Scopes& scopes) {
    return ep.authority + "|" + join(scopes, " ");
  }

  // The Authorization value to send now ("" when the host asked for none yet).
  base::Result<std::string> authorization(const Endpoint& ep, const Scopes& scopes) {
    HostAuth ha;
    std::optional<Token> cached;
    {
      std::lock_guard lock(mu_);
      const auto it = host_auth_.find(ep.authority);
      if (it == host_auth_.end()) {
        return std::string();
      }
      ha = it->second;
      if (const auto t = tokens_.find(token_key(ep, scopes)); t != tokens_.end()) {
        cached = t->second;
      }
    }
    if (ha.scheme == HostAuth::Scheme::kBasic) {
      CFN_ASSIGN_OR_RETURN(const auto creds, credentials_for(ep.cred_host));
      if (!creds) {
        return base::errorf(EACCES, "{} requires credentials and none are configured",
                            ep.authority);
      }
      return "Basic " + internal::base64_encode(creds->username + ":" + creds->password);
    }
    if (ha.scheme != HostAuth::Scheme::kBearer) {
      return std::string();
    }
    const auto now = Clock::now();
    if (cached && now < cached->refresh_at) {
      return "Bearer " + cached->value;
    }
    auto fresh = fetch_token(ep, ha, scopes);
    if (!fresh) {
      if (cached && now < cached->expires_at) {
        spdlog::warn("registry: token refresh for {} failed ({}); using the current token",
                     ep.authority, fresh.error().message);
        return "Bearer " + cached->value;
      }
      return base::Unexpected(std::move(fresh).error());
    }
    return "Bearer " + *fresh;
  }

  // Learn from a 401 (or a 403 with a challenge): which scheme, and for bearer a
  // token for the scopes the challenge names too.
  base::Status on_challenge(const Endpoint& ep, const http::Response& resp, Scopes& scopes) {
    std::vector<Challenge> challenges;
    const auto [lo, hi] = resp.headers.equal_range("www-authenticate");
    for (auto it = lo; it != hi; ++it) {
      auto parsed = parse_www_authenticate(it->second);
      if (!parsed) {
        return base::errorf(EACCES, "{}: unusable WWW-Authenticate: {}", ep.authority,
                            parsed.error().message);
      }
      challenges.insert(challenges.end(), parsed->begin(), parsed->end());
    }
    const Challenge* bearer = nullptr;
    const Challenge* basic = nullptr;
    for (const Challenge& c : challenges) {
      if (c.scheme == "bearer" && bearer == nullptr && c.params.count("realm") != 0) {
        bearer = &c;
      } else if (c.scheme == "basic" && basic == nullptr) {
        basic = &c;
      }
    }
    HostAuth ha;
    if (bearer != nullptr) {
      ha.scheme = HostAuth::Scheme::kBearer;
      ha.realm = bearer->params.at("realm");
      if (const auto s = bearer->params.find("service"); s != bearer->params.end()) {
        ha.service = s->second;
      }
      if (const auto s = bearer->params.find("scope"); s != bearer->params.end()) {
        std::string_view rest = s->second;
        while (!rest.empty()) {
          const auto sp = rest.find(' ');
          const std::string_view one = rest.substr(0, sp);
          if (!one.empty() && scopes.size() < 16 && one.size() < 512) {
            scopes.emplace(one);
          }
          rest = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
        }
      }
    } else if (basic != nullptr) {
      ha.scheme = HostAuth::Scheme::kBasic;
      CFN_ASSIGN_OR_RETURN(const auto creds, credentials_for(ep.cred_host));
      if (!creds || (creds->username.empty() && creds->password.empty())) {
        return base::errorf(EACCES, "{} requires basic auth and no credentials are configured",
                            ep.authority);
      }
    } else {
      return base::errorf(EACCES, "{}: HTTP {} without a usable challenge", ep.authority,
                          resp.status);
    }
    {
      std::lock_guard lock(mu_);
      host_auth_[ep.authority] = ha;
      tokens_.erase(token_key(ep, scopes));
    }
    if (ha.scheme == HostAuth::Scheme::kBearer) {
      CFN_TRY(fetch_token(ep, ha, scopes));
    }
    return {};
  }

  base::Result<std::string> fetch_token(const Endpoint& ep, const HostAuth& ha,
                                        const Scopes& scopes) {
    CFN_ASSIGN_OR_RETURN(const internal::Url realm, internal::parse_url(ha.realm));
    if (realm.scheme != "https" && !is_loopback_host(realm.authority) && !ep.relaxed_tls) {
      return base::errorf(EACCES,
                          "{}: refusing to send credentials to a plain-HTTP token server {}",
                          ep.authority, ha.realm);
    }
    CFN_ASSIGN_OR_RETURN(const auto creds, credentials_for(ep.cred_host));
    const std::string what = fmt::format("token from {} for {}", ha.realm, ep.authority);

    std::optional<http::Response> resp;
    const bool has_password = creds && !creds->username.empty() && !creds->password.empty();
    const bool has_refresh = creds && !creds->identity_token.empty();
    if (has_password || has_refresh) {
      std::string form;
      if (has_refresh) {
        form =
            "grant_type=refresh_token&refresh_token=" + internal::url_escape(creds->identity_token);
      } else {
        form = "grant_type=password&username=" + internal::url_escape(creds->username) +
               "&password=" + internal::url_escape(creds->password);
      }
      form += "&client_id=" + internal::url_escape(kClientId);
      if (!ha.service.empty()) {
        form += "&service=" + internal::url_escape(ha.service);
      }
      if (!scopes.empty()) {
        form += "&scope=" + internal::url_escape(join(scopes, " "));
      }
      http::Request post;
      post.method = "POST";
      post.url = ha.realm;
      post.headers.push_back("Content-Type: application/x-www-form-urlencoded");
      post.body = http::Body{base::as_bytes(form), -1, 0, 0};
      post.max_body = kMaxTokenResponse;
      CFN_ASSIGN_OR_RETURN(http::Response r, http_->perform(post));
      const bool fall_back =
          (r.status == 400 || r.status == 401 || r.status == 404 || r.status == 405) &&
          has_password;
      if (!fall_back) {
        resp = std::move(r);
      }
    }
    if (!resp) {
      std::string url = ha.realm;
      if (!ha.service.empty()) {
        url = with_query(url, "service=" + internal::url_escape(ha.service));
      }
      for (const std::string& s : scopes) {
        url = with_query(url, "scope=" + internal::url_escape(s));
      }
      url = with_query(url, "client_id=" + internal::url_escape(kClientId));
      http::Request get;
      get.url = url;
      get.max_body = kMaxTokenResponse;
      if (has_password) {
        get.authorization =
            "Basic " + internal::base64_encode(creds->username + ":" + creds->password);
      }
      CFN_ASSIGN_OR_RETURN(http::Response r, http_->perform(get));
      resp = std::move(r);
    }
    if (resp->status != 200) {
      auto e = status_error(*resp, what);
      if (e.value().code != EACCES) {
        e = base::errorf(EACCES, "{}", e.value().message);
      }
      return e;
    }
    const auto j = nlohmann::json::parse(base::as_chars(resp->body), nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      return base::errorf(EBADMSG, "{}: response is not a JSON object", what);
    }
    std::string token;
    for (const char* key : {"token", "access_token"}) {
      if (const auto it = j.find(key); it != j.end() && it->is_string() && token.empty()) {
        token = it->get<std::string>();
      }
    }
    if (token.empty() || token.size() > 64U << 10 ||
        token.find_first_of("\r\n") != std::string::npos) {
      return base::errorf(EBADMSG, "{}: no usable token in the response", what);
    }
    std::chrono::seconds ttl = kDefaultTokenTtl;
    if (const auto it = j.find("expires_in"); it != j.end() && it->is_number()) {
      const double v = it->get<double>();
      if (v >= 1 && v < 1e8) {
        ttl = std::chrono::seconds(static_cast<std::int64_t>(v));
      }
    }
    const auto now = Clock::now();
    Token t;
    t.value = token;
    t.expires_at = now + ttl;
    t.refresh_at = now + ttl * 9 / 10;  // refresh once 90% of the lifetime is gone
    std::lock_guard lock(mu_);
    tokens_[token_key(ep, scopes)] = std::move(t);
    return token;
  }

  // One authenticated request: learn the auth scheme from a 401 and retry once;
  // a second refusal is EACCES.
  base::Result<http::Response> call(const Endpoint& ep, http::Request& req, Scopes scopes) {
    // A mirror gets one try: the next mirror or the origin is the retry.
    if (ep.mirror) {
      req.retry = false;
    }
    for (int round = 0;; ++round) {
      req.authorization.clear();
      CFN_ASSIGN_OR_RETURN(const internal::Url u, internal::parse_url(req.url));
      if (internal::lower(u.authority) == internal::lower(ep.authority)) {
        CFN_ASSIGN_OR_RETURN(req.authorization, authorization(ep, scopes));
      }
      CFN_ASSIGN_OR_RETURN(http::Response resp, http_->perform(req));
      const bool challenged =
          resp.status == 401 || (resp.status == 403 && resp.headers.count("www-authenticate"));
      if (!challenged) {
        return resp;
      }
      if (round > 0) {
        return base::errorf(
            EACCES, "{} {}: access denied after authenticating (HTTP {}{})", req.method, req.url,
            resp.status, registry_error_text(resp).empty() ? "" : ": " + registry_error_text(resp));
      }
      CFN_TRY(on_challenge(ep, resp, scopes));
    }
  }

  base::Result<FetchedManifest> get_manifest_from(const Endpoint& ep, const Reference& ref) {
    http::Request req;
    req.url = repo_url(ep, ref.repository, "/manifests/" + ref.manifest_ref());
    req.headers.push_back("Accept: " + manifest_accept_header());
    req.max_body = config_.max_manifest_bytes;
    CFN_ASSIGN_OR_RETURN(http::Response resp, call(ep, req, {scope_pull(ref.repository)}));
    const std::string what = fmt::format("manifest {} from {}", ref.to_string(), ep.authority);
    if (resp.status != 200) {
      return status_error(resp, what);
    }
    FetchedManifest fm;
    fm.digest = base::oci_digest(base::sha256(resp.body));
    if (!ref.digest.empty() && fm.digest != ref.digest) {
      return base::errorf(EBADMSG, "{}: digest mismatch (got {})", what, fm.digest);
    }
    if (auto d = http::header(resp.headers, "docker-content-digest");
        d && is_valid_digest(*d) && *d != fm.digest) {
      return base::errorf(EBADMSG, "{}: Docker-Content-Digest {} does not match the body ({})",
                          what, *d, fm.digest);
    }
    fm.media_type = http::header(resp.headers, "content-type").value_or("");
    auto parsed = parse_manifest(resp.body, fm.media_type);
    if (!parsed) {
      return base::Unexpected(std::move(parsed).error().wrap(what));
    }
    fm.parsed = std::move(*parsed);
    fm.bytes = std::move(resp.body);
    return fm;
  }

  // One Range GET from ep. With source set, a success also says where the read went
  // in the end (the URL after redirects, the Authorization sent there).
  base::Result<bool> read_range_from(const Endpoint& ep, const Reference& repo,
                                     const std::string& digest, std::uint64_t offset,
                                     base::MutableBytes out, BlobSource* source) {
    RangeBody body(digest, offset, out);
    http::Request req;
    req.url = repo_url(ep, repo.repository, "/blobs/" + digest);
    req.headers.push_back(body.range_header());
    req.sink = &body.sink();
    CFN_ASSIGN_OR_RETURN(http::Response resp, call(ep, req, {scope_pull(repo.repository)}));
    CFN_TRY(body.check(resp, range_what(repo, digest, offset, out.size())));
    if (source != nullptr) {
      // call() left in req what went with the last hop: a redirect to another host
      // cleared the Authorization.
      *source = BlobSource{ep, resp.url, req.authorization};
    }
    return true;
  }

  static std::string range_what(const Reference& repo, const std::string& digest,
                                std::uint64_t offset, std::size_t size) {
    return fmt::format("blob {} of {}, {} bytes at {}", digest, repo.repository, size, offset);
  }

  base::Result<std::optional<std::uint64_t>> head_blob_at(const Endpoint& ep, const Reference& repo,
                                                          const std::string& digest,
                                                          Scopes scopes) {
    http::Request req;
    req.method = "HEAD";
    req.url = repo_url(ep, repo.repository, "/blobs/" + digest);
    CFN_ASSIGN_OR_RETURN(http::Response resp, call(ep, req, std::move(scopes)));
    const std::string what = fmt::format("HEAD blob {} of {}", digest, repo.repository);
    if (resp.status == 404) {
      return std::optional<std::uint64_t>();
    }
    if (resp.status != 200) {
      return status_error(resp, what);
    }
    if (auto d = http::header(resp.headers, "docker-content-digest"); d && *d != digest) {
      return base::errorf(EBADMSG, "{}: registry answered for {}", what, *d);
    }
    const auto cl = http::header(resp.headers, "content-length");
    const auto size = cl ? parse_u64(*cl) : std::nullopt;
    if (!size) {
      return base::errorf(EBADMSG, "{}: no usable Content-Length", what);
    }
    return std::optional<std::uint64_t>(*size);
  }

  base::Status push_blob_body(const Reference& repo, const std::string& digest, http::Body body,
                              std::uint64_t size, const PushOptions& options) {
    CFN_TRY(check_digest_arg(digest));
    CFN_ASSIGN_OR_RETURN(const Endpoint ep, origin(repo));
    Scopes scopes{scope_push(repo.repository)};
    if (!options.mount_from.empty() && options.mount_from != repo.repository) {
      scopes.insert(scope_pull(options.mount_from));
    }
    const std::string what = fmt::format("push blob {} to {}", digest, repo.to_string());
    CFN_ASSIGN_OR_RETURN(const auto have, head_blob_at(ep, repo, digest, scopes));
    if (have) {
      if (*have != size) {
        return base::errorf(EBADMSG, "{}: the registry has it with {} bytes, we have {}", what,
                            *have, size);
      }
      spdlog::debug("registry: {}: already there", what);
      return {};
    }
    http::Request start;
    start.method = "POST";
    start.url = repo_url(ep, repo.repository, "/blobs/uploads/");
    if (!options.mount_from.empty() && options.mount_from != repo.repository) {
      start.url += "?mount=" + internal::url_escape(digest) +
                   "&from=" + internal::url_escape(options.mount_from);
    }
    CFN_ASSIGN_OR_RETURN(http::Response started, call(ep, start, scopes));
    if (started.status == 201) {
      spdlog::debug("registry: {}: mounted from {}", what, options.mount_from);
      return {};
    }
    if (started.status != 202) {
      return status_error(started, what + ": starting the upload");
    }
    CFN_ASSIGN_OR_RETURN(std::string location, next_location(started, what));

    if (options.chunk_size > 0) {
      for (std::uint64_t off = 0; off < size; off += options.chunk_size) {
        const std::uint64_t len = std::min(options.chunk_size, size - off);
        http::Request patch;
        patch.method = "PATCH";
        patch.url = location;
        patch.retry = false;
        patch.headers.push_back("Content-Type: application/octet-stream");
        patch.headers.push_back(fmt::format("Content-Range: {}-{}", off, off + len - 1));
        http::Body part = body;
        if (part.fd >= 0) {
          part.offset = off;
          part.size = len;
        } else {
          part.mem = body.mem.subspan(static_cast<std::size_t>(off), static_cast<std::size_t>(len));
        }
        patch.body = part;
        CFN_ASSIGN_OR_RETURN(http::Response r, call(ep, patch, scopes));
        if (r.status != 202 && r.status != 204) {
          return status_error(r, fmt::format("{}: chunk at {}", what, off));
        }
        CFN_ASSIGN_OR_RETURN(location, next_location(r, what));
      }
      body = http::Body{};  // the final PUT carries no bytes
    }
    http::Request put;
    put.method = "PUT";
    put.url = with_query(location, "digest=" + internal::url_escape(digest));
    put.headers.push_back("Content-Type: application/octet-stream");
    put.body = body;
    CFN_ASSIGN_OR_RETURN(http::Response done, call(ep, put, scopes));
    if (done.status != 201 && done.status != 204 && done.status != 200) {
      return status_error(done, what + ": committing the upload");
    }
    if (auto d = http::header(done.headers, "docker-content-digest"); d && *d != digest) {
      return base::errorf(EBADMSG, "{}: registry stored it as {}", what, *d);
    }
    return {};
  }

  static base::Result<std::string> next_location(const http::Response& r, std::string_view what) {
    const auto loc = http::header(r.headers, "location");
    if (!loc) {
      return base::errorf(EBADMSG, "{}: upload response without a Location", what);
    }
    auto abs = internal::resolve_location(r.url, *loc);
    if (!abs) {
      return base::errorf(EBADMSG, "{}: bad upload Location: {}", what, abs.error().message);
    }
    return *abs;
  }

  ClientConfig config_;
  std::unique_ptr<http::Transport> http_;
  std::mutex mu_;  // guards everything below
  std::map<std::string, std::string> schemes_;
  std::map<std::string, HostAuth> host_auth_;
  std::map<std::string, Token> tokens_;
  std::map<std::string, std::optional<Credentials>> creds_;
  std::map<std::string, MirrorState> mirrors_;
};

}  // namespace

base::Result<std::unique_ptr<Client>> Client::create(ClientConfig config) {
  for (const auto& [host, hc] : config.hosts) {
    for (const std::string& m : hc.mirrors) {
      auto u = internal::parse_url(m);
      if (!u) {
        return base::Unexpected(std::move(u).error().wrap(fmt::format("mirror of {}", host)));
      }
    }
  }
  if (config.max_parallel < 1) {
    return base::errorf(EINVAL, "max_parallel must be at least 1");
  }
  auto c = std::make_unique<RegistryClient>(std::move(config));
  CFN_TRY(c->init());
  return std::unique_ptr<Client>(std::move(c));
}

}  // namespace registry
