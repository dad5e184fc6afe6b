// SPDX-License-Identifier: Apache-2.0
// The daemon's settings: defaults, then a JSON config file, then command-line options.
// Pure: parsing only; no I/O but load_config() reading the file.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"

namespace cfnd {

enum class Frontend : std::uint8_t { kAuto, kCachefiles, kFanotify, kFuse };

// "auto", "cachefiles", "fanotify", "fuse"; EINVAL for anything else.
[[nodiscard]] base::Result<Frontend> parse_frontend(std::string_view name);
[[nodiscard]] std::string_view frontend_name(Frontend f);

struct Config {
  Frontend frontend = Frontend::kAuto;  // default for binds that do not name one
  std::string cache_dir = "/var/cache/cachefilesd-nydus";
  std::string socket_path = "/run/cachefilesd-nydus/control.sock";
  std::string log_level = "info";
  std::uint64_t batch_size = 1U << 20;   // on-demand fills widen to this
  std::uint64_t prefetch_bandwidth = 0;  // bytes/s, 0 = no background prefetch
  unsigned fill_threads = 16;            // fanotify fill workers
  unsigned fuse_threads = 8;             // max idle FUSE worker threads per mount
};

// Parse a JSON object of Config keys ("frontend", "cache_dir", "socket", "log_level",
// "batch_size", "prefetch_bandwidth", "fill_threads", "fuse_threads") over `base`.
// Unknown keys and wrong types are EINVAL, naming the key.
[[nodiscard]] base::Result<Config> parse_config(std::string_view json_text, Config base = {});
// Read and parse a config file; errors name the path.
[[nodiscard]] base::Result<Config> load_config(const std::string& path, Config base = {});

}  // namespace cfnd
