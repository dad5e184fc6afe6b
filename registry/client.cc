// SPDX-License-Identifier: Apache-2.0
// The registry client: the distribution API calls, on top of endpoints.h (origin
// and mirrors), auth.h (basic, bearer tokens cached per scope set), range_read.h
// (Range GETs) and push.h (uploads), all over http::Transport.
#include "registry/client.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <string_view>

#include "base/digest.h"
#include "base/file.h"
#include "base/log.h"
#include "registry/auth.h"
#include "registry/endpoints.h"
#include "registry/http.h"
#include "registry/push.h"
#include "registry/range_read.h"
#include "registry/util.h"

namespace registry {
namespace {

using internal::add_no_cache;
using internal::check_digest_arg;
using internal::Endpoint;
using internal::repo_url;
using internal::scope_pull;
using internal::status_error;

class RegistryClient final : public Client {
 public:
  explicit RegistryClient(ClientConfig config) : config_(std::move(config)) {}

  base::Status init() {
    http::TransportConfig tc;
    tc.connect_timeout = config_.connect_timeout;
    tc.request_timeout = config_.request_timeout;
    tc.stall_timeout = config_.stall_timeout;
    tc.idle_timeout = config_.idle_connection_timeout;
    tc.retry = config_.retry;
    tc.proxy = config_.proxy;
    tc.no_proxy = config_.no_proxy;
    tc.user_agent = config_.user_agent;
    tc.sleep = config_.sleep;
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
    endpoints_.emplace(config_, *http_);
    auth_.emplace(config_, *http_);
    ranges_.emplace(config_, *http_, *endpoints_, *auth_);
    pusher_.emplace(*endpoints_, *auth_);
    return {};
  }

