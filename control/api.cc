// SPDX-License-Identifier: Apache-2.0
#include "control/api.h"

#include <cerrno>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/bytes.h"
#include "base/json_fields.h"
#include "base/prometheus.h"

namespace control {
namespace {

using nlohmann::json;

// An answer's text. Strings that are not UTF-8 (an error quoting bytes a registry sent; file
// names in `accessed` are sent losslessly instead, see files_to_json) get U+FFFD where they break:
// nlohmann's default would throw, and an exception out of an answer ends the daemon.
std::string text_of(const json& j, int indent = -1) {
  return j.dump(indent, ' ', false, json::error_handler_t::replace);
}

// Members are read through base::JsonFields (the one helper set); only numbers that
// may be fractional (latencies) are read here.
base::Status read_number(const base::JsonFields& f, const char* key, double& out) {
  const json* v = f.find(key);
  if (v == nullptr) {
    return {};
  }
  if (!v->is_number()) {
    return f.error(fmt::format("\"{}\" must be a number", key));
  }
  out = v->get<double>();
  return {};
}

template <typename T>
base::Status read_opt(const base::JsonFields& f, const char* key, std::optional<T>& out) {
  if constexpr (std::is_same_v<T, bool>) {
    CFN_ASSIGN_OR_RETURN(out, f.opt_bool(key));
  } else if constexpr (std::is_same_v<T, std::string>) {
    CFN_ASSIGN_OR_RETURN(out, f.opt_string(key));
  } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    CFN_ASSIGN_OR_RETURN(out, f.opt_strings(key));
  } else {
    static_assert(std::is_same_v<T, std::uint64_t>);
    CFN_ASSIGN_OR_RETURN(out, f.opt_uint(key));
  }
  return {};
}

// The JSON object of an answer text; a failure answer is its error.
base::Result<json> answer_object(std::string_view text) {
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("ok") || !j["ok"].is_boolean()) {
    return base::make_error(EPROTO, "control: the daemon's answer is not a JSON answer object");
  }
  if (!j["ok"].get<bool>()) {
    const base::JsonFields f(j, "");
    std::uint64_t code = EIO;
    std::string message = "(no error text)";
    (void)f.read(std::string_view("errno"), code, 1, 4095);
    (void)f.read("error", message);
    return base::make_error(static_cast<int>(code), std::move(message));
  }
  return j;
}

base::Status as_proto(base::Status st) {
  if (!st) {
    return base::make_error(EPROTO, "control: bad answer: " + st.error().message);
  }
  return {};
}

json overrides_json(const RegistryOverrides& o) {
  json j = json::object();
  auto put = [&](const char* key, const auto& v) {
    if (v) {
      j[key] = *v;
    }
  };
  put("plain_http", o.plain_http);
  put("insecure", o.insecure);
  put("ca_files", o.ca_files);
  put("docker_config", o.docker_config);
  put("mirrors", o.mirrors);
  put("mirror_headers", o.mirror_headers);
  put("connect_timeout_ms", o.connect_timeout_ms);
  put("request_timeout_ms", o.request_timeout_ms);
  put("stall_timeout_ms", o.stall_timeout_ms);
  put("retries", o.retries);
  put("max_parallel", o.max_parallel);
  put("max_bootstrap_bytes", o.max_bootstrap_bytes);
  return j;
}

base::Result<RegistryOverrides> overrides_from(const json& j) {
  if (!j.is_object()) {
    return base::make_error(EINVAL, "\"registry\" must be an object");
  }
  const base::JsonFields f(j, "registry");
  static constexpr std::string_view kKeys[] = {
      "plain_http",       "insecure",       "ca_files",           "docker_config",
      "mirrors",          "mirror_headers", "connect_timeout_ms", "request_timeout_ms",
      "stall_timeout_ms", "retries",        "max_parallel",       "max_bootstrap_bytes"};
  CFN_TRY(f.only_keys(kKeys));
  RegistryOverrides o;
  CFN_TRY(read_opt(f, "plain_http", o.plain_http));
  CFN_TRY(read_opt(f, "insecure", o.insecure));
  CFN_TRY(read_opt(f, "ca_files", o.ca_files));
  CFN_TRY(read_opt(f, "docker_config", o.docker_config));
  if (const json* m = f.find("mirrors")) {
    if (!m->is_object()) {
      return f.error("\"mirrors\" must be an object of host -> [URL]");
    }
    std::map<std::string, std::vector<std::string>> mirrors;
    for (const auto& [host, urls] : m->items()) {
      CFN_ASSIGN_OR_RETURN(mirrors[host], base::json_strings(urls, "registry", "mirrors." + host));
    }
    o.mirrors = std::move(mirrors);
  }
  if (const json* m = f.find("mirror_headers")) {
    if (!m->is_object()) {
      return f.error("\"mirror_headers\" must be an object of mirror URL -> {name: value}");
    }
    const base::JsonFields fm(*m, "registry: mirror_headers");
    std::map<std::string, std::map<std::string, std::string>> headers;
    for (const auto& [url, h] : m->items()) {
      CFN_ASSIGN_OR_RETURN(headers[url], fm.string_map(url));
    }
    o.mirror_headers = std::move(headers);
  }
  CFN_TRY(read_opt(f, "connect_timeout_ms", o.connect_timeout_ms));
  CFN_TRY(read_opt(f, "request_timeout_ms", o.request_timeout_ms));
  CFN_TRY(read_opt(f, "stall_timeout_ms", o.stall_timeout_ms));
  CFN_TRY(read_opt(f, "retries", o.retries));
  CFN_TRY(read_opt(f, "max_parallel", o.max_parallel));
  CFN_TRY(read_opt(f, "max_bootstrap_bytes", o.max_bootstrap_bytes));
  return o;
}

