// SPDX-License-Identifier: Apache-2.0
// nydusd's JSON config (nydus-snapshotter's --nydusd-config / our --config-path), translated
// onto the cachefilesd-nydus daemon's options. Two forms are read:
//   v1:        {"device": {"backend": {"type": "registry", "config": {...}},
//                          "cache": {"type", "config": {"work_dir"}}},
//               "mode", "digest_validate", "amplify_io", "fs_prefetch": {...}}
//   template:  {"type": "bootstrap", "id", "domain_id", "config": {"backend_type",
//               "backend_config": {...}, "cache_type", "cache_config": {"work_dir"},
//               "prefetch_config": {...}}}                 (the fscache form)
// backend config keys: scheme ("http": plain HTTP), skip_verify (TLS unverified), timeout
// and connect_timeout (seconds), retry_limit, auth (base64 "user:password"), registry_token,
// proxy {url, ...}, mirrors [{host, headers, auth_through}]. Prefetch keys: enable,
// threads_count, merging_size, bandwidth_rate.
//
// Bind-time options (RegistryOverrides, mirror URLs for the image's host, credentials)
// travel with each bind; daemon-wide ones (prefetch, cache dir) become the start flags of a
// daemon we start (a running systemd daemon keeps its own). Keys we know but cannot honour
// are listed in `unsupported` with the reason, and so are numbers beyond the daemon's ranges
// (timeouts, retry_limit, threads_count, merging_size: brought into the range); keys we do
// not know in `unknown_keys`; the caller logs each once. Values of credentials never appear
// in either list.
//
// Pure: translate_nydusd_config does no I/O and never logs.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "control/api.h"

namespace snapshotter {

struct NydusdSettings {
  control::RegistryOverrides registry;   // without mirrors and docker_config
  std::vector<std::string> mirror_urls;  // mirrors (and a proxy) for the image's own host
  std::string auth;  // base64 "user:password" for the image's registry; never logged
  // The daemon's config JSON (daemon/config.h keys: prefetch_merge_size, amplify_io,
  // prefetch_bandwidth, fill_threads); "{}" when nothing is set.
  std::string daemon_config_json = "{}";
  std::string cache_dir;  // device.cache.config.work_dir
  std::string fs_driver;  // "fscache" when the cache type says so, else ""
  std::string domain_id;  // the template's domain_id
  std::vector<std::string> unknown_keys;
  std::vector<std::string> unsupported;  // "key: why"
  std::vector<std::string> daemon_args;  // start flags, filled by the caller
  [[nodiscard]] bool registry_empty() const {
    return registry == control::RegistryOverrides{} && mirror_urls.empty() && auth.empty();
  }
};

// Errors: EINVAL naming the key (not JSON, not an object, a key of the wrong type, a
// backend type other than registry, a negative number, an auth that is not base64 of
// "user:password").
[[nodiscard]] base::Result<NydusdSettings> translate_nydusd_config(std::string_view json_text);
// Read and translate; errors name the path.
[[nodiscard]] base::Result<NydusdSettings> load_nydusd_config(const std::string& path);

// A docker config.json text holding auth for host (so the daemon's credential reading
// takes it).
[[nodiscard]] std::string docker_config_with_auth(std::string_view host, std::string_view auth);

}  // namespace snapshotter
