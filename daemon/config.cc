// SPDX-License-Identifier: Apache-2.0
#include "daemon/config.h"

#include <nlohmann/json.hpp>

#include "base/file.h"
#include "base/json_fields.h"
#include "daemon/cache/space.h"

namespace cfnd {

base::Result<Frontend> parse_frontend(std::string_view name) {
  if (name == "auto") {
    return Frontend::kAuto;
  }
  if (name == "cachefiles") {
    return Frontend::kCachefiles;
  }
  if (name == "fanotify") {
    return Frontend::kFanotify;
  }
  if (name == "fuse") {
    return Frontend::kFuse;
  }
  return base::errorf(EINVAL, "unknown front end '{}' (auto, cachefiles, fanotify, fuse)", name);
}

std::string_view frontend_name(Frontend f) {
  switch (f) {
    case Frontend::kAuto:
      return "auto";
    case Frontend::kCachefiles:
      return "cachefiles";
    case Frontend::kFanotify:
      return "fanotify";
    case Frontend::kFuse:
      return "fuse";
  }
  return "?";
}

namespace {

constexpr base::StringRule kNonEmpty{.non_empty = true};

base::Status parse_registry(const nlohmann::json& j, RegistryOptions& o) {
  if (!j.is_object()) {
    return base::make_error(EINVAL, "config: \"registry\" must be an object");
  }
  static constexpr std::string_view kKeys[] = {"plain_http",
                                               "insecure",
                                               "ca_files",
                                               "docker_config",
                                               "mirrors",
                                               "mirror_headers",
                                               "connect_timeout_ms",
                                               "request_timeout_ms",
                                               "stall_timeout_ms",
                                               "retries",
                                               "max_parallel",
                                               "max_bootstrap_bytes",
                                               "idle_connection_timeout_ms"};
  const base::JsonFields f(j, "config: registry");
  CFN_TRY(f.only_keys(kKeys));
  CFN_TRY(f.read("plain_http", o.plain_http));
  CFN_TRY(f.read("insecure", o.insecure));
  CFN_TRY(f.read("ca_files", o.ca_files, kNonEmpty));
  CFN_TRY(f.read("docker_config", o.docker_config));
  if (const nlohmann::json* m = f.find("mirrors")) {
    if (!m->is_object()) {
      return f.error("\"mirrors\" must be an object of host -> [mirror URL]");
    }
    for (const auto& [host, urls] : m->items()) {
      CFN_ASSIGN_OR_RETURN(o.mirrors[host],
                           base::json_strings(urls, "config: registry", "\"mirrors\"", kNonEmpty));
    }
  }
  if (const nlohmann::json* m = f.find("mirror_headers")) {
    if (!m->is_object()) {
      return f.error("\"mirror_headers\" must be an object of mirror URL -> {name: value}");
    }
    const base::JsonFields fm(*m, "config: registry: mirror_headers");
    for (const auto& [url, h] : m->items()) {
      CFN_ASSIGN_OR_RETURN(o.mirror_headers[url], fm.string_map(url));
    }
  }
  CFN_TRY(f.read("connect_timeout_ms", o.connect_timeout_ms, 1, 3600000));
  CFN_TRY(f.read("request_timeout_ms", o.request_timeout_ms, 1, 24ULL * 3600000));
  CFN_TRY(f.read("stall_timeout_ms", o.stall_timeout_ms, 1, 3600000));
  CFN_TRY(f.read("idle_connection_timeout_ms", o.idle_connection_timeout_ms, 0, 24ULL * 3600000));
  CFN_TRY(f.read("retries", o.retries, 0, 100));
  CFN_TRY(f.read("max_parallel", o.max_parallel, 1, 256));
  CFN_TRY(f.read("max_bootstrap_bytes", o.max_bootstrap_bytes, 4096, 16ULL << 30));
  return {};
}

base::Status parse_cache(const nlohmann::json& j, Config& c) {
  if (!j.is_object()) {
    return base::make_error(EINVAL, "config: \"cache\" must be an object");
  }
  static constexpr std::string_view kKeys[] = {"limit", "high_watermark", "low_watermark",
                                               "gc_interval_s", "orphan_grace_s"};
  const base::JsonFields f(j, "config: cache");
  CFN_TRY(f.only_keys(kKeys));
  if (const nlohmann::json* l = f.find("limit")) {
    if (l->is_number_unsigned()) {
      c.cache_limit = l->get<std::uint64_t>();
      c.cache_limit_percent = 0;
    } else if (l->is_string()) {
      auto st = set_cache_limit(c, l->get<std::string>());
      if (!st) {
        return base::Unexpected(st.error().wrap("config: cache"));
      }
    } else {
      return f.error("\"limit\" must be a byte count or a text such as \"10G\" or \"20%\"");
    }
  }
  CFN_TRY(f.read("high_watermark", c.cache_high_watermark, 1, 100));
  CFN_TRY(f.read("low_watermark", c.cache_low_watermark, 1, 100));
  if (c.cache_low_watermark > c.cache_high_watermark) {
    return f.error(fmt::format("low_watermark {} is above high_watermark {}", c.cache_low_watermark,
                               c.cache_high_watermark));
  }
  CFN_TRY(f.read("gc_interval_s", c.cache_gc_interval_s, 1, 24U * 3600));
  CFN_TRY(f.read("orphan_grace_s", c.cache_orphan_grace_s, 0, 365U * 24 * 3600));
  return {};
}

}  // namespace

base::Status set_cache_limit(Config& config, std::string_view text) {
  CFN_ASSIGN_OR_RETURN(const auto spec, cache::parse_limit(text));
  config.cache_limit = spec.bytes;
  config.cache_limit_percent = spec.percent;
  return {};
}

base::Result<RegistryOptions> parse_registry_options(std::string_view json_text,
                                                     RegistryOptions base) {
  auto j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return base::make_error(EINVAL, "registry options: not JSON");
  }
  CFN_TRY(parse_registry(j, base));
  return base;
}