json request_json(const Request& r) {
  return std::visit(
      [](const auto& q) -> json {
        using T = std::decay_t<decltype(q)>;
        if constexpr (std::is_same_v<T, PingRequest>) {
          return {{"op", "ping"}};
        } else if constexpr (std::is_same_v<T, BindRequest>) {
          json j{{"op", "bind"}, {"mountpoint", q.mountpoint}};
          auto put = [&](const char* key, const std::string& v) {
            if (!v.empty()) {
              j[key] = v;
            }
          };
          put("reference", q.reference);
          put("bootstrap", q.bootstrap);
          put("blob_dir", q.blob_dir);
          put("frontend", q.frontend);
          put("fsid", q.fsid);
          put("domain_id", q.domain_id);
          if (q.registry) {
            j["registry"] = overrides_json(*q.registry);
          }
          return j;
        } else if constexpr (std::is_same_v<T, UnbindRequest>) {
          return {{"op", "unbind"}, {"mountpoint", q.mountpoint}, {"force", q.force}};
        } else if constexpr (std::is_same_v<T, ListRequest>) {
          return {{"op", "list"}};
        } else if constexpr (std::is_same_v<T, AccessedRequest>) {
          return {{"op", "accessed"}, {"mountpoint", q.mountpoint}};
        } else if constexpr (std::is_same_v<T, CacheLsRequest>) {
          return {{"op", "cache_ls"}};
        } else if constexpr (std::is_same_v<T, CacheGcRequest>) {
          return {{"op", "cache_gc"}, {"dry_run", q.dry_run}};
        } else if constexpr (std::is_same_v<T, CacheRmRequest>) {
          return {{"op", "cache_rm"}, {"id", q.id}};
        } else if constexpr (std::is_same_v<T, StatusRequest>) {
          return {{"op", "status"}};
        } else if constexpr (std::is_same_v<T, StopRequest>) {
          return {{"op", "stop"}};
        } else if constexpr (std::is_same_v<T, PrefetchRequest>) {
          json j{{"op", "prefetch"}, {"reference", q.reference}, {"bootstrap", q.bootstrap}};
          if (q.registry) {
            j["registry"] = overrides_json(*q.registry);
          }
          return j;
        } else {
          static_assert(std::is_same_v<T, MetricsRequest>);
          json j{{"op", "metrics"}};
          if (q.prometheus) {
            j["format"] = "prometheus";
          }
          return j;
        }
      },
      r);
}

json blob_json(const BlobInfo& b) {
  return {{"id", b.id},
          {"cache_file", b.cache_file},
          {"size", b.size},
          {"compressed_size", b.compressed_size},
          {"ready_chunks", b.ready_chunks},
          {"chunk_count", b.chunk_count}};
}

json image_json(const ImageInfo& i) {
  json blobs = json::array();
  for (const auto& b : i.blobs) {
    blobs.push_back(blob_json(b));
  }
  json out{{"mountpoint", i.mountpoint},
           {"bootstrap", i.bootstrap},
           {"frontend", i.frontend},
           {"backend", i.backend},
           {"blobs", blobs}};
  if (!i.fsid.empty()) {
    out["fsid"] = i.fsid;
    out["domain_id"] = i.domain_id;
  }
  if (!i.reference.empty()) {
    out["reference"] = i.reference;
    out["manifest_digest"] = i.manifest_digest;
  } else {
    out["blob_dir"] = i.blob_dir;
  }
  return out;
}

base::Result<ImageInfo> image_from(const json& j) {
  if (!j.is_object()) {
    return base::make_error(EINVAL, "an image must be an object");
  }
  const base::JsonFields f(j, "image");
  ImageInfo i;
  CFN_ASSIGN_OR_RETURN(i.mountpoint, f.string("mountpoint"));
  CFN_TRY(f.read("bootstrap", i.bootstrap));
  CFN_TRY(f.read("frontend", i.frontend));
  CFN_TRY(f.read("backend", i.backend));
  CFN_TRY(f.read("fsid", i.fsid));
  CFN_TRY(f.read("domain_id", i.domain_id));
  CFN_TRY(f.read("reference", i.reference));
  CFN_TRY(f.read("manifest_digest", i.manifest_digest));
  CFN_TRY(f.read("blob_dir", i.blob_dir));
  if (const json* blobs = f.find("blobs")) {
    if (!blobs->is_array()) {
      return f.error("\"blobs\" must be an array");
    }
    for (const auto& b : *blobs) {
      if (!b.is_object()) {
        return f.error("a blob must be an object");
      }
      const base::JsonFields bf(b, "blob");
      BlobInfo bi;
      CFN_TRY(bf.read("id", bi.id));
      CFN_TRY(bf.read("cache_file", bi.cache_file));
      CFN_TRY(bf.read("size", bi.size, 0, UINT64_MAX));
      CFN_TRY(bf.read("compressed_size", bi.compressed_size, 0, UINT64_MAX));
      CFN_TRY(bf.read("ready_chunks", bi.ready_chunks, 0, UINT64_MAX));
      CFN_TRY(bf.read("chunk_count", bi.chunk_count, 0, UINT64_MAX));
      i.blobs.push_back(std::move(bi));
    }
  }
  return i;
}

