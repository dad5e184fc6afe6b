// SPDX-License-Identifier: Apache-2.0
#include "daemon/frontend_choice.h"

#include "base/log.h"

namespace cfnd {

base::Result<Frontends> choose_frontends(const Config& config, base::UniqueFd handed) {
  Frontends f;
  auto probe = FanotifyFrontend::probe(config.cache_dir);
  if (probe) {
    CFN_ASSIGN_OR_RETURN(f.fanotify, FanotifyFrontend::create(config.fill_threads));
  }
  if (handed) {
    // Failover: the dead daemon's cache, whatever the configured default; its mounts
    // need this front end.
    f.cachefiles = CachefilesFrontend::adopt(std::move(handed), config.fill_threads);
    f.adopted = true;
    if (config.frontend == Frontend::kAuto || config.frontend == Frontend::kCachefiles) {
      f.default_frontend = Frontend::kCachefiles;
      return f;
    }
  }
  switch (config.frontend) {
    case Frontend::kCachefiles: {
      auto cf = CachefilesFrontend::create(config.cache_dir, config.fill_threads);
      if (!cf) {
        return base::Unexpected(cf.error().wrap("cachefiles front end unavailable"));
      }
      f.cachefiles = std::move(*cf);
      f.default_frontend = Frontend::kCachefiles;
      return f;
    }
    case Frontend::kFanotify:
      if (!probe) {
        return base::Unexpected(probe.error().wrap("fanotify front end unavailable"));
      }
      f.default_frontend = Frontend::kFanotify;
      return f;
    case Frontend::kFuse:
      f.default_frontend = Frontend::kFuse;
      return f;
    case Frontend::kAuto:
      break;
  }
  auto cf = CachefilesFrontend::create(config.cache_dir, config.fill_threads);
  if (cf) {
    spdlog::info("front end auto: cachefiles on-demand");
    f.cachefiles = std::move(*cf);
    f.default_frontend = Frontend::kCachefiles;
    return f;
  }
  spdlog::info("front end auto: no cachefiles ({}); trying fanotify", cf.error().to_string());
  if (probe) {
    spdlog::info("front end auto: fanotify pre-content marks work in {}: fanotify",
                 config.cache_dir);
    f.default_frontend = Frontend::kFanotify;
  } else {
    spdlog::info("front end auto: fanotify unusable ({}): fuse", probe.error().to_string());
    f.default_frontend = Frontend::kFuse;
  }
  return f;
}

}  // namespace cfnd
