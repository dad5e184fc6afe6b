// SPDX-License-Identifier: Apache-2.0
#include "snapshotter/nydusd_config.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "registry/util.h"

namespace snapshotter {
namespace {

using json = nlohmann::json;

// Nydus' "unlimited" prefetch bandwidth (0) as the daemon's bytes/s (its 0 means "off").
constexpr std::uint64_t kUnlimitedBandwidth = 1ULL << 30;
// The daemon's ranges (daemon/config.cc: parse_registry_options, parse_config). A value
// nydusd takes beyond them is brought into them (and reported) rather than handed on:
// the daemon would refuse its config or every bind. tests/fuzz/fuzz_nydusd_config.cc
// checks that what is handed on is taken.
constexpr std::uint64_t kMaxConnectTimeoutMs = 3600000;
constexpr std::uint64_t kMaxRequestTimeoutMs = 24ULL * 3600000;
constexpr std::uint64_t kMaxRetries = 100;
constexpr std::uint64_t kMinBatch = 128 * 1024;
constexpr std::uint64_t kMaxBatch = 64ULL << 20;
constexpr std::uint64_t kMaxFillThreads = 1024;

class Reader {
 public:
  explicit Reader(NydusdSettings& s) : s_(s) {}

  base::Status type_error(const std::string& key, const char* want) {
    return base::errorf(EINVAL, "nydusd config: {} must be {}", key, want);
  }
  base::Result<bool> boolean(const json& v, const std::string& key) {
    if (!v.is_boolean()) {
      return base::Unexpected(type_error(key, "true or false").error());
    }
    return v.get<bool>();
  }
  base::Result<std::string> string(const json& v, const std::string& key) {
    if (!v.is_string()) {
      return base::Unexpected(type_error(key, "a string").error());
    }
    return v.get<std::string>();
  }
  base::Result<std::uint64_t> count(const json& v, const std::string& key) {
    if (v.is_number_unsigned()) {
      return v.get<std::uint64_t>();
    }
    if (v.is_number_integer() && v.get<std::int64_t>() >= 0) {
      return static_cast<std::uint64_t>(v.get<std::int64_t>());
    }
    return base::Unexpected(type_error(key, "a non-negative integer").error());
  }
  // Seconds (integer or fraction) as milliseconds, at most 2^62 (a larger double would
  // not convert).
  base::Result<std::uint64_t> seconds_ms(const json& v, const std::string& key) {
    if (!v.is_number() || v.get<double>() < 0 || !std::isfinite(v.get<double>())) {
      return base::Unexpected(type_error(key, "a non-negative number of seconds").error());
    }
    const double ms = v.get<double>() * 1000.0 + 0.5;
    constexpr double kCap = 4611686018427387904.0;  // 2^62
    return ms >= kCap ? static_cast<std::uint64_t>(kCap) : static_cast<std::uint64_t>(ms);
  }
  // v brought into [lo, hi], reported when it was not there.
  std::uint64_t within(const std::string& key, std::uint64_t v, std::uint64_t lo,
                       std::uint64_t hi) {
    const std::uint64_t r = v < lo ? lo : (v > hi ? hi : v);
    if (r != v) {
      unsupported(
          key, fmt::format("{} is out of the daemon's range [{}, {}]; {} is used", v, lo, hi, r));
    }
    return r;
  }
  base::Status object(const json& v, const std::string& key) {
    if (!v.is_object()) {
      return type_error(key, "an object");
    }
    return {};
  }
  void unknown(const std::string& key) { s_.unknown_keys.push_back(key); }
  void unsupported(const std::string& key, const std::string& why) {
    s_.unsupported.push_back(key + ": " + why);
  }