json latency_json(const LatencySummary& l) {
  return {{"count", l.count}, {"mean", l.mean}, {"p50", l.p50}, {"p99", l.p99}};
}

base::Status latency_from(const base::JsonFields& f, const char* key, LatencySummary& l) {
  const json* v = f.find(key);
  if (v == nullptr) {
    return {};
  }
  if (!v->is_object()) {
    return f.error(fmt::format("\"{}\" must be an object", key));
  }
  const base::JsonFields lf(*v, key);
  CFN_TRY(lf.read("count", l.count, 0, UINT64_MAX));
  CFN_TRY(read_number(lf, "mean", l.mean));
  CFN_TRY(read_number(lf, "p50", l.p50));
  CFN_TRY(read_number(lf, "p99", l.p99));
  return {};
}

json metrics_json(const Metrics& m) {
  return {{"backend_bytes", m.backend_bytes},
          {"backend_requests", m.backend_requests},
          {"fill_requests", m.fill_requests},
          {"hits", m.hits},
          {"misses", m.misses},
          {"verify_failures", m.verify_failures},
          {"refetches", m.refetches},
          {"refetch_successes", m.refetch_successes},
          {"blob_refetches", m.blob_refetches},
          {"blob_refetch_successes", m.blob_refetch_successes},
          {"prefetch_bytes", m.prefetch_bytes},
          {"prefetch_list_bytes", m.prefetch_list_bytes},
          {"readahead_bytes", m.readahead_bytes},
          {"estargz_early_held_bytes", m.estargz_early_held_bytes},
          {"estargz_early_fetched_bytes", m.estargz_early_fetched_bytes},
          {"estargz_early_served_bytes", m.estargz_early_served_bytes},
          {"ready_chunks", m.ready_chunks},
          {"chunk_count", m.chunk_count},
          {"fanotify_allowed", m.fanotify_allowed},
          {"fanotify_denied", m.fanotify_denied},
          {"fanotify_marked_blobs", m.fanotify_marked_blobs},
          {"fanotify_marks_removed", m.fanotify_marks_removed},
          {"fanotify_lingering_images", m.fanotify_lingering_images},
          {"cachefiles_reads", m.cachefiles_reads},
          {"cachefiles_read_failures", m.cachefiles_read_failures},
          {"cachefiles_read_local_us", latency_json(m.cachefiles_read_local_us)},
          {"cachefiles_read_fetched_us", latency_json(m.cachefiles_read_fetched_us)},
          {"fill_latency_us_buckets", m.fill_latency_us_buckets},
          {"cache_bytes", m.cache_bytes},
          {"cache_limit", m.cache_limit},
          {"cache_entries_in_use", m.cache_entries_in_use},
          {"cache_over_limit_bytes", m.cache_over_limit_bytes},
          {"cache_evictions", m.cache_evictions},
          {"cache_evicted_bytes", m.cache_evicted_bytes},
          {"cache_eviction_errors", m.cache_eviction_errors},
          {"cache_no_space", m.cache_no_space},
          {"cache_fscache_bytes", m.cache_fscache_bytes},
          {"cache_fscache_culled", m.cache_fscache_culled},
          {"cache_fscache_busy", m.cache_fscache_busy},
          {"cache_fscache_unnamed_bytes", m.cache_fscache_unnamed_bytes},
          {"cache_fscache_dirs_removed", m.cache_fscache_dirs_removed},
          {"fill_latency_count", m.fill_latency_count},
          {"fill_latency_us_sum", m.fill_latency_us_sum}};
}

