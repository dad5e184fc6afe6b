// SPDX-License-Identifier: Apache-2.0
// A client of the daemon's control socket: each call connects, sends one request,
// reads one answer under the client's deadline, and returns it typed. Errors: the
// daemon's own (its errno and text), ECONNREFUSED / ENOENT when no daemon listens,
// ETIMEDOUT after the deadline, EPROTO for an answer that is not one. Thread-safe (no
// state but the path and the deadline).
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "base/result.h"
#include "control/api.h"

namespace control {

class Client {
 public:
  explicit Client(std::string socket_path,
                  std::chrono::milliseconds timeout = std::chrono::seconds(120))
      : path_(std::move(socket_path)), timeout_(timeout) {}

  [[nodiscard]] base::Result<PingAnswer> ping() const;
  [[nodiscard]] base::Result<ImageInfo> bind(const BindRequest& r) const;
  [[nodiscard]] base::Status unbind(const UnbindRequest& r) const;
  [[nodiscard]] base::Result<std::vector<ImageInfo>> list() const;
  [[nodiscard]] base::Result<std::vector<std::string>> accessed(
      const std::string& mountpoint) const;
  [[nodiscard]] base::Result<Metrics> metrics() const;
  [[nodiscard]] base::Result<std::string> metrics_prometheus() const;
  [[nodiscard]] base::Result<CacheListing> cache_ls() const;
  [[nodiscard]] base::Result<GcAnswer> cache_gc(bool dry_run) const;
  [[nodiscard]] base::Status cache_rm(const std::string& id) const;
  [[nodiscard]] base::Result<StatusAnswer> status() const;
  // The image's prefetch list queued in the daemon's cache (see PrefetchRequest).
  [[nodiscard]] base::Result<PrefetchAnswer> prefetch(const PrefetchRequest& r) const;
  // The daemon's pid: it has begun to stop (see StopRequest).
  [[nodiscard]] base::Result<PingAnswer> stop() const;

  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  [[nodiscard]] base::Result<std::string> call(const Request& r) const;

  std::string path_;
  std::chrono::milliseconds timeout_;
};

}  // namespace control