  base::Status backend_config(const json& c, const std::string& at) {
    CFN_TRY(object(c, at));
    // The scheme first: a mirror host without one takes it (keys come in name order).
    if (auto it = c.find("scheme"); it != c.end() && it->is_string() && *it == "http") {
      s_.registry.plain_http = true;
    }
    for (const auto& [k, v] : c.items()) {
      const std::string key = at + "." + k;
      if (k == "scheme") {
        CFN_ASSIGN_OR_RETURN(auto scheme, string(v, key));
        if (scheme == "http") {
          s_.registry.plain_http = true;
        } else if (scheme == "https" || scheme.empty()) {
          s_.registry.plain_http = false;
        } else {
          return base::errorf(EINVAL, "nydusd config: {} must be http or https", key);
        }
      } else if (k == "skip_verify") {
        CFN_ASSIGN_OR_RETURN(auto b, boolean(v, key));
        s_.registry.insecure = b;
      } else if (k == "timeout") {
        CFN_ASSIGN_OR_RETURN(auto ms, seconds_ms(v, key));
        if (ms > 0) {
          s_.registry.request_timeout_ms = within(key, ms, 1, kMaxRequestTimeoutMs);
        }
      } else if (k == "connect_timeout") {
        CFN_ASSIGN_OR_RETURN(auto ms, seconds_ms(v, key));
        if (ms > 0) {
          s_.registry.connect_timeout_ms = within(key, ms, 1, kMaxConnectTimeoutMs);
        }
      } else if (k == "retry_limit") {
        CFN_ASSIGN_OR_RETURN(auto n, count(v, key));
        s_.registry.retries = within(key, n, 0, kMaxRetries);
      } else if (k == "auth") {
        CFN_ASSIGN_OR_RETURN(s_.auth, string(v, key));
        // Checked here, as the daemon's docker config reader will (its error would come at
        // every bind, naming a file of ours); the value is never quoted.
        if (!s_.auth.empty()) {
          const auto decoded = registry::internal::base64_decode(s_.auth);
          if (!decoded || decoded->find(':') == std::string::npos) {
            return base::errorf(EINVAL, "nydusd config: {} must be base64 of \"user:password\"",
                                key);
          }
        }
      } else if (k == "registry_token") {
        CFN_ASSIGN_OR_RETURN(auto t, string(v, key));
        if (!t.empty()) {
          unsupported(key,
                      "a pre-fetched bearer token is not used; give auth or a docker config "
                      "($DOCKER_CONFIG)");
        }
      } else if (k == "proxy") {
        CFN_TRY(object(v, key));
        for (const auto& [pk, pv] : v.items()) {
          const std::string pkey = key + "." + pk;
          if (pk == "url") {
            CFN_ASSIGN_OR_RETURN(auto url, string(pv, pkey));
            if (!url.empty()) {
              s_.mirror_urls.push_back(url);
            }
          } else if (pk == "fallback" || pk == "ping_url" || pk == "check_interval" ||
                     pk == "check_pause_elapsed" || pk == "use_http") {
            unsupported(pkey, "the proxy is used as a mirror: tried first, the origin after it");
          } else {
            unknown(pkey);
          }
        }
      } else if (k == "mirrors") {
        if (!v.is_array()) {
          return type_error(key, "an array");
        }
        for (std::size_t i = 0; i < v.size(); ++i) {
          const std::string mkey = key + "[" + std::to_string(i) + "]";
          CFN_TRY(object(v[i], mkey));
          std::string url;
          std::map<std::string, std::string> headers;
          for (const auto& [mk, mv] : v[i].items()) {
            const std::string mkk = mkey + "." + mk;
            if (mk == "host") {
              CFN_ASSIGN_OR_RETURN(auto host, string(mv, mkk));
              if (host.find("://") == std::string::npos) {
                host = (s_.registry.plain_http.value_or(false) ? "http://" : "https://") + host;
              }
              s_.mirror_urls.push_back(host);
              url = host;
            } else if (mk == "headers") {
              CFN_TRY(object(mv, mkk));
              for (const auto& [hk, hv] : mv.items()) {
                CFN_ASSIGN_OR_RETURN(headers[hk], string(hv, mkk + "." + hk));
              }
            } else if (mk == "auth_through") {
              CFN_ASSIGN_OR_RETURN(auto b, boolean(mv, mkk));
              if (b) {
                unsupported(mkk, "credentials are sent to the origin only");
              }
            } else if (mk == "health_check_interval" || mk == "failure_limit" || mk == "ping_url") {
              unsupported(mkk, "mirrors are tried in order on each request");
            } else {
              unknown(mkk);
            }
          }
          if (!headers.empty() && !url.empty()) {
            // Sent on every request to this mirror (the registry client checks them).
            if (!s_.registry.mirror_headers) {
              s_.registry.mirror_headers.emplace();
            }
            (*s_.registry.mirror_headers)[url] = std::move(headers);
          }
        }
      } else if (k == "host" || k == "repo") {
        unsupported(key, "the image reference names the registry and repository");
      } else if (k == "ca_cert_files") {
        if (!v.is_array()) {
          return type_error(key, "an array of strings");
        }
        std::vector<std::string> files;
        for (const auto& f : v) {
          CFN_ASSIGN_OR_RETURN(auto s, string(f, key));
          files.push_back(std::move(s));
        }
        s_.registry.ca_files = std::move(files);
      } else {
        unknown(key);
      }
    }
    return {};
  }