base::Result<Metrics> metrics_from(const json& j) {
  if (!j.is_object()) {
    return base::make_error(EINVAL, "\"metrics\" must be an object");
  }
  const base::JsonFields f(j, "metrics");
  Metrics m;
  const std::pair<const char*, std::uint64_t*> counters[] = {
      {"backend_bytes", &m.backend_bytes},
      {"backend_requests", &m.backend_requests},
      {"fill_requests", &m.fill_requests},
      {"hits", &m.hits},
      {"misses", &m.misses},
      {"verify_failures", &m.verify_failures},
      {"refetches", &m.refetches},
      {"refetch_successes", &m.refetch_successes},
      {"blob_refetches", &m.blob_refetches},
      {"blob_refetch_successes", &m.blob_refetch_successes},
      {"prefetch_bytes", &m.prefetch_bytes},
      {"prefetch_list_bytes", &m.prefetch_list_bytes},
      {"readahead_bytes", &m.readahead_bytes},
      {"estargz_early_held_bytes", &m.estargz_early_held_bytes},
      {"estargz_early_fetched_bytes", &m.estargz_early_fetched_bytes},
      {"estargz_early_served_bytes", &m.estargz_early_served_bytes},
      {"ready_chunks", &m.ready_chunks},
      {"chunk_count", &m.chunk_count},
      {"fanotify_allowed", &m.fanotify_allowed},
      {"fanotify_denied", &m.fanotify_denied},
      {"fanotify_marked_blobs", &m.fanotify_marked_blobs},
      {"fanotify_marks_removed", &m.fanotify_marks_removed},
      {"fanotify_lingering_images", &m.fanotify_lingering_images},
      {"cachefiles_reads", &m.cachefiles_reads},
      {"cachefiles_read_failures", &m.cachefiles_read_failures},
      {"cache_bytes", &m.cache_bytes},
      {"cache_limit", &m.cache_limit},
      {"cache_entries_in_use", &m.cache_entries_in_use},
      {"cache_over_limit_bytes", &m.cache_over_limit_bytes},
      {"cache_evictions", &m.cache_evictions},
      {"cache_evicted_bytes", &m.cache_evicted_bytes},
      {"cache_eviction_errors", &m.cache_eviction_errors},
      {"cache_no_space", &m.cache_no_space},
      {"cache_fscache_bytes", &m.cache_fscache_bytes},
      {"cache_fscache_culled", &m.cache_fscache_culled},
      {"cache_fscache_busy", &m.cache_fscache_busy},
      {"cache_fscache_unnamed_bytes", &m.cache_fscache_unnamed_bytes},
      {"cache_fscache_dirs_removed", &m.cache_fscache_dirs_removed},
      {"fill_latency_count", &m.fill_latency_count},
      {"fill_latency_us_sum", &m.fill_latency_us_sum}};
  for (const auto& [key, out] : counters) {
    CFN_TRY(f.read(key, *out, 0, UINT64_MAX));
  }
  CFN_TRY(latency_from(f, "cachefiles_read_local_us", m.cachefiles_read_local_us));
  CFN_TRY(latency_from(f, "cachefiles_read_fetched_us", m.cachefiles_read_fetched_us));
  if (const json* h = f.find("fill_latency_us_buckets")) {
    if (!h->is_array()) {
      return f.error("\"fill_latency_us_buckets\" must be an array");
    }
    for (const auto& v : *h) {
      if (!v.is_number_unsigned()) {
        return f.error("\"fill_latency_us_buckets\" must hold numbers >= 0");
      }
      m.fill_latency_us_buckets.push_back(v.get<std::uint64_t>());
    }
  }
  return m;
}

std::string answer(json j) {
  j["ok"] = true;
  return text_of(j);
}

json cache_listing_json(const CacheListing& l) {
  json entries = json::array();
  for (const auto& e : l.entries) {
    entries.push_back({{"id", e.id},
                       {"kind", e.kind},
                       {"bytes", e.bytes},
                       {"kernel_bytes", e.kernel_bytes},
                       {"last_use_ms", e.last_use_ms},
                       {"in_use", e.in_use},
                       {"mounts", e.mounts}});
  }
  return {{"entries", entries},
          {"bytes", l.bytes},
          {"limit", l.limit},
          {"high", l.high},
          {"low", l.low}};
}

base::Result<CacheListing> cache_listing_from(const json& j) {
  const base::JsonFields f(j, "cache listing");
  CacheListing l;
  CFN_TRY(f.read("bytes", l.bytes, 0, UINT64_MAX));
  CFN_TRY(f.read("limit", l.limit, 0, UINT64_MAX));
  CFN_TRY(f.read("high", l.high, 0, UINT64_MAX));
  CFN_TRY(f.read("low", l.low, 0, UINT64_MAX));
  const json* es = f.find("entries");
  if (es == nullptr || !es->is_array()) {
    return f.error("\"entries\" must be an array");
  }
  for (const auto& e : *es) {
    if (!e.is_object()) {
      return f.error("an entry must be an object");
    }
    const base::JsonFields ef(e, "cache entry");
    CacheEntry c;
    CFN_ASSIGN_OR_RETURN(c.id, ef.string("id"));
    CFN_TRY(ef.read("kind", c.kind));
    CFN_TRY(ef.read("bytes", c.bytes, 0, UINT64_MAX));
    CFN_TRY(ef.read("kernel_bytes", c.kernel_bytes, 0, UINT64_MAX));
    std::uint64_t ms = 0;
    CFN_TRY(ef.read(std::string_view("last_use_ms"), ms, 0, INT64_MAX));
    c.last_use_ms = static_cast<std::int64_t>(ms);
    CFN_TRY(ef.read("in_use", c.in_use));
    CFN_TRY(ef.read("mounts", c.mounts));
    l.entries.push_back(std::move(c));
  }
  return l;
}

json gc_json(const GcAnswer& g) {
  return {{"dry_run", g.dry_run},
          {"evicted", g.evicted},
          {"evicted_bytes", g.evicted_bytes},
          {"bytes_before", g.bytes_before},
          {"bytes_after", g.bytes_after},
          {"limit", g.limit},
          {"low", g.low},
          {"errors", g.errors},
          {"busy", g.busy},
          {"over", g.over}};
}

base::Result<GcAnswer> gc_from(const json& j) {
  const base::JsonFields f(j, "gc report");
  GcAnswer g;
  CFN_TRY(f.read("dry_run", g.dry_run));
  CFN_TRY(f.read("evicted", g.evicted));
  const std::pair<const char*, std::uint64_t*> nums[] = {{"evicted_bytes", &g.evicted_bytes},
                                                         {"bytes_before", &g.bytes_before},
                                                         {"bytes_after", &g.bytes_after},
                                                         {"limit", &g.limit},
                                                         {"low", &g.low},
                                                         {"errors", &g.errors},
                                                         {"busy", &g.busy},
                                                         {"over", &g.over}};
  for (const auto& [key, out] : nums) {
    CFN_TRY(f.read(key, *out, 0, UINT64_MAX));
  }
  return g;
}

}  // namespace

