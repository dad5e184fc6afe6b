// SPDX-License-Identifier: Apache-2.0
// Which front ends the daemon runs, and which one binds get when they name none.
#pragma once

#include <memory>

#include "base/result.h"
#include "base/unique_fd.h"
#include "daemon/cachefiles_frontend.h"
#include "daemon/config.h"
#include "daemon/fanotify_frontend.h"

namespace cfnd {

struct Frontends {
  Frontend default_frontend = Frontend::kFuse;  // never kAuto
  // Made whenever the kernel supports it (binds may ask for it whatever the default).
  std::unique_ptr<FanotifyFrontend> fanotify;
  std::unique_ptr<CachefilesFrontend> cachefiles;
  bool adopted = false;  // cachefiles took over a handed-over /dev/cachefiles
};

// config.frontend decides; auto tries cachefiles, then fanotify, then FUSE, logging
// why. A handed-over /dev/cachefiles (failover; invalid when none) is always adopted:
// the dead daemon's mounts need it. Errors: the front end config.frontend names is
// unavailable (its reason), or the fanotify group could not be made.
[[nodiscard]] base::Result<Frontends> choose_frontends(const Config& config, base::UniqueFd handed);

}  // namespace cfnd