  base::Status prefetch(const json& p, const std::string& at) {
    CFN_TRY(object(p, at));
    bool enable = false;
    std::uint64_t rate = 0;
    for (const auto& [k, v] : p.items()) {
      const std::string key = at + "." + k;
      if (k == "enable") {
        CFN_ASSIGN_OR_RETURN(enable, boolean(v, key));
      } else if (k == "threads_count") {
        CFN_ASSIGN_OR_RETURN(auto n, count(v, key));
        if (n > 0) {
          daemon_["fill_threads"] = within(key, n, 1, kMaxFillThreads);
        }
      } else if (k == "merging_size") {
        // nydusd merges prefetch reads up to this: our prefetch lists' largest read.
        CFN_ASSIGN_OR_RETURN(auto n, count(v, key));
        if (n > 0) {
          daemon_["prefetch_merge_size"] = within(key, n, kMinBatch, kMaxBatch);
        }
      } else if (k == "bandwidth_rate") {
        CFN_ASSIGN_OR_RETURN(rate, count(v, key));
      } else if (k == "prefetch_all") {
        CFN_ASSIGN_OR_RETURN(auto b, boolean(v, key));
        (void)b;
        unsupported(key, "an enabled prefetch reads every blob whole");
      } else {
        unknown(key);
      }
    }
    daemon_["prefetch_bandwidth"] = enable ? (rate > 0 ? rate : kUnlimitedBandwidth) : 0;
    return {};
  }

  base::Status cache_config(const json& c, const std::string& at) {
    CFN_TRY(object(c, at));
    for (const auto& [k, v] : c.items()) {
      const std::string key = at + "." + k;
      if (k == "work_dir") {
        CFN_ASSIGN_OR_RETURN(s_.cache_dir, string(v, key));
      } else {
        unknown(key);
      }
    }
    return {};
  }

  base::Status cache_type(const json& v, const std::string& key) {
    CFN_ASSIGN_OR_RETURN(auto t, string(v, key));
    if (t == "fscache") {
      s_.fs_driver = "fscache";
    } else if (t != "blobcache" && t != "filecache" && t != "") {
      unsupported(key, "\"" + t + "\": blobs are always cached in the daemon's cache dir");
    }
    return {};
  }

  base::Status backend_type(const json& v, const std::string& key) {
    CFN_ASSIGN_OR_RETURN(auto t, string(v, key));
    if (t != "registry") {
      return base::errorf(EINVAL, "nydusd config: {} {:?}: only \"registry\" is supported", key, t);
    }
    return {};
  }