std::string to_prometheus(const Metrics& m, const std::vector<ImageInfo>& images) {
  base::prom::Text t;
  const std::string p = "cachefilesd_nydus_";
  auto counter = [&](const char* name, const char* help, std::uint64_t v) {
    t.counter(p + name, help, v);
  };
  auto gauge = [&](const char* name, const char* help, std::uint64_t v) {
    t.gauge(p + name, help, static_cast<double>(v));
  };
  counter("backend_bytes_total", "Compressed bytes fetched from backends.", m.backend_bytes);
  counter("backend_requests_total", "Backend range reads.", m.backend_requests);
  counter("fill_requests_total", "Fill calls from front ends.", m.fill_requests);
  counter("hits_total", "Fills already fully present.", m.hits);
  counter("misses_total", "Fills that fetched something.", m.misses);
  counter("verify_failures_total", "Chunks whose digest did not match.", m.verify_failures);
  counter("refetches_total",
          "Chunks fetched once more (past the caches) after they failed their digest.",
          m.refetches);
  counter("refetch_successes_total", "Refetched chunks that came back right.", m.refetch_successes);
  counter("blob_refetches_total",
          "Whole registry blobs fetched once more (past the caches) after they failed their "
          "digest.",
          m.blob_refetches);
  counter("blob_refetch_successes_total", "Refetched whole blobs that came back right.",
          m.blob_refetch_successes);
  counter("prefetch_bytes_total", "Uncompressed bytes filled by prefetch.", m.prefetch_bytes);
  counter("prefetch_list_bytes_total",
          "Uncompressed bytes filled for images' prefetch lists (of prefetch_bytes).",
          m.prefetch_list_bytes);
  counter("readahead_bytes_total",
          "Uncompressed bytes filled by file readahead (of prefetch_bytes).", m.readahead_bytes);
  gauge("estargz_early_held_bytes",
        "Bytes of eStargz prioritized files fetched while their bootstraps were built, held "
        "in memory now (bound images).",
        m.estargz_early_held_bytes);
  counter("estargz_early_fetched_bytes_total",
          "Bytes of eStargz prioritized files fetched while their bootstraps were built.",
          m.estargz_early_fetched_bytes);
  counter("estargz_early_served_bytes_total",
          "Of those, bytes reads took from memory instead of the registry.",
          m.estargz_early_served_bytes);
  counter("fanotify_allowed_total", "fanotify pre-content events answered FAN_ALLOW.",
          m.fanotify_allowed);
  counter("fanotify_denied_total", "fanotify pre-content events answered with an error.",
          m.fanotify_denied);
  counter("cachefiles_reads_total", "cachefiles READ requests served.", m.cachefiles_reads);
  counter("cachefiles_read_failures_total", "cachefiles READ requests failed.",
          m.cachefiles_read_failures);
  gauge("ready_chunks", "Chunks present in the cache files of bound images.", m.ready_chunks);
  gauge("chunks", "Chunks of the blobs of bound images.", m.chunk_count);
  gauge("cache_bytes", "Bytes the blob cache's files take on disk (allocated blocks).",
        m.cache_bytes);
  gauge("cache_limit_bytes", "The blob cache's size limit (0: none).", m.cache_limit);
  gauge("cache_entries_in_use", "Cache entries (blobs, bootstraps) in use by bound images.",
        m.cache_entries_in_use);
  gauge("cache_over_limit_bytes",
        "Bytes above the low watermark that cannot be evicted (every entry left is in use).",
        m.cache_over_limit_bytes);
  counter("cache_evictions_total", "Cache entries evicted or removed.", m.cache_evictions);
  counter("cache_evicted_bytes_total", "Bytes of the cache entries evicted or removed.",
          m.cache_evicted_bytes);
  counter("cache_eviction_errors_total", "Evictions that failed (tried again later).",
          m.cache_eviction_errors);
  counter("cache_no_space_total", "Cache writes that failed with ENOSPC or EDQUOT.",
          m.cache_no_space);
  gauge("cache_fscache_bytes",
        "Bytes of cachefiles' own cache files (part of cache_bytes; allocated blocks).",
        m.cache_fscache_bytes);
  counter("cache_fscache_culled_total", "cachefiles cache files culled (inuse + cull).",
          m.cache_fscache_culled);
  counter("cache_fscache_busy_total",
          "inuse / cull answered EBUSY (the kernel had the object open; tried again later).",
          m.cache_fscache_busy);
  gauge("cache_fscache_unnamed_bytes",
        "Of cache_fscache_bytes: objects cachefiles made in this mount (unnamed tmpfiles), "
        "counted at what the daemon wrote into them.",
        m.cache_fscache_unnamed_bytes);
  counter("cache_fscache_dirs_removed_total",
          "Empty cachefiles volume and fan directories removed after culls.",
          m.cache_fscache_dirs_removed);
  gauge("fanotify_marked_blobs", "Blob files with a fanotify pre-content mark.",
        m.fanotify_marked_blobs);
  gauge("fanotify_lingering_images",
        "Images unmounted by the daemon whose file system lives on (a bind mount, another "
        "mount namespace, an open file): still served.",
        m.fanotify_lingering_images);
  const std::string read_s = p + "cachefiles_read_seconds";
  t.family(read_s, "summary", "cachefiles READ to READ_COMPLETE, by whether the data was local.");
  for (const auto& [data, l] :
       {std::pair<const char*, const LatencySummary&>{"local", m.cachefiles_read_local_us},
        std::pair<const char*, const LatencySummary&>{"fetched", m.cachefiles_read_fetched_us}}) {
    for (const auto& [q, us] : {std::pair{"0.5", l.p50}, std::pair{"0.99", l.p99}}) {
      t.sample(read_s, {{"data", data}, {"quantile", q}}, us / 1e6);
    }
    t.sample(read_s + "_sum", {{"data", data}}, l.mean * static_cast<double>(l.count) / 1e6);
    t.sample(read_s + "_count", {{"data", data}}, l.count);
  }
  // Bucket k of the snapshot holds fills of at most 2^k us; the last one also every
  // longer fill, so it is left to +Inf.
  const std::string fill = p + "fill_latency_seconds";
  t.family(fill, "histogram", "Fill latency (a front end's fill call to its return).");
  std::vector<double> le;
  std::vector<std::uint64_t> counts;
  const auto& b = m.fill_latency_us_buckets;
  for (std::size_t k = 0; k + 1 < b.size() && k < 63; ++k) {
    le.push_back(static_cast<double>(1ULL << k) / 1e6);
    counts.push_back(b[k]);
  }
  std::uint64_t total = m.fill_latency_count;
  if (total == 0) {  // an older daemon's snapshot: the buckets are all there is
    for (const std::uint64_t n : b) {
      total += n;
    }
  }
  t.histogram(fill, {}, le, counts, static_cast<double>(m.fill_latency_us_sum) / 1e6, total);
  if (!images.empty()) {
    const std::string ready = p + "image_ready_chunks";
    const std::string chunks = p + "image_chunks";
    const std::string bytes = p + "image_cached_bytes";
    auto labels = [](const ImageInfo& i) -> base::prom::Labels {
      return {{"reference", i.reference.empty() ? i.bootstrap : i.reference},
              {"mountpoint", i.mountpoint},
              {"frontend", i.frontend}};
    };
    auto per_image = [&](const std::string& name, const char* help, auto value) {
      t.family(name, "gauge", help);
      for (const auto& i : images) {
        std::uint64_t v = 0;
        for (const auto& bl : i.blobs) {
          v += value(bl);
        }
        t.sample(name, labels(i), v);
      }
    };
    per_image(ready, "Chunks of the image's blobs present in the cache.",
              [](const BlobInfo& bl) { return bl.ready_chunks; });
    per_image(chunks, "Chunks of the image's blobs.",
              [](const BlobInfo& bl) { return bl.chunk_count; });
    per_image(bytes,
              "Uncompressed bytes of the image's blobs present in the cache (whole chunks, "
              "estimated from the ready-chunk share).",
              [](const BlobInfo& bl) {
                return bl.chunk_count == 0
                           ? std::uint64_t{0}
                           : static_cast<std::uint64_t>(static_cast<double>(bl.size) *
                                                        static_cast<double>(bl.ready_chunks) /
                                                        static_cast<double>(bl.chunk_count));
              });
  }
  return t.take();
}

