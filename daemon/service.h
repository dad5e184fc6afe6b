// SPDX-License-Identifier: Apache-2.0
// The running daemon: the blob cache, the front ends, the bound images, the control
// server and the event loop that drives them. Program main builds one and runs it.
#pragma once

#include <memory>
#include <string>

#include "base/result.h"
#include "daemon/config.h"

namespace cfnd {

class Service {
 public:
  // Open the cache, pick the default front end (auto: cachefiles, then fanotify, then
  // FUSE, logging why), create the fanotify group when the kernel supports it, and
  // listen on the control socket. Errors: the first set-up step that failed.
  [[nodiscard]] static base::Result<std::unique_ptr<Service>> create(const Config& config);
  virtual ~Service() = default;

  // Run the event loop until SIGTERM/SIGINT; then unmount every image (while the loop
  // still answers fanotify events) and return.
  [[nodiscard]] virtual base::Status run() = 0;
  // One control request (a JSON text) -> its answer (a JSON text). Thread-safe.
  [[nodiscard]] virtual std::string handle(const std::string& request) = 0;
};

}  // namespace cfnd
