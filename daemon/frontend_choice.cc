// SPDX-License-Identifier: Apache-2.0
#include "daemon/frontend_choice.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <string_view>

#include <fmt/core.h>

#include "base/log.h"
#include "daemon/fanotify_inflight.h"
#include "daemon/kernel_config.h"

namespace cfnd {
namespace {

constexpr char kFailOpen[] =
    "fanotify without an fd holder fails open: when the daemon dies its group closes and "
    "the kernel lets every read waiting for it through, so readers read holes as zeros. "
    "Run the daemon with --fd-holder (\"fd_holder\": true) or under systemd (its fd store "
    "keeps the group), or pass --allow-fail-open (\"allow_fail_open\": true) to accept that";

// The in-flight record of a new fanotify front end; without one a successor denies the
// events we leave (EIO), which is safe, so a failure is only logged.
std::unique_ptr<InflightLog> open_log(const Config& config, std::uint64_t fd_bound,
                                      std::span<const InflightRecord> keep) {
  auto log = InflightLog::open(inflight_path(config.cache_dir), fd_bound, keep);
  if (!log) {
    spdlog::error("fanotify: {}: after a failover every event left unanswered is denied (EIO)",
                  log.error().to_string());
    return nullptr;
  }
  return std::move(*log);
}

// Why EROFS cannot mount over fscache on this kernel, from its config ("" when the config
// sets CONFIG_EROFS_FS_ONDEMAND or cannot be read: then binding /dev/cachefiles decides).
// Linux 7.2 removed the option (EROFS over fscache) while keeping CACHEFILES_ONDEMAND.
std::string erofs_over_fscache_missing() {
  static constexpr std::array<std::string_view, 1> kOption = {"CONFIG_EROFS_FS_ONDEMAND"};
  const auto config = read_kernel_config();
  if (!config || unset_kernel_options(config->text, kOption).empty()) {
    return {};
  }
  return fmt::format(
      "its {} leaves CONFIG_EROFS_FS_ONDEMAND unset: EROFS cannot mount over "
      "fscache (Linux 7.2 removed it)",
      config->path);
}

// What the fanotify front end needs, for the error that says it is unavailable: the
// kernel (the options, the versions, this kernel's release and what its config sets) and,
// for EOPNOTSUPP (a kernel with pre-content events, a file system without them), the cache
// directory's file system.
std::string fanotify_kernel_needs(int err) {
  static constexpr std::array<std::string_view, 4> kOptions = {
      "CONFIG_FANOTIFY", "CONFIG_FANOTIFY_ACCESS_PERMISSIONS", "CONFIG_EROFS_FS",
      "CONFIG_EROFS_FS_BACKED_BY_FILE"};
  const std::string note = kernel_config_note(kOptions);
  std::string out = fmt::format(
      "the fanotify front end needs Linux >= 6.14 built with CONFIG_FANOTIFY=y and "
      "CONFIG_FANOTIFY_ACCESS_PERMISSIONS=y (pre-content events), and file-backed EROFS "
      "(Linux >= 6.12, CONFIG_EROFS_FS=m/y, CONFIG_EROFS_FS_BACKED_BY_FILE=y); this kernel "
      "is {}{}",
      kernel_release(), note.empty() ? "" : ", and " + note);
  if (err == EOPNOTSUPP) {
    out +=
        "; the cache directory's file system takes no pre-content marks (tmpfs and ramfs do "
        "not): put --cache-dir on ext4, xfs or btrfs";
  }
  return out;
}

}  // namespace

base::Result<Frontends> choose_frontends(const Config& config, Handed handed) {
  Frontends f;
  auto probe = FanotifyFrontend::probe(config.cache_dir);
  bool refused = false;  // fanotify works but may not fail open
  if (handed.fanotify) {
    // Failover: the dead daemon's group, whatever the configuration says.
    f.fanotify_takeover =
        FanotifyFrontend::take_over(handed.fanotify.get(), inflight_path(config.cache_dir));
    auto log =
        open_log(config, std::max(f.fanotify_takeover.fd_bound, FanotifyFrontend::own_fd_bound()),
                 f.fanotify_takeover.records);
    if (!handed.fanotify_watch) {
      spdlog::warn(
          "failover: the dead daemon's unmount watch (inotify) was not handed over with its "
          "group: images it unmounted whose file system lives on cannot be served (EIO)");
    }
    CFN_ASSIGN_OR_RETURN(
        f.fanotify, FanotifyFrontend::create(std::move(handed.fanotify), config.fill_threads,
                                             std::move(log), std::move(handed.fanotify_watch)));
    f.fanotify_adopted = true;
  } else if (probe && !handed.can_keep && !config.allow_fail_open) {
    refused = true;
  } else if (probe) {
    CFN_ASSIGN_OR_RETURN(auto group, FanotifyFrontend::new_group());
    auto log = open_log(config, FanotifyFrontend::own_fd_bound(), {});
    CFN_ASSIGN_OR_RETURN(f.fanotify, FanotifyFrontend::create(std::move(group), config.fill_threads,
                                                              std::move(log)));
  }
  if (handed.cachefiles) {
    // Failover: the dead daemon's cache, whatever the configured default; its mounts
    // need this front end.
    f.cachefiles = CachefilesFrontend::adopt(std::move(handed.cachefiles), config.fill_threads);
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
      if (!f.fanotify && !probe) {
        return base::Unexpected(base::Error{
            probe.error().code,
            fmt::format("fanotify front end unavailable: {}: {}", probe.error().message,
                        fanotify_kernel_needs(probe.error().code))});
      }
      if (!f.fanotify) {
        return base::make_error(EINVAL, std::string("fanotify front end refused: ") + kFailOpen);
      }
      f.default_frontend = Frontend::kFanotify;
      return f;
    case Frontend::kFuse:
      if (refused) {
        spdlog::info("no fanotify front end for binds that ask for it: {}", kFailOpen);
      }
      f.default_frontend = Frontend::kFuse;
      return f;
    case Frontend::kAuto:
      break;
  }
  if (const std::string why = erofs_over_fscache_missing(); !why.empty()) {
    // /dev/cachefiles may still bind (7.2 kept CACHEFILES_ONDEMAND), but no image could
    // mount through it: do not take the device.
    spdlog::info("front end auto: no cachefiles ({}); trying fanotify", why);
  } else if (auto cf = CachefilesFrontend::create(config.cache_dir, config.fill_threads)) {
    spdlog::info("front end auto: cachefiles on-demand");
    f.cachefiles = std::move(*cf);
    f.default_frontend = Frontend::kCachefiles;
    return f;
  } else {
    spdlog::info("front end auto: no cachefiles ({}); trying fanotify", cf.error().to_string());
  }
  if (f.fanotify) {
    spdlog::info("front end auto: fanotify pre-content marks work in {}: fanotify",
                 config.cache_dir);
    f.default_frontend = Frontend::kFanotify;
  } else if (refused) {
    spdlog::warn("front end auto: fanotify refused ({}): fuse", kFailOpen);
    f.default_frontend = Frontend::kFuse;
  } else {
    spdlog::info("front end auto: fanotify unusable ({}): fuse", probe.error().to_string());
    f.default_frontend = Frontend::kFuse;
  }
  return f;
}

}  // namespace cfnd