base::Result<std::string> to_json(const Request& r) {
  return base::json_text(request_json(r), "request");
}

base::Result<std::string> to_json(const RegistryOverrides& o) {
  return base::json_text(overrides_json(o), "registry options");
}

base::Result<Request> request_from_json(std::string_view text) {
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded() && !base::valid_utf8(text)) {
    return base::make_error(EINVAL,
                            "request is not valid UTF-8 (JSON carries only UTF-8: a path that "
                            "is not cannot be named in a request)");
  }
  if (j.is_discarded() || !j.is_object() || !j.contains("op") || !j["op"].is_string()) {
    return base::make_error(EINVAL, "request must be a JSON object with a string \"op\"");
  }
  const base::JsonFields f(j, "");
  const auto op = j["op"].get<std::string>();
  if (op == "ping") {
    return PingRequest{};
  }
  if (op == "list") {
    return ListRequest{};
  }
  if (op == "bind") {
    BindRequest b;
    CFN_TRY(f.read("reference", b.reference));
    const bool local = b.reference.empty();
    if (local) {
      CFN_ASSIGN_OR_RETURN(b.bootstrap, f.string("bootstrap"));
      CFN_ASSIGN_OR_RETURN(b.blob_dir, f.string("blob_dir"));
    } else {
      // A local copy of the image's bootstrap may come with the reference (the blobs
      // still come from the registry); a blob dir may not.
      CFN_TRY(f.read("bootstrap", b.bootstrap));
      CFN_TRY(f.read("blob_dir", b.blob_dir));
      if (!b.blob_dir.empty()) {
        return base::make_error(EINVAL,
                                "\"blob_dir\" goes with a local \"bootstrap\", not with "
                                "\"reference\"");
      }
    }
    CFN_ASSIGN_OR_RETURN(b.mountpoint, f.string("mountpoint"));
    CFN_TRY(f.read("frontend", b.frontend));
    CFN_TRY(f.read("fsid", b.fsid));
    CFN_TRY(f.read("domain_id", b.domain_id));
    if (const json* r = f.find("registry"); !local && r != nullptr) {
      CFN_ASSIGN_OR_RETURN(b.registry, overrides_from(*r));
    }
    return b;
  }
  if (op == "unbind") {
    UnbindRequest u;
    CFN_ASSIGN_OR_RETURN(u.mountpoint, f.string("mountpoint"));
    // Only true forces; any other value (as before the typed API) does not.
    u.force = j.contains("force") && j["force"] == true;
    return u;
  }
  if (op == "accessed") {
    AccessedRequest a;
    CFN_ASSIGN_OR_RETURN(a.mountpoint, f.string("mountpoint"));
    return a;
  }
  if (op == "cache_ls") {
    return CacheLsRequest{};
  }
  if (op == "cache_gc") {
    CacheGcRequest g;
    CFN_TRY(f.read("dry_run", g.dry_run));
    return g;
  }
  if (op == "cache_rm") {
    CacheRmRequest r;
    CFN_ASSIGN_OR_RETURN(r.id, f.string("id"));
    if (r.id.empty()) {
      return base::make_error(EINVAL, "cache_rm: empty \"id\"");
    }
    return r;
  }
  if (op == "status") {
    return StatusRequest{};
  }
  if (op == "stop") {
    return StopRequest{};
  }
  if (op == "prefetch") {
    PrefetchRequest p;
    CFN_ASSIGN_OR_RETURN(p.reference, f.string("reference"));
    CFN_ASSIGN_OR_RETURN(p.bootstrap, f.string("bootstrap"));
    if (p.reference.empty() || p.bootstrap.empty()) {
      return base::make_error(EINVAL,
                              "prefetch: \"reference\" and \"bootstrap\" must not be empty");
    }
    if (const json* r = f.find("registry"); r != nullptr) {
      CFN_ASSIGN_OR_RETURN(p.registry, overrides_from(*r));
    }
    return p;
  }
  if (op == "metrics") {
    MetricsRequest m;
    m.prometheus = j.contains("format") && j["format"] == "prometheus";
    return m;
  }
  return base::make_error(EINVAL, "unknown op '" + op + "'");
}