  base::Result<FetchedManifest> get_manifest(const Reference& ref) override {
    if (!ref.digest.empty()) {
      CFN_TRY(check_digest_arg(ref.digest));
    }
    return endpoints_->pull<FetchedManifest>(
        ref, [&](const Endpoint& ep) { return get_manifest_from(ep, ref); });
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

  std::uint64_t blob_refetches() const override { return blob_refetches_.load(); }
  std::uint64_t blob_refetch_successes() const override { return blob_refetch_successes_.load(); }

  // A whole blob whose body fails its digest (a flipped byte on the way) is fetched once
  // more, past every cache (Cache-Control: no-cache), before the caller gets EBADMSG: a
  // corrupting proxy costs a retry, not a failed mount (the chunks' refetch does the same).
  base::Result<std::vector<std::byte>> get_blob(const Reference& repo, const std::string& digest,
                                                std::uint64_t max_bytes) override {
    CFN_TRY(check_digest_arg(digest));
    bool mismatch = false;
    auto fetch = [&](bool no_cache) {
      return endpoints_->pull<std::vector<std::byte>>(
          repo, [&](const Endpoint& ep) -> base::Result<std::vector<std::byte>> {
            http::Request req;
            req.url = repo_url(ep, repo.repository, "/blobs/" + digest);
            req.max_body = max_bytes;
            add_no_cache(req, no_cache);
            CFN_ASSIGN_OR_RETURN(http::Response resp,
                                 auth_->call(ep, req, {scope_pull(repo.repository)}));
            const std::string what = fmt::format("blob {} of {}", digest, repo.repository);
            if (resp.status != 200) {
              return status_error(resp, what);
            }
            const std::string got = base::oci_digest(base::sha256(resp.body));
            if (got != digest) {
              mismatch = true;
              return base::errorf(EBADMSG, "{}: digest mismatch (got {} from {})", what, got,
                                  ep.authority);
            }
            return std::move(resp.body);
          });
    };
    auto r = fetch(false);
    if (!r && mismatch) {
      r = fetch(true);
      count_refetch(r.has_value());
    }
    return r;
  }

  base::Result<std::uint64_t> get_blob_to_fd(const Reference& repo, const std::string& digest,
                                             int fd) override {
    CFN_TRY(check_digest_arg(digest));
    const off_t start = ::lseek(fd, 0, SEEK_CUR);
    // Set once any byte went to fd, by any endpoint: a later try (a retry, the next
    // mirror, the origin) must rewind and truncate first.
    bool dirty = false;
    bool mismatch = false;
    auto fetch = [&](bool no_cache) {
      return endpoints_->pull<std::uint64_t>(
          repo, [&](const Endpoint& ep) -> base::Result<std::uint64_t> {
            base::Hasher hasher(base::DigestAlgo::kSha256);
            std::uint64_t written = 0;
            http::Sink sink;
            sink.on_headers = [&](long, const http::Headers&) -> base::Status {
              if (dirty) {
                if (start < 0 || ::lseek(fd, start, SEEK_SET) < 0) {
                  return base::errorf(EIO, "blob {}: cannot restart the download on this fd",
                                      digest);
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
            add_no_cache(req, no_cache);
            CFN_ASSIGN_OR_RETURN(http::Response resp,
                                 auth_->call(ep, req, {scope_pull(repo.repository)}));
            const std::string what = fmt::format("blob {} of {}", digest, repo.repository);
            if (resp.status != 200) {
              return status_error(resp, what);
            }
            const std::string got = base::oci_digest(hasher.finish());
            if (got != digest) {
              mismatch = true;
              return base::errorf(EBADMSG, "{}: digest mismatch (got {} from {})", what, got,
                                  ep.authority);
            }
            return written;
          });
    };
    auto r = fetch(false);
    if (!r && mismatch) {
      r = fetch(true);  // rewinds and truncates fd first (dirty)
      count_refetch(r.has_value());
    }
    return r;
  }

  base::Status read_blob_range(const Reference& repo, const std::string& digest,
                               std::uint64_t offset, base::MutableBytes out) override {
    CFN_TRY(check_digest_arg(digest));
    return ranges_->read(repo, digest, offset, out);
  }

  void read_blob_ranges(const Reference& repo, const std::string& digest,
                        std::span<RangeRead> reads) override {
    if (auto s = check_digest_arg(digest); !s) {
      for (RangeRead& r : reads) {
        r.result = s;
      }
      return;
    }
    ranges_->read_many(repo, digest, reads);
  }

  base::Result<std::optional<std::uint64_t>> head_blob(const Reference& repo,
                                                       const std::string& digest) override {
    CFN_TRY(check_digest_arg(digest));
    CFN_ASSIGN_OR_RETURN(const Endpoint ep, endpoints_->origin(repo));
    return pusher_->head_blob_at(ep, repo, digest, {scope_pull(repo.repository)});
  }

  base::Status push_blob(const Reference& repo, const std::string& digest, int fd,
                         std::uint64_t size, const PushOptions& options) override {
    return pusher_->push_blob(repo, digest, http::Body{{}, fd, 0, size}, size, options);
  }

  base::Status push_blob(const Reference& repo, const std::string& digest, base::Bytes data,
                         const PushOptions& options) override {
    return pusher_->push_blob(repo, digest, http::Body{data, -1, 0, 0}, data.size(), options);
  }

  base::Result<std::string> push_manifest(const Reference& ref, std::string_view media_type,
                                          base::Bytes body) override {
    return pusher_->push_manifest(ref, media_type, body);
  }

 private:
  void count_refetch(bool good) {
    blob_refetches_.fetch_add(1, std::memory_order_relaxed);
    if (good) {
      blob_refetch_successes_.fetch_add(1, std::memory_order_relaxed);
    }
  }

  base::Result<FetchedManifest> get_manifest_from(const Endpoint& ep, const Reference& ref) {
    http::Request req;
    req.url = repo_url(ep, ref.repository, "/manifests/" + ref.manifest_ref());
    req.headers.push_back("Accept: " + manifest_accept_header());
    req.max_body = config_.max_manifest_bytes;
    CFN_ASSIGN_OR_RETURN(http::Response resp, auth_->call(ep, req, {scope_pull(ref.repository)}));
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

  ClientConfig config_;
  std::unique_ptr<http::Transport> http_;
  // Set by init(), in this order; each refers to those before it.
  std::optional<internal::Endpoints> endpoints_;
  std::optional<internal::Auth> auth_;
  std::optional<internal::RangeReader> ranges_;
  std::optional<internal::Pusher> pusher_;
  std::atomic<std::uint64_t> blob_refetches_{0};
  std::atomic<std::uint64_t> blob_refetch_successes_{0};
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
    for (const auto& [m, headers] : hc.mirror_headers) {
      for (const auto& [name, value] : headers) {
        // RFC 9110: a name is a token; a value has no CR, LF or NUL (no header injection).
        const bool name_ok = !name.empty() && std::all_of(name.begin(), name.end(), [](char ch) {
          return std::isalnum(static_cast<unsigned char>(ch)) != 0 ||
                 std::string_view("!#$%&'*+-.^_`|~").find(ch) != std::string_view::npos;
        });
        const bool value_ok =
            value.find_first_of(std::string_view("\r\n\0", 3)) == std::string::npos;
        if (!name_ok || !value_ok) {
          return base::errorf(EINVAL, "mirror {} of {}: header '{}' is not a valid {}", m, host,
                              name, name_ok ? "value (CR, LF or NUL)" : "header name");
        }
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
