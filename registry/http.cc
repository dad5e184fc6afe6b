// SPDX-License-Identifier: Apache-2.0
#include "registry/http.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>

#include <curl/curl.h>

#include "base/file.h"
#include "base/log.h"
#include "registry/reference.h"
#include "registry/util.h"

namespace registry::http {
namespace {

constexpr int kMaxRedirects = 5;
constexpr std::size_t kMaxHeaderBytes = 64U << 10;
constexpr std::size_t kMaxErrorBody = 16U << 10;

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct ShareDeleter {
  void operator()(CURLSH* s) const { curl_share_cleanup(s); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using CurlPtr = std::unique_ptr<CURL, CurlDeleter>;
using SharePtr = std::unique_ptr<CURLSH, ShareDeleter>;
using SlistPtr = std::unique_ptr<curl_slist, SlistDeleter>;

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// At most a burst of warnings per window; the rest are counted and reported with
// the next one that passes.
template <typename... Args>
void warn_limited(fmt::format_string<Args...> f, Args&&... args) {
  static std::mutex mu;
  static auto window_start = std::chrono::steady_clock::now();
  static int in_window = 0;
  static int suppressed = 0;
  constexpr int kBurst = 10;
  constexpr auto kWindow = std::chrono::seconds(10);
  std::lock_guard lock(mu);
  const auto now = std::chrono::steady_clock::now();
  if (now - window_start > kWindow) {
    window_start = now;
    in_window = 0;
  }
  if (++in_window > kBurst) {
    ++suppressed;
    return;
  }
  const std::string msg = fmt::format(f, std::forward<Args>(args)...);
  if (suppressed > 0) {
    spdlog::warn("registry: {} ({} similar warnings suppressed)", msg, suppressed);
    suppressed = 0;
  } else {
    spdlog::warn("registry: {}", msg);
  }
}

double uniform01() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

// Everything one try of one request sees from curl's callbacks.
struct TryState {
  Request* req = nullptr;
  Response resp;
  std::size_t header_bytes = 0;
  bool headers_done = false;
  bool aborted_after_headers = false;  // 3xx / 416: the body is not wanted
  bool stopped_early = false;
  bool too_big = false;
  std::optional<base::Error> sink_error;
  std::uint64_t body_bytes = 0;
  std::uint64_t upload_pos = 0;

  [[nodiscard]] bool success_status() const { return resp.status >= 200 && resp.status < 300; }
};

std::size_t on_header(char* data, std::size_t size, std::size_t nmemb, void* user) {
  auto* st = static_cast<TryState*>(user);
  const std::size_t n = size * nmemb;
  st->header_bytes += n;
  if (st->header_bytes > kMaxHeaderBytes) {
    st->too_big = true;
    return 0;
  }
  std::string_view line(data, n);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) {
    line.remove_suffix(1);
  }
  if (line.starts_with("HTTP/")) {
    // A new header block (after 100 Continue or a redirect): start over.
    st->resp.headers.clear();
    st->headers_done = false;
    const auto sp = line.find(' ');
    long code = 0;
    if (sp != std::string_view::npos) {
      for (std::size_t i = sp + 1; i < line.size() && i < sp + 4; ++i) {
        if (line[i] < '0' || line[i] > '9') {
          code = 0;
          break;
        }
        code = code * 10 + (line[i] - '0');
      }
    }
    st->resp.status = code;
    return n;
  }
  if (line.empty()) {
    if (st->resp.status >= 100 && st->resp.status < 200) {
      return n;
    }
    st->headers_done = true;
    Request& req = *st->req;
    const long s = st->resp.status;
    if ((s >= 300 && s < 400 && req.follow_redirects && st->resp.headers.count("location") != 0) ||
        s == 416) {
      // 416 from distribution carries a Content-Length but no body: never wait for it.
      st->aborted_after_headers = true;
      return 0;
    }
    if (st->success_status()) {
      if (req.sink == nullptr && req.method != "HEAD") {
        if (auto cl = header(st->resp.headers, "content-length")) {
          std::uint64_t len = 0;
          if (std::sscanf(cl->c_str(), "%lu", &len) == 1 && len > req.max_body) {
            st->too_big = true;
            return 0;
          }
        }
      }
      if (req.sink != nullptr && req.sink->on_headers) {
        auto r = req.sink->on_headers(s, st->resp.headers);
        if (!r) {
          st->sink_error = std::move(r).error();
          return 0;
        }
      }
    }
    return n;
  }
  const auto colon = line.find(':');
  if (colon == std::string_view::npos) {
    return n;  // obsolete line folding or junk: ignore
  }
  std::string_view value = line.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) {
    value.remove_prefix(1);
  }
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) {
    value.remove_suffix(1);
  }
  st->resp.headers.emplace(internal::lower(line.substr(0, colon)), std::string(value));
  return n;
}

std::size_t on_write(char* data, std::size_t size, std::size_t nmemb, void* user) {
  auto* st = static_cast<TryState*>(user);
  const std::size_t n = size * nmemb;
  const base::Bytes chunk(reinterpret_cast<const std::byte*>(data), n);
  if (!st->success_status()) {
    const std::size_t room = kMaxErrorBody - std::min(kMaxErrorBody, st->resp.body.size());
    st->resp.body.insert(st->resp.body.end(), chunk.begin(), chunk.begin() + std::min(room, n));
    return n;
  }
  st->body_bytes += n;
  if (st->req->sink != nullptr) {
    auto r = st->req->sink->on_data(chunk);
    if (!r) {
      st->sink_error = std::move(r).error();
      return 0;
    }
    if (!*r) {
      st->stopped_early = true;
      return 0;
    }
    return n;
  }
  if (st->resp.body.size() + n > st->req->max_body) {
    st->too_big = true;
    return 0;
  }
  st->resp.body.insert(st->resp.body.end(), chunk.begin(), chunk.end());
  return n;
}

std::size_t on_read(char* buf, std::size_t size, std::size_t nitems, void* user) {
  auto* st = static_cast<TryState*>(user);
  const Body& b = *st->req->body;
  const std::uint64_t total = b.fd >= 0 ? b.size : b.mem.size();
  const std::size_t n = static_cast<std::size_t>(
      std::min<std::uint64_t>(size * nitems, total - std::min(total, st->upload_pos)));
  if (n == 0) {
    return 0;
  }
  if (b.fd >= 0) {
    const ssize_t r = ::pread(b.fd, buf, n, static_cast<off_t>(b.offset + st->upload_pos));
    if (r <= 0) {
      return CURL_READFUNC_ABORT;
    }
    st->upload_pos += static_cast<std::uint64_t>(r);
    return static_cast<std::size_t>(r);
  }
  std::memcpy(buf, b.mem.data() + st->upload_pos, n);
  st->upload_pos += n;
  return n;
}

int on_seek(void* user, curl_off_t offset, int origin) {
  auto* st = static_cast<TryState*>(user);
  if (origin != SEEK_SET || offset < 0) {
    return CURL_SEEKFUNC_CANTSEEK;
  }
  st->upload_pos = static_cast<std::uint64_t>(offset);
  return CURL_SEEKFUNC_OK;
}

// What one try came to.
struct TryOutcome {
  base::Result<Response> result;
  bool retryable = false;
  std::optional<std::chrono::milliseconds> retry_after;
};

class CurlTransport final : public Transport {
 public:
  explicit CurlTransport(TransportConfig config) : config_(std::move(config)) {}