std::string to_json(const PingAnswer& a) {
  return answer({{"pid", a.pid}, {"frontend", a.frontend}});
}

std::string to_json(const ImageInfo& a) {
  return answer(image_json(a));
}

std::string images_to_json(const std::vector<ImageInfo>& images) {
  json arr = json::array();
  for (const auto& i : images) {
    arr.push_back(image_json(i));
  }
  return answer({{"images", arr}});
}

std::string files_to_json(const std::vector<std::string>& files) {
  json list = json::array();
  for (const std::string& f : files) {
    if (base::valid_utf8(f)) {
      list.push_back(f);
    } else {
      list.push_back({{"hex", base::to_hex(base::as_bytes(f))}});
    }
  }
  return answer({{"files", std::move(list)}});
}

std::string to_json(const Metrics& m) {
  return answer({{"metrics", metrics_json(m)}});
}

std::string prometheus_to_json(const std::string& text) {
  return answer({{"text", text}});
}

std::string to_json(const CacheListing& l) {
  return answer(cache_listing_json(l));
}

std::string to_json(const GcAnswer& g) {
  return answer(gc_json(g));
}

base::Result<CacheListing> cache_listing_from_json(std::string_view text) {
  CFN_ASSIGN_OR_RETURN(auto j, answer_object(text));
  auto l = cache_listing_from(j);
  if (!l) {
    return base::Unexpected(as_proto(base::Unexpected(l.error())).error());
  }
  return l;
}

base::Result<GcAnswer> gc_from_json(std::string_view text) {
  CFN_ASSIGN_OR_RETURN(auto j, answer_object(text));
  auto g = gc_from(j);
  if (!g) {
    return base::Unexpected(as_proto(base::Unexpected(g.error())).error());
  }
  return g;
}

std::string pretty_cache_listing(const CacheListing& l) {
  return text_of(cache_listing_json(l), 2);
}

std::string pretty_gc(const GcAnswer& g) {
  return text_of(gc_json(g), 2);
}

std::string ok_to_json() {
  return answer(json::object());
}

std::string error_to_json(const base::Error& e) {
  return text_of(json{{"ok", false}, {"errno", e.code}, {"error", e.to_string()}});
}

json status_json(const StatusAnswer& a) {
  return {{"pid", a.pid},
          {"version", a.version},
          {"frontend", a.frontend},
          {"frontends", a.frontends},
          {"uptime_s", a.uptime_s},
          {"images", a.images},
          {"cache_dir", a.cache_dir},
          {"cache_bytes", a.cache_bytes},
          {"socket", a.socket},
          {"metrics_address", a.metrics_address}};
}

std::string to_json(const StatusAnswer& a) {
  return answer(status_json(a));
}

std::string to_json(const PrefetchAnswer& a) {
  return answer({{"blobs", a.blobs}, {"chunks", a.chunks}});
}

base::Result<PrefetchAnswer> prefetch_from_json(std::string_view text) {
  CFN_ASSIGN_OR_RETURN(auto j, answer_object(text));
  const base::JsonFields f(j, "");
  PrefetchAnswer a;
  CFN_TRY(as_proto(f.read(std::string_view("blobs"), a.blobs, 0, UINT64_MAX)));
  CFN_TRY(as_proto(f.read(std::string_view("chunks"), a.chunks, 0, UINT64_MAX)));
  return a;
}

