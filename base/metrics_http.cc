// SPDX-License-Identifier: Apache-2.0
#include "base/metrics_http.h"

#include <microhttpd.h>
#include <netdb.h>

#include <cstring>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "base/prometheus.h"
#include "base/unique_fd.h"

namespace base {

Result<ListenAddress> parse_listen_address(std::string_view address) {
  auto bad = [&](std::string_view why) {
    return errorf(EINVAL,
                  "metrics address '{}': {} (expected HOST:PORT, [IPV6]:PORT or :PORT, e.g. "
                  "127.0.0.1:9110)",
                  address, why);
  };
  std::string host;
  std::string port;
  if (!address.empty() && address.front() == '[') {
    const auto close = address.find(']');
    if (close == std::string_view::npos || close + 1 >= address.size() ||
        address[close + 1] != ':') {
      return bad("an IPv6 address is [ADDR]:PORT");
    }
    host = std::string(address.substr(1, close - 1));
    port = std::string(address.substr(close + 2));
  } else {
    const auto colon = address.rfind(':');
    if (colon == std::string_view::npos) {
      return bad("no port");
    }
    host = std::string(address.substr(0, colon));
    port = std::string(address.substr(colon + 1));
    if (host.find(':') != std::string::npos) {
      return bad("an IPv6 address goes in brackets");
    }
  }
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos || std::stoul(port) > 65535) {
    return bad("the port must be a number 0..65535");
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0 || res == nullptr) {
    return bad(std::string("cannot resolve the host: ") + ::gai_strerror(rc));
  }
  ListenAddress out;
  // The first IPv4 answer if any (":PORT" gives 0.0.0.0 and ::), else the first.
  const addrinfo* pick = res;
  for (const addrinfo* a = res; a != nullptr; a = a->ai_next) {
    if (a->ai_family == AF_INET) {
      pick = a;
      break;
    }
  }
  std::memcpy(&out.addr, pick->ai_addr, pick->ai_addrlen);
  out.len = pick->ai_addrlen;
  ::freeaddrinfo(res);
  return out;
}

namespace {

std::string format_address(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
    return fmt::format("[{}]:{}", buf, ntohs(a->sin6_port));
  }
  const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
  ::inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
  return fmt::format("{}:{}", buf, ntohs(a->sin_port));
}

MHD_Result reply(MHD_Connection* c, unsigned status, const std::string& body,
                 const char* content_type, const char* allow = nullptr) {
  MHD_Response* r = MHD_create_response_from_buffer(body.size(), const_cast<char*>(body.data()),
                                                    MHD_RESPMEM_MUST_COPY);
  if (r == nullptr) {
    return MHD_NO;  // out of memory: libmicrohttpd closes the connection
  }
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
  if (allow != nullptr) {
    MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
  }
  const MHD_Result ret = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return ret;
}

}  // namespace

struct MetricsHttpServer::Impl {
  MetricsHttpOptions opts;
  MHD_Daemon* daemon = nullptr;

  static MHD_Result handle(void* cls, MHD_Connection* c, const char* url, const char* method,
                           const char* /*version*/, const char* /*upload_data*/,
                           size_t* upload_data_size, void** /*req_cls*/) {
    auto* self = static_cast<Impl*>(cls);
    // A body (not expected on GET/HEAD) is read and dropped, within the memory limit.
    *upload_data_size = 0;
    const std::string_view m = method;
    const std::string_view path = url;
    const char* text = "text/plain; charset=utf-8";
    if (path != "/metrics" && path != "/healthz") {
      return reply(c, MHD_HTTP_NOT_FOUND, "not found: try /metrics or /healthz\n", text);
    }
    if (m != MHD_HTTP_METHOD_GET && m != MHD_HTTP_METHOD_HEAD) {
      return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n", text, "GET, HEAD");
    }
    if (path == "/healthz") {
      const bool ok = !self->opts.healthy || self->opts.healthy();
      return ok ? reply(c, MHD_HTTP_OK, "ok\n", text)
                : reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, "unhealthy\n", text);
    }
    return reply(c, MHD_HTTP_OK, self->opts.metrics ? self->opts.metrics() : std::string(),
                 prom::kContentType);
  }
};

Result<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::start(MetricsHttpOptions o) {
  CFN_ASSIGN_OR_RETURN(const ListenAddress la, parse_listen_address(o.address));
  UniqueFd fd(::socket(la.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) {
    return errno_error("metrics address " + o.address + ": socket");
  }
  const int one = 1;
  (void)::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&la.addr), la.len) != 0) {
    const int err = errno;
    if (err == EADDRINUSE) {
      return errorf(err,
                    "metrics address {}: in use by another program (pick another port; "
                    "'ss -ltnp' names the holder)",
                    o.address);
    }
    return errno_error(err, "metrics address " + o.address + ": bind");
  }
  if (::listen(fd.get(), 16) != 0) {
    return errno_error("metrics address " + o.address + ": listen");
  }
  sockaddr_storage bound{};
  socklen_t blen = sizeof bound;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &blen) != 0) {
    return errno_error("metrics address " + o.address + ": getsockname");
  }
  std::unique_ptr<MetricsHttpServer> s(new MetricsHttpServer());
  s->impl_ = std::make_unique<Impl>();
  s->impl_->opts = std::move(o);
  s->bound_ = format_address(bound);
  s->port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                               : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  // libmicrohttpd owns the listening socket from here (MHD_stop_daemon closes it).
  const int listen_fd = fd.get();
  s->impl_->daemon = MHD_start_daemon(
      MHD_USE_POLL_INTERNAL_THREAD | (bound.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0), 0, nullptr,
      nullptr, &Impl::handle, s->impl_.get(), MHD_OPTION_LISTEN_SOCKET, listen_fd,
      MHD_OPTION_CONNECTION_TIMEOUT, static_cast<unsigned>(s->impl_->opts.timeout_s),
      MHD_OPTION_CONNECTION_LIMIT, kMaxConnections, MHD_OPTION_PER_IP_CONNECTION_LIMIT, kMaxPerIp,
      MHD_OPTION_CONNECTION_MEMORY_LIMIT, kMaxRequestBytes, MHD_OPTION_END);
  if (s->impl_->daemon == nullptr) {
    return errorf(EIO, "metrics address {}: libmicrohttpd did not start", s->bound_);
  }
  (void)fd.release();
  return s;
}

MetricsHttpServer::~MetricsHttpServer() {
  if (impl_ && impl_->daemon != nullptr) {
    MHD_stop_daemon(impl_->daemon);
  }
}

}  // namespace base
