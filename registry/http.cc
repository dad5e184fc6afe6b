// SPDX-License-Identifier: Apache-2.0
#include "registry/http.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

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
  void operator()(CURLSH* s) const {
    if (const CURLSHcode rc = curl_share_cleanup(s); rc != CURLSHE_OK) {
      // Still in use by an easy handle: nothing is freed (its connections stay open).
      spdlog::warn("registry: curl_share_cleanup: {}", curl_share_strerror(rc));
    }
  }
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

using Clock = std::chrono::steady_clock;

// Everything one try of one request sees from curl's callbacks, and what the try's
// easy handle points at (headers, CA blob): it lives until the try is reaped.
struct TryState {
  Request* req = nullptr;
  CURL* easy = nullptr;
  Response resp;
  SlistPtr headers;
  curl_blob ca_blob{};
  std::size_t header_bytes = 0;
  bool headers_done = false;
  bool aborted_after_headers = false;  // 3xx / 416: the body is not wanted
  bool stopped_early = false;
  bool too_big = false;
  std::optional<base::Error> sink_error;
  std::uint64_t body_bytes = 0;
  std::uint64_t upload_pos = 0;
  // Stall detection (on_progress): bytes seen so far (headers, body, upload) and
  // when that count last moved.
  std::chrono::milliseconds stall_timeout{0};
  Clock::time_point started;
  Clock::time_point last_progress;
  std::uint64_t progress_bytes = 0;
  bool stalled = false;

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

// "No byte for stall_timeout" with millisecond precision (curl's own low-speed check
// works in whole seconds over a moving average). curl calls this about once per
// second while idle, more often under load; perform_many polls more often than that.
int on_progress(void* user, curl_off_t, curl_off_t dlnow, curl_off_t, curl_off_t ulnow) {
  auto* st = static_cast<TryState*>(user);
  const auto now = Clock::now();
  const std::uint64_t bytes = st->header_bytes +
                              static_cast<std::uint64_t>(std::max<curl_off_t>(0, dlnow)) +
                              static_cast<std::uint64_t>(std::max<curl_off_t>(0, ulnow));
  curl_off_t connect_us = 0;
  curl_easy_getinfo(st->easy, CURLINFO_CONNECT_TIME_T, &connect_us);
  // Until connected, connect_timeout is the limit, not this.
  if (bytes != st->progress_bytes || (connect_us == 0 && bytes == 0)) {
    st->progress_bytes = bytes;
    st->last_progress = now;
    return 0;
  }
  if (now - st->last_progress > st->stall_timeout) {
    st->stalled = true;
    return 1;  // CURLE_ABORTED_BY_CALLBACK
  }
  return 0;
}

// What one try came to.
struct TryOutcome {
  base::Result<Response> result;
  bool retryable = false;
  std::optional<std::chrono::milliseconds> retry_after;
};

struct MultiDeleter {
  void operator()(CURLM* m) const { curl_multi_cleanup(m); }
};
using MultiPtr = std::unique_ptr<CURLM, MultiDeleter>;

// One request of perform_many, a small state machine:
//   kReady --start--> kRunning --reaped--> kDone
//                        |  ^--start--- kReady   (a redirect: the next hop)
//                        +--> kBackoff --wake_at--> kReady   (a retry)
// Its easy handle is in the multi handle only while kRunning.
struct Transfer {
  enum class State { kReady, kRunning, kBackoff, kDone };
  Request* req = nullptr;
  CurlPtr easy;
  TryState st;
  State state = State::kReady;
  int attempt = 0;  // tries of the current hop, minus one
  int redirects = 0;
  std::string original;  // req->url before any redirect; restored when done
  Clock::time_point wake_at;
  std::optional<base::Result<Response>> result;

