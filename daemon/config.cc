// SPDX-License-Identifier: Apache-2.0
#include "daemon/config.h"

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

}  // namespace

base::Result<Config> parse_config(std::string_view json_text, Config c) {
  auto j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return base::make_error(EINVAL, "config: not a JSON object");
  }
  static constexpr std::string_view kKeys[] = {"frontend",     "cache_dir",   "socket",
                                               "log_level",    "batch_size",  "prefetch_bandwidth",
                                               "fill_threads", "fuse_threads"};
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
  CFN_TRY(get_uint(j, "fill_threads", c.fill_threads, 1, 1024));
  CFN_TRY(get_uint(j, "fuse_threads", c.fuse_threads, 1, 1024));
  return c;
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