  base::Status v1(const json& j) {
    for (const auto& [k, v] : j.items()) {
      if (k == "device") {
        CFN_TRY(object(v, k));
        for (const auto& [dk, dv] : v.items()) {
          const std::string key = "device." + dk;
          if (dk == "backend") {
            CFN_TRY(object(dv, key));
            for (const auto& [bk, bv] : dv.items()) {
              const std::string bkey = key + "." + bk;
              if (bk == "type") {
                CFN_TRY(backend_type(bv, bkey));
              } else if (bk == "config") {
                CFN_TRY(backend_config(bv, bkey));
              } else {
                unknown(bkey);
              }
            }
          } else if (dk == "cache") {
            CFN_TRY(object(dv, key));
            for (const auto& [ck, cv] : dv.items()) {
              const std::string ckey = key + "." + ck;
              if (ck == "type") {
                CFN_TRY(cache_type(cv, ckey));
              } else if (ck == "config") {
                CFN_TRY(cache_config(cv, ckey));
              } else if (ck == "compressed") {
                CFN_ASSIGN_OR_RETURN(auto b, boolean(cv, ckey));
                if (b) {
                  unsupported(ckey, "blobs are cached uncompressed");
                }
              } else {
                unknown(ckey);
              }
            }
          } else {
            unknown(key);
          }
        }
      } else if (k == "mode") {
        CFN_ASSIGN_OR_RETURN(auto m, string(v, k));
        if (m != "direct" && m != "cached") {
          return base::errorf(EINVAL, "nydusd config: mode {:?} must be direct or cached", m);
        }
        // The kernel serves metadata from the bootstrap either way.
      } else if (k == "digest_validate") {
        CFN_ASSIGN_OR_RETURN(auto b, boolean(v, k));
        if (!b) {
          unsupported(k, "chunk digests are always verified");
        }
      } else if (k == "fs_prefetch") {
        CFN_TRY(prefetch(v, k));
      } else if (k == "amplify_io") {
        // nydusd's read amplification: the daemon's window of an on-demand fill.
        CFN_ASSIGN_OR_RETURN(auto n, count(v, k));
        daemon_["amplify_io"] = within(k, n, 0, kMaxBatch);
      } else if (k == "iostats_files" || k == "enable_xattr" ||
                 k == "latest_read_files" || k == "access_pattern") {
        // FUSE-era RAFS knobs: the kernel serves the file system.
        unsupported(k, "served by the kernel");
      } else {
        unknown(k);
      }
    }
    return {};
  }

  base::Status templ(const json& j) {
    for (const auto& [k, v] : j.items()) {
      if (k == "type") {
        CFN_ASSIGN_OR_RETURN(auto t, string(v, k));
        if (t != "bootstrap") {
          return base::errorf(EINVAL, "nydusd config: type {:?}: only \"bootstrap\" is read", t);
        }
      } else if (k == "domain_id") {
        CFN_ASSIGN_OR_RETURN(s_.domain_id, string(v, k));
      } else if (k == "id" || k == "metadata_path") {
        // Filled per image by the snapshotter.
      } else if (k == "config") {
        CFN_TRY(object(v, k));
        for (const auto& [ck, cv] : v.items()) {
          const std::string key = "config." + ck;
          if (ck == "backend_type") {
            CFN_TRY(backend_type(cv, key));
          } else if (ck == "backend_config") {
            CFN_TRY(backend_config(cv, key));
          } else if (ck == "cache_type") {
            CFN_TRY(cache_type(cv, key));
          } else if (ck == "cache_config") {
            CFN_TRY(cache_config(cv, key));
          } else if (ck == "prefetch_config") {
            CFN_TRY(prefetch(cv, key));
          } else if (ck == "id" || ck == "metadata_path") {
          } else {
            unknown(key);
          }
        }
      } else {
        unknown(k);
      }
    }
    return {};
  }

  json daemon_ = json::object();

 private:
  NydusdSettings& s_;
};

}  // namespace

base::Result<NydusdSettings> translate_nydusd_config(std::string_view json_text) {
  json j = json::parse(json_text, nullptr, false);
  if (j.is_discarded()) {
    return base::make_error(EINVAL, "nydusd config: not JSON");
  }
  if (!j.is_object()) {
    return base::make_error(EINVAL, "nydusd config: not a JSON object");
  }
  NydusdSettings s;
  Reader r(s);
  if (j.contains("type") || j.contains("config")) {
    CFN_TRY(r.templ(j));
  } else {
    CFN_TRY(r.v1(j));
  }
  s.daemon_config_json = r.daemon_.dump();
  return s;
}

base::Result<NydusdSettings> load_nydusd_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return base::errno_error("nydusd config " + path);
  }
  std::stringstream ss;
  ss << in.rdbuf();
  auto s = translate_nydusd_config(ss.str());
  if (!s) {
    return base::Unexpected(s.error().wrap(path));
  }
  return s;
}

std::string docker_config_with_auth(std::string_view host, std::string_view auth) {
  json j;
  j["auths"][std::string(host)]["auth"] = std::string(auth);
  return j.dump();
}

}  // namespace snapshotter