  base::Status init() {
    global_init();
    share_.reset(curl_share_init());
    if (!share_) {
      return base::errorf(ENOMEM, "curl_share_init failed");
    }
    curl_share_setopt(share_.get(), CURLSHOPT_LOCKFUNC, &CurlTransport::lock_cb);
    curl_share_setopt(share_.get(), CURLSHOPT_UNLOCKFUNC, &CurlTransport::unlock_cb);
    curl_share_setopt(share_.get(), CURLSHOPT_USERDATA, this);
    curl_share_setopt(share_.get(), CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(share_.get(), CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    curl_share_setopt(share_.get(), CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
    return {};
  }

  base::Result<Response> perform(Request& req) override {
    CurlPtr easy(curl_easy_init());
    if (!easy) {
      return base::errorf(ENOMEM, "curl_easy_init failed");
    }
    const std::string original = req.url;
    for (int redirects = 0;; ++redirects) {
      CFN_ASSIGN_OR_RETURN(Response resp, with_retries(easy.get(), req));
      const bool redirect = resp.status >= 300 && resp.status < 400 && req.follow_redirects &&
                            resp.headers.count("location") != 0;
      if (!redirect) {
        req.url = original;
        return resp;
      }
      if (redirects >= kMaxRedirects) {
        req.url = original;
        return base::errorf(EBADMSG, "redirect loop: more than {} redirects from {}", kMaxRedirects,
                            original);
      }
      auto next = internal::resolve_location(req.url, *header(resp.headers, "location"));
      if (!next) {
        req.url = original;
        return base::errorf(EBADMSG, "bad redirect from {}: {}", req.url, next.error().message);
      }
      CFN_ASSIGN_OR_RETURN(const internal::Url from, internal::parse_url(req.url));
      CFN_ASSIGN_OR_RETURN(const internal::Url to, internal::parse_url(*next));
      if (from.scheme == "https" && to.scheme == "http" && !is_loopback_host(to.authority)) {
        req.url = original;
        return base::errorf(EBADMSG, "refusing a redirect from https to plain http ({})", *next);
      }
      if (internal::lower(from.authority) != internal::lower(to.authority) ||
          from.scheme != to.scheme) {
        // Credentials are for the registry only: an S3-style blob store would be
        // handed our token (and may reject the request for carrying it).
        req.authorization.clear();
      }
      if (resp.status == 303 && req.method != "HEAD") {
        req.method = "GET";
        req.body.reset();
      }
      spdlog::debug("registry: {} redirected ({}) to {}", req.method, resp.status, *next);
      req.url = *next;
    }
  }

 private:
  static void lock_cb(CURL*, curl_lock_data data, curl_lock_access, void* user) {
    static_cast<CurlTransport*>(user)->locks_[static_cast<std::size_t>(data)].lock();
  }
  static void unlock_cb(CURL*, curl_lock_data data, void* user) {
    static_cast<CurlTransport*>(user)->locks_[static_cast<std::size_t>(data)].unlock();
  }

  base::Result<Response> with_retries(CURL* easy, Request& req) {
    const int max_retries = req.retry ? std::max(0, config_.retry.max_retries) : 0;
    for (int attempt = 0;; ++attempt) {
      TryOutcome out = try_once(easy, req);
      if (!out.retryable || attempt >= max_retries) {
        return std::move(out.result);
      }
      std::chrono::milliseconds delay =
          internal::backoff_delay(config_.retry, attempt, uniform01());
      if (out.retry_after) {
        delay = std::min(*out.retry_after, config_.retry.max_delay);
      }
      const std::string why =
          out.result ? fmt::format("{} {}: HTTP {}", req.method, req.url, out.result->status)
                     : out.result.error().message;
      warn_limited("{}; retry {}/{} in {} ms", why, attempt + 1, max_retries, delay.count());
      std::this_thread::sleep_for(delay);
    }
  }

  TryOutcome try_once(CURL* easy, Request& req) {
    curl_easy_reset(easy);
    TryState st;
    st.req = &req;
    st.resp.url = req.url;

    auto parsed = internal::parse_url(req.url);
    if (!parsed) {
      return TryOutcome{base::Unexpected(std::move(parsed).error()), false, std::nullopt};
    }
    const internal::Url& u = *parsed;
    SlistPtr headers;
    auto add_header = [&](const std::string& h) {
      curl_slist* n = curl_slist_append(headers.get(), h.c_str());
      if (n != nullptr) {
        (void)headers.release();
        headers.reset(n);
      }
    };
    for (const std::string& h : req.headers) {
      add_header(h);
    }
    if (!req.authorization.empty()) {
      add_header("Authorization: " + req.authorization);
    }
    add_header("Expect:");

    curl_easy_setopt(easy, CURLOPT_SHARE, share_.get());
    curl_easy_setopt(easy, CURLOPT_URL, req.url.c_str());
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_2TLS));
    curl_easy_setopt(easy, CURLOPT_USERAGENT, config_.user_agent.c_str());
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(config_.connect_timeout.count()));
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(config_.request_timeout.count()));
    curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(
        easy, CURLOPT_LOW_SPEED_TIME,
        static_cast<long>(std::max<std::int64_t>(1, (config_.stall_timeout.count() + 999) / 1000)));
    // Only the configured proxy: "" also stops curl from reading http_proxy & co.
    curl_easy_setopt(easy, CURLOPT_PROXY, config_.proxy.c_str());
    if (!config_.no_proxy.empty()) {
      curl_easy_setopt(easy, CURLOPT_NOPROXY, config_.no_proxy.c_str());
    }
    curl_easy_setopt(easy, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &on_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, &st);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &on_write);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &st);

    curl_blob ca_blob{};
    if (const auto it = config_.tls.find(internal::lower(u.authority)); it != config_.tls.end()) {
      if (it->second.insecure) {
        curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 0L);
      }
      if (!it->second.ca_pem.empty()) {
        ca_blob.data = const_cast<char*>(it->second.ca_pem.data());
        ca_blob.len = it->second.ca_pem.size();
        ca_blob.flags = CURL_BLOB_NOCOPY;
        curl_easy_setopt(easy, CURLOPT_CAINFO_BLOB, &ca_blob);
      }
    }

    if (req.method == "HEAD") {
      curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
    } else if (req.body) {
      const std::uint64_t size = req.body->fd >= 0 ? req.body->size : req.body->mem.size();
      curl_easy_setopt(easy, CURLOPT_UPLOAD, 1L);
      curl_easy_setopt(easy, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(size));
      curl_easy_setopt(easy, CURLOPT_READFUNCTION, &on_read);
      curl_easy_setopt(easy, CURLOPT_READDATA, &st);
      curl_easy_setopt(easy, CURLOPT_SEEKFUNCTION, &on_seek);
      curl_easy_setopt(easy, CURLOPT_SEEKDATA, &st);
      if (req.method != "PUT") {
        curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, req.method.c_str());
      }
    } else if (req.method == "POST") {
      curl_easy_setopt(easy, CURLOPT_POST, 1L);
      curl_easy_setopt(easy, CURLOPT_POSTFIELDS, "");
      curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(0));
    } else if (req.method != "GET") {
      curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, req.method.c_str());
    }
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers.get());

    const auto t0 = std::chrono::steady_clock::now();
    const CURLcode rc = curl_easy_perform(easy);
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
            .count();
    spdlog::debug("registry: {} {} -> {} ({}; {} bytes, {} ms)", req.method, req.url,
                  st.resp.status, curl_easy_strerror(rc), st.body_bytes, ms);

    TryOutcome out{Response{}, false, std::nullopt};
    if (st.sink_error) {
      out.result = base::Unexpected(std::move(*st.sink_error));
      return out;
    }
    if (st.too_big) {
      out.result = st.header_bytes > kMaxHeaderBytes
                       ? base::errorf(EMSGSIZE, "{} {}: response headers over {} bytes", req.method,
                                      req.url, kMaxHeaderBytes)
                       : base::errorf(EMSGSIZE, "{} {}: response over the {} byte limit",
                                      req.method, req.url, req.max_body);
      return out;
    }
    if (st.stopped_early) {
      st.resp.stopped_early = true;
      out.result = std::move(st.resp);
      return out;
    }
    const bool complete = rc == CURLE_OK || (st.aborted_after_headers && st.headers_done);
    if (!complete) {
      // A non-2xx whose (error) body was cut short still has a usable status.
      if (st.headers_done && !st.success_status() && st.resp.status != 0 &&
          (rc == CURLE_PARTIAL_FILE || rc == CURLE_RECV_ERROR) && st.resp.status < 500) {
        out.result = std::move(st.resp);
        return out;
      }
      const std::string what =
          fmt::format("{} {}: {}", req.method, req.url, curl_easy_strerror(rc));
      switch (rc) {
        case CURLE_OPERATION_TIMEDOUT:
          out.result = base::errorf(ETIMEDOUT, "{}", what);
          out.retryable = true;
          break;
        case CURLE_COULDNT_CONNECT:
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
        case CURLE_GOT_NOTHING:
        case CURLE_SEND_ERROR:
        case CURLE_RECV_ERROR:
        case CURLE_PARTIAL_FILE:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
        case CURLE_SEND_FAIL_REWIND:
          out.result = base::errorf(ECONNRESET, "{}", what);
          out.retryable = true;
          break;
        case CURLE_URL_MALFORMAT:
        case CURLE_UNSUPPORTED_PROTOCOL:
          out.result = base::errorf(EINVAL, "{}", what);
          break;
        case CURLE_READ_ERROR:
        case CURLE_ABORTED_BY_CALLBACK:
          out.result = base::errorf(EIO, "{} (reading the upload body)", what);
          break;
        default:
          out.result = base::errorf(EIO, "{}", what);
          break;
      }
      return out;
    }
    const long s = st.resp.status;
    if (s == 429 || s >= 500) {
      out.retryable = true;
      if (s == 429 || s == 503) {
        if (auto ra = header(st.resp.headers, "retry-after")) {
          out.retry_after = internal::parse_retry_after(*ra, std::chrono::system_clock::now());
        }
      }
    }
    out.result = std::move(st.resp);
    return out;
  }

  TransportConfig config_;
  SharePtr share_;
  std::array<std::mutex, CURL_LOCK_DATA_LAST> locks_;
};

}  // namespace

