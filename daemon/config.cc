// SPDX-License-Identifier: Apache-2.0
#include "daemon/config.h"

#include <algorithm>
#include <span>

#include <nlohmann/json.hpp>

#include "base/file.h"

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

base::Status get_string(const nlohmann::json& j, const char* key, std::string& out) {
  if (!j.contains(key)) {
    return {};
  }
  if (!j[key].is_string() || j[key].get_ref<const std::string&>().empty()) {
    return base::errorf(EINVAL, "config: '{}' must be a non-empty string", key);
  }
  out = j[key].get<std::string>();
  return {};
}

template <typename T>
base::Status get_uint(const nlohmann::json& j, const char* key, T& out, std::uint64_t min,
                      std::uint64_t max) {
  if (!j.contains(key)) {
    return {};
  }
  if (!j[key].is_number_unsigned()) {
    return base::errorf(EINVAL, "config: '{}' must be an unsigned integer", key);
  }
  auto v = j[key].get<std::uint64_t>();
  if (v < min || v > max) {
    return base::errorf(EINVAL, "config: '{}' = {} outside [{}, {}]", key, v, min, max);
  }
  out = static_cast<T>(v);
  return {};
}

base::Status get_bool(const nlohmann::json& j, const char* key, bool& out) {
  if (!j.contains(key)) {
    return {};
  }
  if (!j[key].is_boolean()) {
    return base::errorf(EINVAL, "config: '{}' must be true or false", key);
  }
  out = j[key].get<bool>();
  return {};
}

base::Status get_strings(const nlohmann::json& j, const char* key, std::vector<std::string>& out) {
  if (!j.is_array()) {
    return base::errorf(EINVAL, "config: '{}' must be an array of strings", key);
  }
  std::vector<std::string> v;
  for (const auto& e : j) {
    if (!e.is_string() || e.get_ref<const std::string&>().empty()) {
      return base::errorf(EINVAL, "config: '{}' must be an array of non-empty strings", key);
    }
    v.push_back(e.get<std::string>());
  }
  out = std::move(v);
  return {};
}

base::Status check_keys(const nlohmann::json& j, std::span<const std::string_view> keys,
                        std::string_view where) {
  for (const auto& [key, value] : j.items()) {
    if (std::find(keys.begin(), keys.end(), key) == keys.end()) {
      return base::errorf(EINVAL, "config: unknown key '{}{}'", where, key);
    }
  }
  return {};
}

base::Status parse_registry(const nlohmann::json& j, RegistryOptions& o) {
  if (!j.is_object()) {
    return base::make_error(EINVAL, "config: 'registry' must be an object");
  }
  static constexpr std::string_view kKeys[] = {
      "plain_http", "insecure",           "ca_files",           "docker_config",
      "mirrors",    "connect_timeout_ms", "request_timeout_ms", "stall_timeout_ms",
      "retries",    "max_parallel",       "max_bootstrap_bytes"};
  CFN_TRY(check_keys(j, kKeys, "registry."));
  CFN_TRY(get_bool(j, "plain_http", o.plain_http));
  CFN_TRY(get_bool(j, "insecure", o.insecure));
  if (j.contains("ca_files")) {
    CFN_TRY(get_strings(j["ca_files"], "ca_files", o.ca_files));
  }
  if (j.contains("docker_config")) {
    if (!j["docker_config"].is_string()) {
      return base::make_error(EINVAL, "config: 'docker_config' must be a string");
    }
    o.docker_config = j["docker_config"].get<std::string>();
  }
  if (j.contains("mirrors")) {
    const auto& m = j["mirrors"];
    if (!m.is_object()) {
      return base::make_error(EINVAL,
                              "config: 'mirrors' must be an object of host -> [mirror URL]");
    }
    for (const auto& [host, urls] : m.items()) {
      CFN_TRY(get_strings(urls, "mirrors", o.mirrors[host]));
    }
  }
  CFN_TRY(get_uint(j, "connect_timeout_ms", o.connect_timeout_ms, 1, 3600000));
  CFN_TRY(get_uint(j, "request_timeout_ms", o.request_timeout_ms, 1, 24ULL * 3600000));
  CFN_TRY(get_uint(j, "stall_timeout_ms", o.stall_timeout_ms, 1, 3600000));
  CFN_TRY(get_uint(j, "retries", o.retries, 0, 100));
  CFN_TRY(get_uint(j, "max_parallel", o.max_parallel, 1, 256));
  CFN_TRY(get_uint(j, "max_bootstrap_bytes", o.max_bootstrap_bytes, 4096, 16ULL << 30));
  return {};
}

}  // namespace