  void finish(base::Result<Response> r) {
    req->url = original;
    result = std::move(r);
    state = State::kDone;
  }
};

constexpr auto kMultiPollCap = std::chrono::milliseconds(100);  // stall checks at least this often

// One thread's share object of one transport (see thread_share()). The thread holds mu
// while any easy handle of its call is attached to the share; the idle sweeper (another
// thread) closes the share, and with it its idle connections, only under mu.
struct ShareSlot {
  std::mutex mu;
  SharePtr share;  // null: closed by the sweeper, or never made; made again on use
  Clock::time_point last_used;
};

SharePtr new_share() {
  SharePtr sh(curl_share_init());
  if (sh) {
    curl_share_setopt(sh.get(), CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(sh.get(), CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    curl_share_setopt(sh.get(), CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
  }
  return sh;
}

class CurlTransport final : public Transport {
 public:
  explicit CurlTransport(TransportConfig config) : config_(std::move(config)) {}

  ~CurlTransport() override {
    {
      std::lock_guard lk(sweep_mu_);
      stop_sweep_ = true;
    }
    sweep_cv_.notify_all();
    if (sweeper_.joinable()) {
      sweeper_.join();
    }
    // Our shares in every thread's map (kept there until the thread ends) close now, and
    // their connections with them: no call of ours runs any more.
    std::lock_guard lk(slots_mu_);
    for (const auto& w : slots_) {
      if (auto slot = w.lock()) {
        std::lock_guard l(slot->mu);
        slot->share.reset();
      }
    }
  }

  base::Status init() {
    global_init();
    if (!new_share()) {
      return base::errorf(ENOMEM, "curl_share_init failed");
    }
    if (config_.idle_timeout.count() > 0) {
      sweeper_ = std::thread([this] { sweep_loop(); });
    }
    return {};
  }

  base::Result<Response> perform(Request& req) override {
    const Lease lease(*this);  // before the easy handle: it outlives every use of the share
    CurlPtr easy(curl_easy_init());
    if (!easy) {
      return base::errorf(ENOMEM, "curl_easy_init failed");
    }
    const std::string original = req.url;
    auto result = [&]() -> base::Result<Response> {
      for (int redirects = 0;; ++redirects) {
        CFN_ASSIGN_OR_RETURN(Response resp, with_retries(easy.get(), req));
        CFN_ASSIGN_OR_RETURN(const bool again, follow_redirect(req, resp, original, redirects));
        if (!again) {
          return resp;
        }
      }
    }();
    req.url = original;
    return result;
  }

  std::vector<base::Result<Response>> perform_many(std::span<Request* const> reqs,
                                                   int max_host_connections) override {
    const Lease lease(*this);  // before the transfers' easy handles and the multi handle
    std::vector<Transfer> ts(reqs.size());  // never resized: callbacks point into it
    MultiPtr multi(curl_multi_init());
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      Transfer& t = ts[i];
      t.req = reqs[i];
      t.original = t.req->url;
      t.easy.reset(curl_easy_init());
      if (!multi || !t.easy) {
        t.finish(base::errorf(ENOMEM, "curl_multi_init / curl_easy_init failed"));
      }
    }
    if (multi) {
      curl_multi_setopt(multi.get(), CURLMOPT_MAX_HOST_CONNECTIONS,
                        static_cast<long>(std::max(1, max_host_connections)));
      curl_multi_setopt(multi.get(), CURLMOPT_PIPELINING, static_cast<long>(CURLPIPE_MULTIPLEX));
      drive(multi.get(), ts);
    }
    std::vector<base::Result<Response>> out;
    out.reserve(ts.size());
    for (Transfer& t : ts) {
      out.push_back(std::move(*t.result));
    }
    return out;
  }

 private:
  // This transport's share object in the calling thread: DNS cache, TLS sessions and
  // idle connections, reused by every request the thread makes. Not one share for all
  // threads: libcurl's shared connection cache is not safe between concurrent threads
  // (its known bug "A shared connection cache is not thread-safe"); with several fill
  // threads and prefetch-list workers reading at once, transfers hung for good in
  // curl_multi_poll. Easy handles live within one call in one thread, so they never
  // outlive the thread's share. nullptr when curl_share_init fails or outside a Lease.
  //
  // Idle connections. A thread's connections stay in its share until the thread ends,
  // and fill and prefetch threads live as long as the daemon: without a sweep, a
  // connection used once by every worker stays open for ever (23 after kernel test 89).
  // CURLOPT_MAXAGE_CONN alone does not close them: curl prunes a cache only when a
  // transfer of that thread looks for a connection. So, with an idle timeout, a sweeper
  // thread closes the share of every thread that has not used it for that long (the
  // thread makes a new one on its next call), and MAXAGE_CONN keeps a busy thread from
  // reusing a connection idle for longer (the server may have closed it).
  CURLSH* thread_share() const { return tl_lease_ != nullptr ? tl_lease_->share.get() : nullptr; }

  // This thread's slot of this transport, held (mu) for one perform call and its easy
  // handles. A nested call in the same thread (none today) reuses the outer lease.
  class Lease {
   public:
    explicit Lease(const CurlTransport& t) : t_(t) {
      thread_local std::map<std::uint64_t, std::shared_ptr<ShareSlot>> slots;  // by id
      std::shared_ptr<ShareSlot>& slot = slots[t.id_];
      if (!slot) {
        slot = std::make_shared<ShareSlot>();
        std::lock_guard lk(t.slots_mu_);
        std::erase_if(t.slots_, [](const auto& w) { return w.expired(); });
        t.slots_.push_back(slot);
      }
      if (t.tl_lease_ != nullptr) {
        return;  // nested: the outer lease holds the slot
      }
      slot_ = slot.get();
      lock_ = std::unique_lock(slot_->mu);
      if (!slot_->share) {
        slot_->share = new_share();
      }
      t.tl_lease_ = slot_;
    }
    ~Lease() {
      if (slot_ == nullptr) {
        return;
      }
      slot_->last_used = Clock::now();
      t_.tl_lease_ = nullptr;
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;

   private:
    const CurlTransport& t_;
    ShareSlot* slot_ = nullptr;
    std::unique_lock<std::mutex> lock_;
  };

  // Close the share of every thread whose last call ended idle_timeout ago. Returns the
  // shares closed.
  std::size_t sweep() const {
    std::vector<std::shared_ptr<ShareSlot>> live;
    {
      std::lock_guard lk(slots_mu_);
      std::erase_if(slots_, [](const auto& w) { return w.expired(); });
      for (const auto& w : slots_) {
        if (auto s = w.lock()) {
          live.push_back(std::move(s));
        }
      }
    }
    std::size_t closed = 0;
    const auto now = Clock::now();
    for (const auto& slot : live) {
      std::unique_lock l(slot->mu, std::try_to_lock);  // in use: not idle
      if (l && slot->share && now - slot->last_used >= config_.idle_timeout) {
        slot->share.reset();  // curl_share_cleanup closes its cached connections
        ++closed;
      }
    }
    return closed;
  }

  void sweep_loop() {
    // Often enough that a connection is closed within 1.25 idle timeouts; at least
    // every 5 s.
    const auto period =
        std::clamp(std::chrono::duration_cast<std::chrono::milliseconds>(config_.idle_timeout / 4),
                   std::chrono::milliseconds(10), std::chrono::milliseconds(5000));
    std::unique_lock lk(sweep_mu_);
    while (!stop_sweep_) {
      sweep_cv_.wait_for(lk, period, [this] { return stop_sweep_; });
      if (stop_sweep_) {
        break;
      }
      lk.unlock();
      if (const std::size_t n = sweep(); n > 0) {
        spdlog::debug("registry: closed the idle connections of {} thread(s)", n);
      }
      lk.lock();
    }
  }

  // Runs every transfer to kDone on multi, in this thread.
  void drive(CURLM* multi, std::vector<Transfer>& ts) {
    for (;;) {
      const auto now = Clock::now();
      std::optional<Clock::time_point> next_wake;
      bool pending = false;
      for (Transfer& t : ts) {
        if (t.state == Transfer::State::kBackoff && t.wake_at <= now) {
          t.state = Transfer::State::kReady;
        }
        if (t.state == Transfer::State::kReady) {
          start(multi, t);
        }
        if (t.state == Transfer::State::kBackoff) {
          next_wake = next_wake ? std::min(*next_wake, t.wake_at) : t.wake_at;
        }
        pending = pending || t.state != Transfer::State::kDone;
      }
      if (!pending) {
        return;
      }
      int running = 0;
      if (const CURLMcode mc = curl_multi_perform(multi, &running); mc != CURLM_OK) {
        fail_all(multi, ts, mc);
        return;
      }
      int queued = 0;
      bool ready = false;
      while (CURLMsg* m = curl_multi_info_read(multi, &queued)) {
        if (m->msg != CURLMSG_DONE) {
          continue;
        }
        CURL* easy = m->easy_handle;
        const CURLcode rc = m->data.result;  // m dies with the removal below
        char* priv = nullptr;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
        curl_multi_remove_handle(multi, easy);
        Transfer& t = *reinterpret_cast<Transfer*>(priv);
        reaped(t, rc);
        ready = ready || t.state == Transfer::State::kReady;
      }
      auto timeout = kMultiPollCap;
      if (ready) {
        timeout = std::chrono::milliseconds(0);
      } else if (next_wake) {
        timeout =
            std::clamp(std::chrono::ceil<std::chrono::milliseconds>(*next_wake - Clock::now()),
                       std::chrono::milliseconds(0), kMultiPollCap);
      }
      // curl shortens the wait to its own next timer.
      if (const CURLMcode mc =
              curl_multi_poll(multi, nullptr, 0, static_cast<int>(timeout.count()), nullptr);
          mc != CURLM_OK) {
        fail_all(multi, ts, mc);
        return;
      }
    }
  }

  void start(CURLM* multi, Transfer& t) {
    CURL* easy = t.easy.get();
    if (auto s = setup(easy, *t.req, t.st); !s) {
      t.finish(base::Unexpected(std::move(s).error()));
      return;
    }
    curl_easy_setopt(easy, CURLOPT_PRIVATE, &t);
    if (t.req->url.starts_with("https:")) {
      // Wait for a connection being set up to say whether it multiplexes (HTTP/2)
      // rather than opening another one.
      curl_easy_setopt(easy, CURLOPT_PIPEWAIT, 1L);
    }
    if (const CURLMcode mc = curl_multi_add_handle(multi, easy); mc != CURLM_OK) {
      t.finish(base::errorf(EIO, "curl_multi_add_handle: {}", curl_multi_strerror(mc)));
      return;
    }
    t.state = Transfer::State::kRunning;
  }

  // A try of t ended with rc: retry later, take the next hop, or finish.
  void reaped(Transfer& t, CURLcode rc) {
    TryOutcome out = outcome(rc, t.st);
    if (const auto delay = retry_delay(*t.req, out, t.attempt)) {
      ++t.attempt;
      t.wake_at = Clock::now() + *delay;
      t.state = Transfer::State::kBackoff;
      return;
    }
    if (!out.result) {
      t.finish(std::move(out.result));
      return;
    }
    auto again = follow_redirect(*t.req, *out.result, t.original, t.redirects);
    if (!again) {
      t.finish(base::Unexpected(std::move(again).error()));
    } else if (*again) {
      ++t.redirects;
      t.attempt = 0;
      t.state = Transfer::State::kReady;
    } else {
      t.finish(std::move(out.result));
    }
  }

  static void fail_all(CURLM* multi, std::vector<Transfer>& ts, CURLMcode mc) {
    for (Transfer& t : ts) {
      if (t.state == Transfer::State::kRunning) {
        curl_multi_remove_handle(multi, t.easy.get());
      }
      if (t.state != Transfer::State::kDone) {
        t.finish(base::errorf(EIO, "curl multi: {}", curl_multi_strerror(mc)));
      }
    }
  }

  base::Result<Response> with_retries(CURL* easy, Request& req) {
    TryState st;
    for (int attempt = 0;; ++attempt) {
      CFN_TRY(setup(easy, req, st));
      TryOutcome out = outcome(curl_easy_perform(easy), st);
      const auto delay = retry_delay(req, out, attempt);
      if (!delay) {
        return std::move(out.result);
      }
      if (config_.sleep) {
        config_.sleep(*delay);
      } else {
        std::this_thread::sleep_for(*delay);
      }
    }
  }

  // The back-off before the next try, or nullopt when out is the answer.
  std::optional<std::chrono::milliseconds> retry_delay(const Request& req, const TryOutcome& out,
                                                       int attempt) const {
    const int max_retries = req.retry ? std::max(0, config_.retry.max_retries) : 0;
    if (!out.retryable || attempt >= max_retries) {
      return std::nullopt;
    }
    std::chrono::milliseconds delay = internal::backoff_delay(config_.retry, attempt, uniform01());
    if (out.retry_after) {
      // Capped: a server must not park us for longer than our own longest back-off.
      delay = std::min(*out.retry_after, config_.retry.max_delay);
    }
    if (const auto deadline = DeadlineScope::current();
        deadline && Clock::now() + delay >= *deadline) {
      return std::nullopt;  // no try would start before the caller's deadline
    }
    const std::string why = out.result
                                ? fmt::format("{} {}: HTTP {}", req.method,
                                              internal::url_for_log(req.url), out.result->status)
                                : out.result.error().message;
    warn_limited("{}; retry {}/{} in {} ms", why, attempt + 1, max_retries, delay.count());
    return delay;
  }

  // Whether resp (the answer to the hop `redirects` of req) is a redirect to follow;
  // if so req is pointed at the next hop (Authorization dropped when the origin
  // changes, 303 turned into a GET). Errors: a redirect loop, a bad Location, a
  // downgrade from https to plain http.
  static base::Result<bool> follow_redirect(Request& req, const Response& resp,
                                            const std::string& original, int redirects) {
    const bool redirect = resp.status >= 300 && resp.status < 400 && req.follow_redirects &&
                          resp.headers.count("location") != 0;
    if (!redirect) {
      return false;
    }
    if (redirects >= kMaxRedirects) {
      return base::errorf(EBADMSG, "redirect loop: more than {} redirects from {}", kMaxRedirects,
                          original);
    }
    auto next = internal::resolve_location(req.url, *header(resp.headers, "location"));
    if (!next) {
      return base::errorf(EBADMSG, "bad redirect from {}: {}", internal::url_for_log(req.url),
                          next.error().message);
    }
    CFN_ASSIGN_OR_RETURN(const internal::Url from, internal::parse_url(req.url));
    CFN_ASSIGN_OR_RETURN(const internal::Url to, internal::parse_url(*next));
    if (from.scheme == "https" && to.scheme == "http" && !is_loopback_host(to.authority)) {
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
    spdlog::debug("registry: {} redirected ({}) to {}", req.method, resp.status,
                  internal::url_for_log(*next));
    req.url = *next;
    return true;
  }

  // Resets easy and configures it for one try of req, its callbacks and the memory
  // it points at in st. The blocking path and the multi path share this.
  base::Status setup(CURL* easy, Request& req, TryState& st) {
    curl_easy_reset(easy);
    st = TryState{};
    st.req = &req;
    st.easy = easy;
    st.resp.url = req.url;
    st.stall_timeout = config_.stall_timeout;
    st.started = Clock::now();
    st.last_progress = st.started;
    // The whole try within the request timeout and the caller's deadline, if any.
    std::chrono::milliseconds timeout = config_.request_timeout;
    if (const auto deadline = DeadlineScope::current()) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - st.started);
      if (left.count() <= 0) {
        return base::errorf(ETIMEDOUT, "{} {}: deadline passed", req.method,
                            internal::url_for_log(req.url));
      }
      timeout = std::min(timeout, left);
    }

    CFN_ASSIGN_OR_RETURN(const internal::Url u, internal::parse_url(req.url));
    auto add_header = [&](const std::string& h) {
      curl_slist* n = curl_slist_append(st.headers.get(), h.c_str());
      if (n != nullptr) {
        (void)st.headers.release();
        st.headers.reset(n);
      }
    };
    for (const std::string& h : req.headers) {
      add_header(h);
    }
    if (!req.authorization.empty()) {
      add_header("Authorization: " + req.authorization);
    }
    add_header("Expect:");

    CURLSH* share = thread_share();
    if (share == nullptr) {
      return base::errorf(ENOMEM, "curl_share_init failed");
    }
    curl_easy_setopt(easy, CURLOPT_SHARE, share);
    if (config_.idle_timeout.count() > 0) {
      const auto s = std::chrono::ceil<std::chrono::seconds>(config_.idle_timeout).count();
      curl_easy_setopt(easy, CURLOPT_MAXAGE_CONN, static_cast<long>(std::max<long long>(1, s)));
    }
    curl_easy_setopt(easy, CURLOPT_URL, req.url.c_str());
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_2TLS));
    curl_easy_setopt(easy, CURLOPT_USERAGENT, config_.user_agent.c_str());
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(config_.connect_timeout.count()));
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
    if (config_.stall_timeout.count() > 0) {
      curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 0L);
      curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION, &on_progress);
      curl_easy_setopt(easy, CURLOPT_XFERINFODATA, &st);
    }
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

    if (const auto it = config_.tls.find(internal::lower(u.authority)); it != config_.tls.end()) {
      if (it->second.insecure) {
        curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 0L);
      }
      if (!it->second.ca_pem.empty()) {
        st.ca_blob.data = const_cast<char*>(it->second.ca_pem.data());
        st.ca_blob.len = it->second.ca_pem.size();
        st.ca_blob.flags = CURL_BLOB_NOCOPY;
        curl_easy_setopt(easy, CURLOPT_CAINFO_BLOB, &st.ca_blob);
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
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, st.headers.get());
    return {};
  }

  // What a try that ended with rc came to.
  TryOutcome outcome(CURLcode rc, TryState& st) const {
    Request& req = *st.req;
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - st.started).count();
    spdlog::debug("registry: {} {} -> {} ({}; {} bytes, {} ms)", req.method,
                  internal::url_for_log(req.url), st.resp.status, curl_easy_strerror(rc),
                  st.body_bytes, ms);

    TryOutcome out{Response{}, false, std::nullopt};
    if (st.sink_error) {
      out.result = base::Unexpected(std::move(*st.sink_error));
      return out;
    }
    if (st.too_big) {
      out.result = st.header_bytes > kMaxHeaderBytes
                       ? base::errorf(EMSGSIZE, "{} {}: response headers over {} bytes", req.method,
                                      internal::url_for_log(req.url), kMaxHeaderBytes)
                       : base::errorf(EMSGSIZE, "{} {}: response over the {} byte limit",
                                      req.method, internal::url_for_log(req.url), req.max_body);
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
      if (rc == CURLE_ABORTED_BY_CALLBACK && st.stalled) {
        out.result = base::errorf(ETIMEDOUT, "{} {}: no data for {} ms", req.method,
                                  internal::url_for_log(req.url), st.stall_timeout.count());
        out.retryable = true;
        return out;
      }
      const std::string what = fmt::format("{} {}: {}", req.method, internal::url_for_log(req.url),
                                           curl_easy_strerror(rc));
      switch (rc) {
        case CURLE_OPERATION_TIMEDOUT:
          out.result = base::errorf(ETIMEDOUT, "{}", what);
          out.retryable = true;
          break;
        case CURLE_PARTIAL_FILE:
          // Retried like a reset; when the retries are spent, the body was shorter
          // than its Content-Length said.
          out.result = base::errorf(EBADMSG, "{} (body shorter than its Content-Length)", what);
          out.retryable = true;
          break;
        case CURLE_COULDNT_CONNECT:
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
        case CURLE_GOT_NOTHING:
        case CURLE_SEND_ERROR:
        case CURLE_RECV_ERROR:
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
  // Unique over the process (an address could be reused by a later transport).
  const std::uint64_t id_ = next_transport_id_.fetch_add(1);
  static inline std::atomic<std::uint64_t> next_transport_id_{1};
  // The calling thread's slot while it is in a perform call (of any transport: one at
  // a time per thread, nested calls excepted).
  static inline thread_local ShareSlot* tl_lease_ = nullptr;
  // Every thread's slot of this transport (weak: a thread's exit frees its slot).
  mutable std::mutex slots_mu_;
  mutable std::vector<std::weak_ptr<ShareSlot>> slots_;
  std::mutex sweep_mu_;  // guards stop_sweep_
  std::condition_variable sweep_cv_;
  bool stop_sweep_ = false;
  std::thread sweeper_;  // only with an idle timeout
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

namespace registry {

namespace {
thread_local std::optional<std::chrono::steady_clock::time_point> tl_deadline;
}  // namespace

DeadlineScope::DeadlineScope(std::chrono::steady_clock::time_point deadline) : saved_(tl_deadline) {
  tl_deadline = saved_ ? std::min(*saved_, deadline) : deadline;
}

DeadlineScope::~DeadlineScope() {
  tl_deadline = saved_;
}

std::optional<std::chrono::steady_clock::time_point> DeadlineScope::current() {
  return tl_deadline;
}

bool DeadlineScope::passed() {
  return tl_deadline && std::chrono::steady_clock::now() + kTimerSlack >= *tl_deadline;
}

}  // namespace registry