base::Result<StatusAnswer> status_from_json(std::string_view text) {
  CFN_ASSIGN_OR_RETURN(auto j, answer_object(text));
  const base::JsonFields f(j, "");
  StatusAnswer a;
  std::uint64_t pid = 0;
  CFN_TRY(as_proto(f.read(std::string_view("pid"), pid, 0, INT64_MAX)));
  a.pid = static_cast<std::int64_t>(pid);
  CFN_TRY(as_proto(f.read("version", a.version)));
  CFN_TRY(as_proto(f.read("frontend", a.frontend)));
  CFN_TRY(as_proto(f.read("frontends", a.frontends)));
  CFN_TRY(as_proto(f.read(std::string_view("uptime_s"), a.uptime_s, 0, UINT64_MAX)));
  CFN_TRY(as_proto(f.read(std::string_view("images"), a.images, 0, UINT64_MAX)));
  CFN_TRY(as_proto(f.read("cache_dir", a.cache_dir)));
  CFN_TRY(as_proto(f.read(std::string_view("cache_bytes"), a.cache_bytes, 0, UINT64_MAX)));
  CFN_TRY(as_proto(f.read("socket", a.socket)));
  CFN_TRY(as_proto(f.read("metrics_address", a.metrics_address)));
  return a;
}

std::string pretty_status(const StatusAnswer& s) {
  return text_of(status_json(s), 2);
}

base::Result<PingAnswer> ping_from_json(std::string_view text) {
  CFN_ASSIGN_OR_RETURN(auto j, answer_object(text));
  const base::JsonFields f(j, "");
  PingAnswer a;
  std::uint64_t pid = 0;
  CFN_TRY(as_proto(f.read(std::string_view("pid"), pid, 0, INT64_MAX)));
  a.pid = static_cast<std::int64_t>(pid);
  CFN_TRY(as_proto(f.read("frontend", a.frontend)));
  return a;
}

base::Result<ImageInfo> image_from_json(std::string_view text) {
  CFN_ASSIGN_OR_RETURN(auto j, answer_object(text));
  auto i = image_from(j);
  if (!i) {
    return base::Unexpected(as_proto(base::Unexpected(i.error())).error());
  }
  return i;
}

base::Result<std::vector<ImageInfo>> images_from_json(std::string_view text) {
  CFN_ASSIGN_OR_RETURN(auto j, answer_object(text));
  if (!j.contains("images") || !j["images"].is_array()) {
    return base::make_error(EPROTO, "control: bad answer: no \"images\" array");
  }
  std::vector<ImageInfo> out;
  for (const auto& e : j["images"]) {
    auto i = image_from(e);
    if (!i) {
      return base::Unexpected(as_proto(base::Unexpected(i.error())).error());
    }
    out.push_back(std::move(*i));
  }
  return out;
}

base::Result<std::vector<std::string>> files_from_json(std::string_view text) {
  CFN_ASSIGN_OR_RETURN(auto j, answer_object(text));
  const auto list = j.find("files");
  if (list == j.end() || !list->is_array()) {
    return base::make_error(EPROTO, "control: bad answer: no \"files\" array");
  }
  std::vector<std::string> files;
  files.reserve(list->size());
  for (const json& f : *list) {
    if (f.is_string()) {
      files.push_back(f.get<std::string>());
      continue;
    }
    // A name that is not UTF-8: {"hex": its bytes}.
    const auto hex = f.is_object() && f.size() == 1 ? f.find("hex") : f.end();
    if (hex == f.end() || !hex->is_string() || hex->get_ref<const std::string&>().size() % 2 != 0) {
      return base::make_error(EPROTO,
                              "control: bad answer: a \"files\" entry is neither a string nor "
                              "{\"hex\": bytes}");
    }
    const std::string& text = hex->get_ref<const std::string&>();
    std::string name(text.size() / 2, '\0');
    if (!base::from_hex(text, std::as_writable_bytes(std::span(name)))) {
      return base::make_error(EPROTO, "control: bad answer: a \"files\" entry's hex is not hex");
    }
    files.push_back(std::move(name));
  }
  return files;
}

base::Result<Metrics> metrics_from_json(std::string_view text) {
  CFN_ASSIGN_OR_RETURN(auto j, answer_object(text));
  if (!j.contains("metrics")) {
    return base::make_error(EPROTO, "control: bad answer: no \"metrics\"");
  }
  auto m = metrics_from(j["metrics"]);
  if (!m) {
    return base::Unexpected(as_proto(base::Unexpected(m.error())).error());
  }
  return m;
}

base::Result<std::string> prometheus_from_json(std::string_view text) {
  CFN_ASSIGN_OR_RETURN(auto j, answer_object(text));
  auto t = base::JsonFields(j, "").string("text");
  if (!t) {
    return base::Unexpected(as_proto(base::Unexpected(t.error())).error());
  }
  return t;
}

base::Status ok_from_json(std::string_view text) {
  CFN_TRY(answer_object(text));
  return {};
}

std::string pretty_images(const std::vector<ImageInfo>& images) {
  json arr = json::array();
  for (const auto& i : images) {
    arr.push_back(image_json(i));
  }
  return text_of(json{{"images", arr}}, 2);
}

std::string pretty_metrics(const Metrics& m) {
  return text_of(json{{"metrics", metrics_json(m)}}, 2);
}

}  // namespace control
