// SPDX-License-Identifier: Apache-2.0
// Fuzz target: nydusd's JSON config as the snapshotter reads it (--config-path /
// [daemon] nydusd_config: snapshotter::translate_nydusd_config). A config either fails
// with EINVAL, or what it translates to must be taken by the daemon as the snapshotter
// hands it over: the daemon-wide JSON by the daemon's config parser (--config), the bind
// options (with the mirrors of the image's host and a docker config of ours holding the
// auth) through the control API and the daemon's registry options parser, the auth by
// the docker config reader. A config the snapshotter accepts must not fail every bind.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "control/api.h"
#include "daemon/config.h"
#include "registry/docker_config.h"
#include "snapshotter/nydusd_config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 65536) {
    return 0;
  }
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto s = snapshotter::translate_nydusd_config(text);
  if (!s) {
    if (s.error().code != EINVAL || s.error().message.empty()) {
      std::abort();
    }
    return 0;
  }
  if (!cfnd::parse_config(s->daemon_config_json)) {
    std::abort();
  }
  control::BindRequest req;
  req.mountpoint = "/m";
  req.reference = "registry.example:5000/repo:tag";
  req.registry = s->registry;
  if (!s->mirror_urls.empty()) {
    req.registry->mirrors =
        std::map<std::string, std::vector<std::string>>{{"registry.example:5000", s->mirror_urls}};
  }
  if (!s->auth.empty()) {
    req.registry->docker_config = "/root/auth/1.json";
    const std::string dc = snapshotter::docker_config_with_auth("registry.example:5000", s->auth);
    auto c = registry::internal::credentials_from_config(
        dc, "registry.example:5000", "auth.json",
        [](const std::string&,
           std::string_view) -> base::Result<std::optional<registry::Credentials>> {
          std::abort();  // our own docker config names no helper
        });
    if (!c || !*c) {
      std::abort();
    }
  }
  // Every string came out of JSON (UTF-8), so it encodes.
  const auto line = control::to_json(control::Request(req));
  if (!line) {
    std::abort();
  }
  auto back = control::request_from_json(*line);
  if (!back || control::to_json(*back) != *line) {
    std::abort();
  }
  const auto opts = control::to_json(*req.registry);
  if (!opts || !cfnd::parse_registry_options(*opts)) {
    std::abort();
  }
  return 0;
}
