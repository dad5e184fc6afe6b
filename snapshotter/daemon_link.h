// SPDX-License-Identifier: Apache-2.0
// The snapshotter's link to the cachefilesd-nydus daemon: its control API (control/client.h)
// on a unix socket, and starting the daemon when none answers there, the way
// `cachefilesd-nydus mount` does (a new session, its log appended to a file, ready once it
// answers ping). With the systemd service running, its socket answers and nothing starts.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <mutex>
#include <string>
#include <vector>

#include "control/client.h"
#include "snapshotter/image_mounts.h"

namespace snapshotter {

struct DaemonStart {
  std::string socket;             // the control socket
  std::string program;            // the cachefilesd-nydus binary
  std::string frontend;           // its --frontend (auto, cachefiles, fanotify, fuse)
  std::vector<std::string> args;  // more flags (from the nydusd config)
  std::string log_path;
};

// The daemon binary beside our own (/proc/self/exe's directory).
[[nodiscard]] std::string default_daemon_program();

class DaemonLink final : public Daemon {
 public:
  explicit DaemonLink(DaemonStart start);
  base::Status ensure() override;
  bool answers() override;
  base::Result<control::ImageInfo> bind(const control::BindRequest& r) override;
  base::Status unbind(const control::UnbindRequest& r) override;
  base::Result<std::vector<control::ImageInfo>> list() override;
  base::Result<control::PrefetchAnswer> prefetch(const control::PrefetchRequest& r) override;
  static constexpr std::chrono::seconds kPrefetchTimeout{15};

 private:
  DaemonStart start_;
  control::Client client_;
  std::mutex start_mu_;  // one start at a time; child_
  pid_t child_ = -1;     // the daemon we started last (reaped once it is gone)
};

}  // namespace snapshotter
