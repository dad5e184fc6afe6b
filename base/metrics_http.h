// SPDX-License-Identifier: Apache-2.0
// The /metrics and /healthz HTTP endpoint of both programs (the daemon's and the
// snapshotter's --metrics-address), on GNU libmicrohttpd (Debian libmicrohttpd-dev).
//
// Why a library and why this one: an HTTP/1.1 parser facing whatever connects to a TCP
// port is exactly the untrusted-bytes code we would otherwise have to write and fuzz;
// libmicrohttpd is a small C library (GNU, in Debian since 2007, security-supported)
// whose own thread polls its sockets, with per-connection memory and idle-time limits and
// a connection cap built in. civetweb would do too but brings a web server's worth of
// features (CGI, file serving, Lua) we would have to switch off.
//
// The server runs on its own thread, never on the daemon's event loop: a slow or hostile
// scraper (a connection that sends half a header and stalls, a 1 MB header, a thousand
// connections) costs at most that thread's time and kMaxConnections sockets; it never
// delays a kernel read. Limits: a request (line + headers) over kMaxRequestBytes is
// refused (431/413 or the connection closed), a connection idle for timeout_s is closed,
// at most kMaxConnections connections at once (kMaxPerIp from one address). Only GET and
// HEAD of /metrics and /healthz are served: other paths 404, other methods 405.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "base/result.h"

namespace base {

struct MetricsHttpOptions {
  // "HOST:PORT" or "[IPV6]:PORT"; HOST may be a name; ":PORT" is every address (as
  // nydus-snapshotter's ":9110"); PORT 0 picks a free one (see MetricsHttpServer::port).
  std::string address;
  // The Prometheus text of one scrape, called on the server's thread: must be
  // thread-safe and quick.
  std::function<std::string()> metrics;
  // /healthz: 200 "ok" when it returns true (or is empty), 503 "unhealthy" otherwise.
  std::function<bool()> healthy;
  unsigned timeout_s = 10;  // a connection idle this long is closed
};

class MetricsHttpServer {
 public:
  // libmicrohttpd's memory per connection: the request line and headers, and the
  // reply's headers (the body has its own buffer).
  static constexpr std::size_t kMaxRequestBytes = 32 * 1024;
  static constexpr unsigned kMaxConnections = 32;
  static constexpr unsigned kMaxPerIp = 8;

  // Bind, listen and start serving. Errors: EINVAL for an address that does not parse
  // (naming it and the expected form), the bind(2) error naming the address
  // (EADDRINUSE: "in use"), EIO when libmicrohttpd does not start.
  [[nodiscard]] static Result<std::unique_ptr<MetricsHttpServer>> start(MetricsHttpOptions o);
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;
  // Stops the server: no callback runs after it returns.
  ~MetricsHttpServer();

  [[nodiscard]] std::uint16_t port() const { return port_; }
  // The bound address as HOST:PORT (the port resolved).
  [[nodiscard]] const std::string& address() const { return bound_; }

 private:
  MetricsHttpServer() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::uint16_t port_ = 0;
  std::string bound_;
};

// Pure but for name resolution: an address as MetricsHttpOptions::address takes it.
struct ListenAddress {
  sockaddr_storage addr{};
  socklen_t len = 0;
};
[[nodiscard]] Result<ListenAddress> parse_listen_address(std::string_view address);

}  // namespace base