base::Result<RegistryOptions> parse_registry_options(std::string_view json_text,
                                                     RegistryOptions base) {
  auto j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return base::make_error(EINVAL, "registry options: not JSON");
  }
  CFN_TRY(parse_registry(j, base));
  return base;
}

std::string registry_options_json(const RegistryOptions& o) {
  nlohmann::json j = {{"plain_http", o.plain_http},
                      {"insecure", o.insecure},
                      {"ca_files", o.ca_files},
                      {"docker_config", o.docker_config},
                      {"mirrors", o.mirrors},
                      {"connect_timeout_ms", o.connect_timeout_ms},
                      {"request_timeout_ms", o.request_timeout_ms},
                      {"stall_timeout_ms", o.stall_timeout_ms},
                      {"retries", o.retries},
                      {"max_parallel", o.max_parallel},
                      {"max_bootstrap_bytes", o.max_bootstrap_bytes}};
  return j.dump();  // nlohmann orders object keys: canonical
}

base::Result<Config> parse_config(std::string_view json_text, Config c) {
  auto j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return base::make_error(EINVAL, "config: not a JSON object");
  }
  static constexpr std::string_view kKeys[] = {
      "frontend",           "cache_dir",      "socket",       "log_level",     "batch_size",
      "prefetch_bandwidth", "fill_threads",   "fuse_threads", "fd_holder",     "fd_holder_grace_s",
      "registry",           "read_timeout_s", "fuse_poll_us", "file_readahead"};
  for (const auto& [key, value] : j.items()) {
    bool known = false;
    for (auto k : kKeys) {
      known = known || key == k;
    }
    if (!known) {
      return base::errorf(EINVAL, "config: unknown key '{}'", key);
    }
  }
  std::string frontend;
  CFN_TRY(get_string(j, "frontend", frontend));
  if (!frontend.empty()) {
    CFN_ASSIGN_OR_RETURN(c.frontend, parse_frontend(frontend));
  }
  CFN_TRY(get_string(j, "cache_dir", c.cache_dir));
  CFN_TRY(get_string(j, "socket", c.socket_path));
  CFN_TRY(get_string(j, "log_level", c.log_level));
  CFN_TRY(get_uint(j, "batch_size", c.batch_size, 128 * 1024, 64ULL << 20));
  CFN_TRY(get_uint(j, "prefetch_bandwidth", c.prefetch_bandwidth, 0, UINT64_MAX));
  CFN_TRY(get_uint(j, "file_readahead", c.file_readahead, 0, 1ULL << 30));
  CFN_TRY(get_uint(j, "fill_threads", c.fill_threads, 1, 1024));
  CFN_TRY(get_uint(j, "fuse_threads", c.fuse_threads, 1, 1024));
  CFN_TRY(get_uint(j, "fuse_poll_us", c.fuse_poll_us, 0, 10000));
  CFN_TRY(get_uint(j, "read_timeout_s", c.read_timeout_s, 0, 3600));
  CFN_TRY(get_bool(j, "fd_holder", c.fd_holder));
  CFN_TRY(get_uint(j, "fd_holder_grace_s", c.fd_holder_grace_s, 0, 365U * 24 * 3600));
  if (j.contains("registry")) {
    CFN_TRY(parse_registry(j["registry"], c.registry));
  }
  return c;
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
