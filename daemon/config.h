// SPDX-License-Identifier: Apache-2.0
// The daemon's settings: defaults, then a JSON config file, then command-line options.
// Pure: parsing only; no I/O but load_config() reading the file.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "base/result.h"

namespace cfnd {

enum class Frontend : std::uint8_t { kAuto, kCachefiles, kFanotify, kFuse };

// "auto", "cachefiles", "fanotify", "fuse"; EINVAL for anything else.
[[nodiscard]] base::Result<Frontend> parse_frontend(std::string_view name);
[[nodiscard]] std::string_view frontend_name(Frontend f);

// How images given by reference are pulled: mapped onto registry::ClientConfig. The
// daemon config holds the defaults; a bind request may override any of them, and the
// daemon keeps one shared registry client per distinct setting.
struct RegistryOptions {
  bool plain_http = false;            // http:// for every host (loopback hosts: always allowed)
  bool insecure = false;              // TLS without verification for the image's host
  std::vector<std::string> ca_files;  // extra trusted CAs (PEM) for the image's host
  std::string docker_config;          // config.json; empty: $DOCKER_CONFIG or ~/.docker
  std::map<std::string, std::vector<std::string>> mirrors;  // host -> mirror base URLs
  // mirror URL -> header name -> value, sent on every request to that mirror (never logged)
  std::map<std::string, std::map<std::string, std::string>> mirror_headers;
  std::uint64_t connect_timeout_ms = 5000;
  std::uint64_t request_timeout_ms = 60000;  // whole request, per try
  std::uint64_t stall_timeout_ms = 10000;    // no byte received for this long
  // A worker thread's cached connections are closed after this long unused (0: never).
  std::uint64_t idle_connection_timeout_ms = 60000;
  unsigned retries = 3;                              // after the first try
  unsigned max_parallel = 8;                         // connections per host for range reads
  std::uint64_t max_bootstrap_bytes = 512ULL << 20;  // bootstrap (uncompressed) size cap

  bool operator==(const RegistryOptions&) const = default;
};

struct Config {
  Frontend frontend = Frontend::kAuto;  // default for binds that do not name one
  std::string cache_dir = "/var/cache/cachefilesd-nydus";
  std::string socket_path = "/run/cachefilesd-nydus/control.sock";
  std::string log_level = "info";
  // On-demand fills widen to this. Small: the rest of a file comes by file readahead.
  std::uint64_t batch_size = 128U << 10;
  // Read amplification: a miss fetches the absent chunks after it in the same blob up to
  // this many uncompressed bytes, one merged range read (below batch_size: batch_size).
  // 512 KiB by measurement (docs/benchmarks.md): importing stdlib packages from an image
  // took 0.62x the time of 128 KiB (as 1 MiB did), python's start fetched 13% more bytes.
  std::uint64_t amplify_io = 512U << 10;
  std::uint64_t prefetch_bandwidth = 0;  // bytes/s, 0 = no background prefetch
  // A prefetch list's largest range read (compressed bytes): listed chunks that follow
  // each other in the blob merge up to this (below batch_size, 0 too: batch_size).
  // Each list's first reads start at batch_size and double, so the first files the
  // workload needs arrive first. nydusd's prefetch merging size (1 MiB).
  std::uint64_t prefetch_merge_size = 1U << 20;
  // The first read of a file queues the rest of it, up to this many uncompressed
  // bytes, as a prefetch (0 = off): BoundImage::open.
  std::uint64_t file_readahead = 8U << 20;
  unsigned fill_threads = 16;  // fanotify fill workers
  unsigned fuse_threads = 8;   // FUSE worker threads per mount
  // After serving a request, a FUSE worker polls for the next one this long before it
  // sleeps (0 = never polls).
  unsigned fuse_poll_us = 50;
  // A read of blob bytes not in the cache gets them or EIO within this many seconds,
  // the registry's retries included (0 = only the registry timeouts bound it).
  unsigned read_timeout_s = 30;
  // Failover without systemd: keep /dev/cachefiles in an fd holder process (see
  // daemon/fd_holder.h) at fd_holder_socket(socket_path), started when none answers.
  bool fd_holder = false;
  unsigned fd_holder_grace_s = 300;  // the holder gives up this long after the daemon died
  // The fanotify front end runs without an fd store or fd holder only when this says it
  // may fail open: the group dies with the daemon, and the kernel then lets every read
  // waiting for it through (holes read as zeros).
  bool allow_fail_open = false;
  // HOST:PORT of the HTTP endpoint serving /metrics (Prometheus text) and /healthz, e.g.
  // 127.0.0.1:9110 (base/metrics_http.h); empty: off.
  std::string metrics_address;
  RegistryOptions registry;
  // The blob cache's size (docs/cache.md), the "cache" object of the config file:
  // "limit" (bytes as a number, or a text: "10G", "512M", "20%" of the cache's file
  // system; 0: no limit), "high_watermark" / "low_watermark" (percent of the limit,
  // 90 / 70), "gc_interval_s" (60), "orphan_grace_s" (600).
  std::uint64_t cache_limit = 0;
  unsigned cache_limit_percent = 0;
  unsigned cache_high_watermark = 90;
  unsigned cache_low_watermark = 70;
  unsigned cache_gc_interval_s = 60;
  unsigned cache_orphan_grace_s = 600;
};

// EINVAL unless level is one of trace, debug, info, warn, error, off (spdlog would turn
// any other name into "off" without a word).
[[nodiscard]] base::Status check_log_level(std::string_view level);

// Set config's cache limit from a text (see Config::cache_limit). EINVAL naming it.
[[nodiscard]] base::Status set_cache_limit(Config& config, std::string_view text);

// The fd holder's socket: beside the control socket, "<socket_path>.fds".
[[nodiscard]] std::string fd_holder_socket(const std::string& socket_path);

// Parse a JSON object of Config keys ("frontend", "cache_dir", "socket", "log_level",
// "batch_size", "amplify_io", "prefetch_bandwidth", "prefetch_merge_size", "file_readahead",
// "fill_threads", "fuse_threads", "fuse_poll_us", "read_timeout_s" (0 = no bound), "fd_holder",
// "fd_holder_grace_s" (0 = for ever), "allow_fail_open", "metrics_address" ("" = off), "registry",
// "cache") over `base`. Unknown keys and wrong types are EINVAL, naming the key.
[[nodiscard]] base::Result<Config> parse_config(std::string_view json_text, Config base = {});
// Parse a JSON object of RegistryOptions keys ("plain_http", "insecure", "ca_files",
// "docker_config", "mirrors": {host: [url...]}, "mirror_headers": {url: {name: value}},
// "connect_timeout_ms",
// "request_timeout_ms", "stall_timeout_ms", "idle_connection_timeout_ms", "retries",
// "max_parallel", "max_bootstrap_bytes") over `base`; mirrors given replace those of their host.
// Unknown keys and wrong types are EINVAL, naming the key.
[[nodiscard]] base::Result<RegistryOptions> parse_registry_options(std::string_view json_text,
                                                                   RegistryOptions base = {});
// The options as a JSON object text (the keys above; canonical: equal options give
// equal texts).
[[nodiscard]] std::string registry_options_json(const RegistryOptions& o);
// The same as a JSON object (the daemon's state file embeds it).
[[nodiscard]] nlohmann::json registry_options_object(const RegistryOptions& o);
// Read and parse a config file; errors name the path.
[[nodiscard]] base::Result<Config> load_config(const std::string& path, Config base = {});

}  // namespace cfnd
