// SPDX-License-Identifier: Apache-2.0
// Which front ends the daemon runs, and which one binds get when they name none.
#pragma once

#include <memory>
#include <string>

#include "base/result.h"
#include "base/unique_fd.h"
#include "daemon/cachefiles_frontend.h"
#include "daemon/config.h"
#include "daemon/fanotify_frontend.h"

namespace cfnd {

// What the fd store / fd holder handed over, and whether they keep what we make.
struct Handed {
  base::UniqueFd cachefiles;  // a dead daemon's /dev/cachefiles (invalid: none)
  base::UniqueFd fanotify;    // a dead daemon's fanotify group (invalid: none)
  base::UniqueFd fanotify_watch;  // its inotify unmount watch (used with its group only)
  bool can_keep = false;      // a new fanotify group outlives us (fd store or fd holder)
};

struct Frontends {
  Frontend default_frontend = Frontend::kFuse;  // never kAuto
  // Made whenever the kernel supports it (binds may ask for it whatever the default),
  // and an fd store / fd holder keeps its group or config.allow_fail_open says it may
  // fail open.
  std::unique_ptr<FanotifyFrontend> fanotify;
  std::unique_ptr<CachefilesFrontend> cachefiles;
  bool adopted = false;  // cachefiles took over a handed-over /dev/cachefiles
  // fanotify took over a handed-over group: the dead daemon's events to settle.
  bool fanotify_adopted = false;
  FanotifyFrontend::Takeover fanotify_takeover;
};

// config.frontend decides; auto tries cachefiles, then fanotify, then FUSE, logging
// why. A handed-over /dev/cachefiles or fanotify group is always adopted: the dead
// daemon's mounts need it. Errors: the front end config.frontend names is unavailable
// (its reason; fanotify without a keeper and without allow_fail_open: what to do), or
// the fanotify group could not be made.
[[nodiscard]] base::Result<Frontends> choose_frontends(const Config& config, Handed handed);

}  // namespace cfnd
