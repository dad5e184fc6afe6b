// SPDX-License-Identifier: Apache-2.0
// The running daemon: the blob cache, the front ends, the bound images, the control
// server and the event loop that drives them. Program main builds one and runs it.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "base/result.h"
#include "daemon/config.h"

namespace cfnd {

// A seam for tests: called by every bind on its own thread with the mount point, no
// lock held. before_mount: the image is open, the mount is next. after_mount: mounted,
// not yet listed.
struct ServiceHooks {
  std::function<void(const std::string& mountpoint)> before_mount;
  std::function<void(const std::string& mountpoint)> after_mount;
};

class Service {
 public:
  // Open the cache, pick the default front end (auto: cachefiles, then fanotify, then
  // FUSE, logging why), create the fanotify group when the kernel supports it, and
  // listen on the control socket. Errors: the first set-up step that failed.
  [[nodiscard]] static base::Result<std::unique_ptr<Service>> create(const Config& config,
                                                                     ServiceHooks hooks = {});
  virtual ~Service() = default;

  // Begin the shutdown SIGTERM begins: binds are refused from now on, binds past their
  // mount finish, every image is unmounted, then run() returns. Idempotent.
  virtual void stop() = 0;

  // Run the event loop until SIGTERM/SIGINT; then unmount every image (while the loop
  // still answers fanotify events) and return.
  [[nodiscard]] virtual base::Status run() = 0;
  // One control request (a JSON text) -> its answer (a JSON text). Thread-safe.
  [[nodiscard]] virtual std::string handle(const std::string& request) = 0;
};

}  // namespace cfnd