std::optional<std::string> header(const Headers& h, const std::string& lower_name) {
  const auto it = h.find(lower_name);
  if (it == h.end()) {
    return std::nullopt;
  }
  return it->second;
}

base::Result<std::unique_ptr<Transport>> Transport::create(TransportConfig config) {
  auto t = std::make_unique<CurlTransport>(std::move(config));
  CFN_TRY(t->init());
  return std::unique_ptr<Transport>(std::move(t));
}

base::Result<std::string> build_ca_bundle(const std::vector<std::string>& files) {
  global_init();
  std::string pem;
  const curl_version_info_data* info = curl_version_info(CURLVERSION_NOW);
  if (info != nullptr && info->cainfo != nullptr) {
    auto sys = base::read_file(info->cainfo);
    if (sys) {
      pem.append(base::as_chars(*sys));
      pem.push_back('\n');
    }
  }
  for (const std::string& f : files) {
    CFN_ASSIGN_OR_RETURN(const std::vector<std::byte> b, base::read_file(f));
    const std::string_view text = base::as_chars(b);
    if (text.find("-----BEGIN CERTIFICATE-----") == std::string_view::npos) {
      return base::errorf(EINVAL, "CA file {}: no PEM certificate in it", f);
    }
    pem.append(text);
    pem.push_back('\n');
  }
  return pem;
}

}  // namespace registry::http
