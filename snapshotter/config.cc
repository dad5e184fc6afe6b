// SPDX-License-Identifier: Apache-2.0
#include "snapshotter/config.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>
#include <toml++/toml.h>

namespace snapshotter {
namespace {

base::Status get_string(const toml::node& n, std::string_view key, std::string& out) {
  if (const auto* s = n.as_string()) {
    out = s->get();
    return {};
  }
  const auto& src = n.source().begin;
  return base::errorf(EINVAL, "{} (line {}, column {}) must be a string", key, src.line,
                      src.column);
}

base::Status get_bool(const toml::node& n, std::string_view key, bool& out) {
  if (const auto* b = n.as_boolean()) {
    out = b->get();
    return {};
  }
  const auto& src = n.source().begin;
  return base::errorf(EINVAL, "{} (line {}, column {}) must be true or false", key, src.line,
                      src.column);
}

}  // namespace

base::Status apply_toml(std::string_view text, std::string_view source, Options& o) {
  toml::table tbl;
  try {
    tbl = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    return base::errorf(EINVAL, "{}:{}:{}: {}", source, e.source().begin.line,
                        e.source().begin.column, e.description());
  }
  auto wrap = [&](base::Status st) -> base::Status {
    if (!st) {
      return base::Unexpected(st.error().wrap(source));
    }
    return {};
  };
  for (auto&& [k, v] : tbl) {
    std::string key(k.str());
    if (key == "root") {
      CFN_TRY(wrap(get_string(v, key, o.root)));
    } else if (key == "address") {
      CFN_TRY(wrap(get_string(v, key, o.address)));
    } else if (key == "version") {
      // nydus-snapshotter's config version; there is one.
    } else if (key == "log" || key == "daemon" || key == "metrics" || key == "experimental" ||
               key == "snapshot") {
      const auto* sub = v.as_table();
      if (sub == nullptr) {
        return base::errorf(EINVAL, "{}: [{}] must be a table", source, key);
      }
      for (auto&& [sk, sv] : *sub) {
        std::string path = key + "." + std::string(sk.str());
        if (path == "log.level") {
          CFN_TRY(wrap(get_string(sv, path, o.log_level)));
        } else if (path == "log.log_to_stdout") {
          CFN_TRY(wrap(get_bool(sv, path, o.log_to_stdout)));
        } else if (path == "daemon.nydusd_path") {
          CFN_TRY(wrap(get_string(sv, path, o.nydusd_path)));
        } else if (path == "daemon.nydusimage_path") {
          CFN_TRY(wrap(get_string(sv, path, o.nydusimg_path)));
        } else if (path == "daemon.nydusd_config") {
          CFN_TRY(wrap(get_string(sv, path, o.nydusd_config)));
        } else if (path == "daemon.address") {
          CFN_TRY(wrap(get_string(sv, path, o.daemon_address)));
        } else if (path == "daemon.fs_driver") {
          CFN_TRY(wrap(get_string(sv, path, o.fs_driver)));
        } else if (path == "daemon.domain_id") {
          CFN_TRY(wrap(get_string(sv, path, o.domain_id)));
        } else if (path == "metrics.address") {
          CFN_TRY(wrap(get_string(sv, path, o.metrics_address)));
        } else if (path == "experimental.enable_stargz") {
          CFN_TRY(wrap(get_bool(sv, path, o.enable_stargz)));
        } else if (path == "snapshot.prefetch_at_pull") {
          CFN_TRY(wrap(get_bool(sv, path, o.prefetch_at_pull)));
        } else {
          o.unknown_keys.push_back(path);
        }
      }
    } else {
      o.unknown_keys.push_back(key);
    }
  }
  return {};
}

base::Status load_toml_file(const std::string& path, Options& o) {
  std::ifstream in(path);
  if (!in) {
    return base::errno_error("opening config " + path);
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return apply_toml(ss.str(), path, o);
}

void apply_overrides(const Overrides& ov, Options& o) {
  auto set = [](const std::optional<std::string>& v, std::string& out) {
    if (v) {
      out = *v;
    }
  };
  set(ov.address, o.address);
  set(ov.root, o.root);
  set(ov.nydusd_config, o.nydusd_config);
  set(ov.nydusd_path, o.nydusd_path);
  set(ov.nydusimg_path, o.nydusimg_path);
  set(ov.log_level, o.log_level);
  set(ov.daemon_address, o.daemon_address);
  set(ov.fs_driver, o.fs_driver);
  set(ov.metrics_address, o.metrics_address);
  if (ov.log_to_stdout) {
    o.log_to_stdout = *ov.log_to_stdout;
  }
  if (ov.enable_stargz) {
    o.enable_stargz = *ov.enable_stargz;
  }
}

base::Status check_fs_driver(std::string_view driver) {
  for (std::string_view d : {"fscache", "fanotify", "fusedev", "auto"}) {
    if (driver == d) {
      return {};
    }
  }
  return base::errorf(EINVAL, "fs driver {:?}: use fscache, fanotify, fusedev or auto", driver);
}

std::string frontend_of(std::string_view driver) {
  if (driver == "fscache") {
    return "cachefiles";
  }
  if (driver == "fusedev") {
    return "fuse";
  }
  if (driver == "fanotify") {
    return "fanotify";
  }
  return "";
}

base::Status check_log_level(std::string_view level) {
  for (std::string_view l : {"trace", "debug", "info", "warn", "error", "off"}) {
    if (level == l) {
      return {};
    }
  }
  return base::errorf(EINVAL, "log level {:?}: use trace, debug, info, warn, error or off", level);
}

base::Status check_nydusd_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return base::errno_error("nydusd config " + path);
  }
  auto j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded()) {
    return base::errorf(EINVAL, "nydusd config {} is not valid JSON", path);
  }
  return {};
}

}  // namespace snapshotter
