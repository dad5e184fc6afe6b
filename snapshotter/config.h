// SPDX-License-Identifier: Apache-2.0
// The program's settings: defaults, then the TOML file of --config, then the command line.
//
// TOML keys (nydus-snapshotter's names for the ones that exist there):
//   root = "/var/lib/containerd-nydus"          address = "/run/containerd-nydus/....sock"
//   version = 1                                  (accepted, ignored)
//   [log]    level = "info", log_to_stdout = false
//   [daemon] nydusd_path (the cachefilesd-nydus binary to start when none answers),
//            nydusimage_path (stored), nydusd_config (the nydusd JSON config),
//            address (the daemon's control socket), fs_driver (fscache, fanotify, fusedev,
//            auto), domain_id (cachefiles: the fscache domain shared by all images; "" none)
//   [metrics] address ("HOST:PORT" of /metrics and /healthz over HTTP, e.g. "127.0.0.1:9110";
//            "" off, the default)
//   [experimental] enable_stargz (eStargz layers lazily through the handshake; false)
// Other keys are reported (unknown_keys) and otherwise ignored.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "base/result.h"

namespace snapshotter {

inline constexpr const char* kDefaultAddress = "/run/containerd-nydus/containerd-nydus-grpc.sock";
inline constexpr const char* kDefaultRoot = "/var/lib/containerd-nydus";
// The daemon's default control socket (daemon/config.h).
inline constexpr const char* kDefaultDaemonAddress = "/run/cachefilesd-nydus/control.sock";
inline constexpr const char* kDefaultDomainId = "containerd-nydus";

struct Options {
  std::string address = kDefaultAddress;
  std::string root = kDefaultRoot;
  std::string nydusd_config;  // --config-path: the nydusd JSON config (read by a later issue)
  std::string nydusd_path;
  std::string nydusimg_path;
  std::string daemon_address = kDefaultDaemonAddress;
  std::string fs_driver = "auto";
  std::string domain_id = kDefaultDomainId;
  std::string log_level = "info";
  bool log_to_stdout = false;
  std::string metrics_address;  // "" = no metrics endpoint
  bool enable_stargz = false;   // --enable-stargz, [experimental] enable_stargz
  // [snapshot] prefetch_at_pull: a pull that commits a nydus image's bootstrap layer asks
  // the daemon to fetch the image's prefetch list (MountPolicy::prefetch_at_pull).
  bool prefetch_at_pull = true;
  std::vector<std::string> unknown_keys;  // dotted paths of TOML keys not understood
};

// Values given on the command line; each set one overrides the file.
struct Overrides {
  std::optional<std::string> address, root, nydusd_config, nydusd_path, nydusimg_path, log_level,
      daemon_address, fs_driver, metrics_address;
  std::optional<bool> log_to_stdout, enable_stargz;
};

// Read the TOML text of a config file into o. EINVAL with the file's line and column on a
// syntax error or a key of the wrong type.
[[nodiscard]] base::Status apply_toml(std::string_view text, std::string_view source, Options& o);
[[nodiscard]] base::Status load_toml_file(const std::string& path, Options& o);
void apply_overrides(const Overrides& ov, Options& o);
// EINVAL unless driver is fscache, fanotify, fusedev or auto.
[[nodiscard]] base::Status check_fs_driver(std::string_view driver);
// The daemon's front-end name for an fs driver: cachefiles, fanotify, fuse, or "" (auto).
[[nodiscard]] std::string frontend_of(std::string_view driver);
// EINVAL unless level is one of trace, debug, info, warn, error, off.
[[nodiscard]] base::Status check_log_level(std::string_view level);
// The nydusd config must exist and be JSON; its contents are used by a later issue.
[[nodiscard]] base::Status check_nydusd_config(const std::string& path);

}  // namespace snapshotter