nlohmann::json registry_options_object(const RegistryOptions& o) {
  return {{"plain_http", o.plain_http},
          {"insecure", o.insecure},
          {"ca_files", o.ca_files},
          {"docker_config", o.docker_config},
          {"mirrors", o.mirrors},
          {"mirror_headers", o.mirror_headers},
          {"connect_timeout_ms", o.connect_timeout_ms},
          {"request_timeout_ms", o.request_timeout_ms},
          {"stall_timeout_ms", o.stall_timeout_ms},
          {"idle_connection_timeout_ms", o.idle_connection_timeout_ms},
          {"retries", o.retries},
          {"max_parallel", o.max_parallel},
          {"max_bootstrap_bytes", o.max_bootstrap_bytes}};
}

std::string registry_options_json(const RegistryOptions& o) {
  const nlohmann::json j = registry_options_object(o);
  // nlohmann orders object keys: canonical. Its strings came from JSON, TOML or checked
  // command-line options (UTF-8); should one not be, it gets U+FFFD instead of throwing.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

base::Result<Config> parse_config(std::string_view json_text, Config c) {
  CFN_ASSIGN_OR_RETURN(const auto j, base::parse_json_object(json_text, "config"));
  static constexpr std::string_view kKeys[] = {"frontend",
                                               "cache_dir",
                                               "socket",
                                               "log_level",
                                               "batch_size",
                                               "prefetch_bandwidth",
                                               "fill_threads",
                                               "fuse_threads",
                                               "fd_holder",
                                               "fd_holder_grace_s",
                                               "allow_fail_open",
                                               "registry",
                                               "read_timeout_s",
                                               "fuse_poll_us",
                                               "file_readahead",
                                               "cache",
                                               "metrics_address",
                                               "amplify_io",
                                               "prefetch_merge_size"};
  const base::JsonFields f(j, "config");
  CFN_TRY(f.only_keys(kKeys));
  CFN_ASSIGN_OR_RETURN(const auto frontend, f.opt_string("frontend", kNonEmpty));
  if (frontend) {
    CFN_ASSIGN_OR_RETURN(c.frontend, parse_frontend(*frontend));
  }
  CFN_TRY(f.read("cache_dir", c.cache_dir, kNonEmpty));
  CFN_TRY(f.read("socket", c.socket_path, kNonEmpty));
  CFN_TRY(f.read("log_level", c.log_level, kNonEmpty));
  if (auto st = check_log_level(c.log_level); !st) {
    return base::Unexpected(st.error().wrap("config: \"log_level\""));
  }
  CFN_TRY(f.read("batch_size", c.batch_size, 128 * 1024, 64ULL << 20));
  CFN_TRY(f.read("amplify_io", c.amplify_io, 0, 64ULL << 20));
  CFN_TRY(f.read("prefetch_bandwidth", c.prefetch_bandwidth, 0, UINT64_MAX));
  CFN_TRY(f.read("prefetch_merge_size", c.prefetch_merge_size, 0, 64ULL << 20));
  CFN_TRY(f.read("file_readahead", c.file_readahead, 0, 1ULL << 30));
  CFN_TRY(f.read("fill_threads", c.fill_threads, 1, 1024));
  CFN_TRY(f.read("fuse_threads", c.fuse_threads, 1, 1024));
  CFN_TRY(f.read("fuse_poll_us", c.fuse_poll_us, 0, 10000));
  CFN_TRY(f.read("read_timeout_s", c.read_timeout_s, 0, 3600));
  CFN_TRY(f.read("fd_holder", c.fd_holder));
  CFN_TRY(f.read("allow_fail_open", c.allow_fail_open));
  CFN_TRY(f.read("fd_holder_grace_s", c.fd_holder_grace_s, 0, 365U * 24 * 3600));
  CFN_TRY(f.read("metrics_address", c.metrics_address));
  if (const nlohmann::json* r = f.find("registry")) {
    CFN_TRY(parse_registry(*r, c.registry));
  }
  if (const nlohmann::json* k = f.find("cache")) {
    CFN_TRY(parse_cache(*k, c));
  }
  return c;
}

base::Status check_log_level(std::string_view level) {
  for (std::string_view l : {"trace", "debug", "info", "warn", "error", "off"}) {
    if (level == l) {
      return {};
    }
  }
  return base::errorf(EINVAL, "log level '{}': not one of trace, debug, info, warn, error, off",
                      level);
}

std::string fd_holder_socket(const std::string& socket_path) {
  return socket_path + ".fds";
}

base::Result<Config> load_config(const std::string& path, Config base) {
  CFN_ASSIGN_OR_RETURN(auto bytes, base::read_file(path));
  auto r = parse_config(base::as_chars(bytes), std::move(base));
  if (!r) {
    return base::Unexpected(r.error().wrap(path));
  }
  return r;
}

}  // namespace cfnd
