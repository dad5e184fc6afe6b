// SPDX-License-Identifier: Apache-2.0
#include "control/api.h"

#include <cerrno>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace control {
namespace {

using nlohmann::json;

// ---- field helpers: a missing optional field keeps its default ----

base::Status get(const json& j, const char* key, std::string& out, bool required = false) {
  auto it = j.find(key);
  if (it == j.end()) {
    return required ? base::Status(base::errorf(EINVAL, "missing \"{}\"", key)) : base::Status{};
  }
  if (!it->is_string()) {
    return base::errorf(EINVAL, "\"{}\" must be a string", key);
  }
  out = it->get<std::string>();
  return {};
}

base::Status get(const json& j, const char* key, bool& out) {
  auto it = j.find(key);
  if (it == j.end()) {
    return {};
  }
  if (!it->is_boolean()) {
    return base::errorf(EINVAL, "\"{}\" must be true or false", key);
  }
  out = it->get<bool>();
  return {};
}

base::Status get(const json& j, const char* key, std::uint64_t& out) {
  auto it = j.find(key);
  if (it == j.end()) {
    return {};
  }
  if (!it->is_number_unsigned()) {
    return base::errorf(EINVAL, "\"{}\" must be a number >= 0", key);
  }
  out = it->get<std::uint64_t>();
  return {};
}

base::Status get(const json& j, const char* key, std::int64_t& out) {
  auto it = j.find(key);
  if (it == j.end()) {
    return {};
  }
  if (!it->is_number_integer()) {
    return base::errorf(EINVAL, "\"{}\" must be an integer", key);
  }
  out = it->get<std::int64_t>();
  return {};
}

base::Status get(const json& j, const char* key, double& out) {
  auto it = j.find(key);
  if (it == j.end()) {
    return {};
  }
  if (!it->is_number()) {
    return base::errorf(EINVAL, "\"{}\" must be a number", key);
  }
  out = it->get<double>();
  return {};
}

base::Status get(const json& j, const char* key, std::vector<std::string>& out) {
  auto it = j.find(key);
  if (it == j.end()) {
    return {};
  }
  if (!it->is_array()) {
    return base::errorf(EINVAL, "\"{}\" must be an array of strings", key);
  }
  out.clear();
  for (const auto& e : *it) {
    if (!e.is_string()) {
      return base::errorf(EINVAL, "\"{}\" must be an array of strings", key);
    }
    out.push_back(e.get<std::string>());
  }
  return {};
}

template <typename T>
base::Status get(const json& j, const char* key, std::optional<T>& out) {
  if (!j.contains(key)) {
    return {};
  }
  T v{};
  CFN_TRY(get(j, key, v));
  out = std::move(v);
  return {};
}

base::Status get(const json& j, const char* key,
                 std::optional<std::map<std::string, std::vector<std::string>>>& out) {
  auto it = j.find(key);
  if (it == j.end()) {
    return {};
  }
  if (!it->is_object()) {
    return base::errorf(EINVAL, "\"{}\" must be an object of host -> [URL]", key);
  }
  std::map<std::string, std::vector<std::string>> m;
  for (const auto& [host, urls] : it->items()) {
    json one{{key, urls}};
    CFN_TRY(get(one, key, m[host]));
  }
  out = std::move(m);
  return {};
}

// The JSON object of an answer text; a failure answer is its error.
base::Result<json> answer_object(std::string_view text) {
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("ok") || !j["ok"].is_boolean()) {
    return base::make_error(EPROTO, "control: the daemon's answer is not a JSON answer object");
  }
  if (!j["ok"].get<bool>()) {
    std::int64_t code = EIO;
    std::string message = "(no error text)";
    (void)get(j, "errno", code);
    (void)get(j, "error", message);
    if (code <= 0 || code > 4095) {
      code = EIO;
    }
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
  static const char* const kKeys[] = {
      "plain_http", "insecure",           "ca_files",           "docker_config",
      "mirrors",    "connect_timeout_ms", "request_timeout_ms", "stall_timeout_ms",
      "retries",    "max_parallel",       "max_bootstrap_bytes"};
  for (const auto& [k, v] : j.items()) {
    if (std::find(std::begin(kKeys), std::end(kKeys), k) == std::end(kKeys)) {
      return base::errorf(EINVAL, "unknown key \"registry.{}\"", k);
    }
  }
  RegistryOverrides o;
  CFN_TRY(get(j, "plain_http", o.plain_http));
  CFN_TRY(get(j, "insecure", o.insecure));
  CFN_TRY(get(j, "ca_files", o.ca_files));
  CFN_TRY(get(j, "docker_config", o.docker_config));
  CFN_TRY(get(j, "mirrors", o.mirrors));
  CFN_TRY(get(j, "connect_timeout_ms", o.connect_timeout_ms));
  CFN_TRY(get(j, "request_timeout_ms", o.request_timeout_ms));
  CFN_TRY(get(j, "stall_timeout_ms", o.stall_timeout_ms));
  CFN_TRY(get(j, "retries", o.retries));
  CFN_TRY(get(j, "max_parallel", o.max_parallel));
  CFN_TRY(get(j, "max_bootstrap_bytes", o.max_bootstrap_bytes));
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
  ImageInfo i;
  CFN_TRY(get(j, "mountpoint", i.mountpoint, true));
  CFN_TRY(get(j, "bootstrap", i.bootstrap));
  CFN_TRY(get(j, "frontend", i.frontend));
  CFN_TRY(get(j, "backend", i.backend));
  CFN_TRY(get(j, "fsid", i.fsid));
  CFN_TRY(get(j, "domain_id", i.domain_id));
  CFN_TRY(get(j, "reference", i.reference));
  CFN_TRY(get(j, "manifest_digest", i.manifest_digest));
  CFN_TRY(get(j, "blob_dir", i.blob_dir));
  if (j.contains("blobs")) {
    if (!j["blobs"].is_array()) {
      return base::make_error(EINVAL, "\"blobs\" must be an array");
    }
    for (const auto& b : j["blobs"]) {
      if (!b.is_object()) {
        return base::make_error(EINVAL, "a blob must be an object");
      }
      BlobInfo bi;
      CFN_TRY(get(b, "id", bi.id));
      CFN_TRY(get(b, "cache_file", bi.cache_file));
      CFN_TRY(get(b, "size", bi.size));
      CFN_TRY(get(b, "compressed_size", bi.compressed_size));
      CFN_TRY(get(b, "ready_chunks", bi.ready_chunks));
      CFN_TRY(get(b, "chunk_count", bi.chunk_count));
      i.blobs.push_back(std::move(bi));
    }
  }
  return i;
}

json latency_json(const LatencySummary& l) {
  return {{"count", l.count}, {"mean", l.mean}, {"p50", l.p50}, {"p99", l.p99}};
}

base::Status latency_from(const json& j, const char* key, LatencySummary& l) {
  auto it = j.find(key);
  if (it == j.end()) {
    return {};
  }
  if (!it->is_object()) {
    return base::errorf(EINVAL, "\"{}\" must be an object", key);
  }
  CFN_TRY(get(*it, "count", l.count));
  CFN_TRY(get(*it, "mean", l.mean));
  CFN_TRY(get(*it, "p50", l.p50));
  CFN_TRY(get(*it, "p99", l.p99));
  return {};
}

json metrics_json(const Metrics& m) {
  return {{"backend_bytes", m.backend_bytes},
          {"backend_requests", m.backend_requests},
          {"fill_requests", m.fill_requests},
          {"hits", m.hits},
          {"misses", m.misses},
          {"verify_failures", m.verify_failures},
          {"prefetch_bytes", m.prefetch_bytes},
          {"prefetch_list_bytes", m.prefetch_list_bytes},
          {"readahead_bytes", m.readahead_bytes},
          {"ready_chunks", m.ready_chunks},
          {"chunk_count", m.chunk_count},
          {"fanotify_allowed", m.fanotify_allowed},
          {"fanotify_denied", m.fanotify_denied},
          {"fanotify_marked_blobs", m.fanotify_marked_blobs},
          {"fanotify_marks_removed", m.fanotify_marks_removed},
          {"cachefiles_reads", m.cachefiles_reads},
          {"cachefiles_read_failures", m.cachefiles_read_failures},
          {"cachefiles_read_local_us", latency_json(m.cachefiles_read_local_us)},
          {"cachefiles_read_fetched_us", latency_json(m.cachefiles_read_fetched_us)},
          {"fill_latency_us_buckets", m.fill_latency_us_buckets}};
}

base::Result<Metrics> metrics_from(const json& j) {
  if (!j.is_object()) {
    return base::make_error(EINVAL, "\"metrics\" must be an object");
  }
  Metrics m;
  CFN_TRY(get(j, "backend_bytes", m.backend_bytes));
  CFN_TRY(get(j, "backend_requests", m.backend_requests));
  CFN_TRY(get(j, "fill_requests", m.fill_requests));
  CFN_TRY(get(j, "hits", m.hits));
  CFN_TRY(get(j, "misses", m.misses));
  CFN_TRY(get(j, "verify_failures", m.verify_failures));
  CFN_TRY(get(j, "prefetch_bytes", m.prefetch_bytes));
  CFN_TRY(get(j, "prefetch_list_bytes", m.prefetch_list_bytes));
  CFN_TRY(get(j, "readahead_bytes", m.readahead_bytes));
  CFN_TRY(get(j, "ready_chunks", m.ready_chunks));
  CFN_TRY(get(j, "chunk_count", m.chunk_count));
  CFN_TRY(get(j, "fanotify_allowed", m.fanotify_allowed));
  CFN_TRY(get(j, "fanotify_denied", m.fanotify_denied));
  CFN_TRY(get(j, "fanotify_marked_blobs", m.fanotify_marked_blobs));
  CFN_TRY(get(j, "fanotify_marks_removed", m.fanotify_marks_removed));
  CFN_TRY(get(j, "cachefiles_reads", m.cachefiles_reads));
  CFN_TRY(get(j, "cachefiles_read_failures", m.cachefiles_read_failures));
  CFN_TRY(latency_from(j, "cachefiles_read_local_us", m.cachefiles_read_local_us));
  CFN_TRY(latency_from(j, "cachefiles_read_fetched_us", m.cachefiles_read_fetched_us));
  if (auto it = j.find("fill_latency_us_buckets"); it != j.end()) {
    if (!it->is_array()) {
      return base::make_error(EINVAL, "\"fill_latency_us_buckets\" must be an array");
    }
    for (const auto& v : *it) {
      if (!v.is_number_unsigned()) {
        return base::make_error(EINVAL, "\"fill_latency_us_buckets\" must hold numbers >= 0");
      }
      m.fill_latency_us_buckets.push_back(v.get<std::uint64_t>());
    }
  }
  return m;
}

std::string answer(json j) {
  j["ok"] = true;
  return j.dump();
}

}  // namespace

std::string to_prometheus(const Metrics& m) {
  std::string out;
  auto metric = [&](const char* type, const char* name, const char* help, std::uint64_t v) {
    out += fmt::format(
        "# HELP cachefilesd_nydus_{0} {1}\n# TYPE cachefilesd_nydus_{0} {2}\n"
        "cachefilesd_nydus_{0} {3}\n",
        name, help, type, v);
  };
  auto counter = [&](const char* name, const char* help, std::uint64_t v) {
    metric("counter", name, help, v);
  };
  auto gauge = [&](const char* name, const char* help, std::uint64_t v) {
    metric("gauge", name, help, v);
  };
  counter("backend_bytes_total", "Compressed bytes fetched from backends.", m.backend_bytes);
  counter("backend_requests_total", "Backend range reads.", m.backend_requests);
  counter("fill_requests_total", "Fill calls from front ends.", m.fill_requests);
  counter("hits_total", "Fills already fully present.", m.hits);
  counter("misses_total", "Fills that fetched something.", m.misses);
  counter("verify_failures_total", "Chunks whose digest did not match.", m.verify_failures);
  counter("prefetch_bytes_total", "Uncompressed bytes filled by prefetch.", m.prefetch_bytes);
  counter("prefetch_list_bytes_total",
          "Uncompressed bytes filled for images' prefetch lists (of prefetch_bytes).",
          m.prefetch_list_bytes);
  counter("readahead_bytes_total",
          "Uncompressed bytes filled by file readahead (of prefetch_bytes).", m.readahead_bytes);
  gauge("ready_chunks", "Chunks present in the cache files of bound images.", m.ready_chunks);
  gauge("chunks", "Chunks of the blobs of bound images.", m.chunk_count);
  out +=
      "# HELP cachefilesd_nydus_cachefiles_read_seconds cachefiles READ to READ_COMPLETE, "
      "by whether the data was local.\n# TYPE cachefilesd_nydus_cachefiles_read_seconds "
      "summary\n";
  for (const auto& [data, l] :
       {std::pair<const char*, const LatencySummary&>{"local", m.cachefiles_read_local_us},
        std::pair<const char*, const LatencySummary&>{"fetched", m.cachefiles_read_fetched_us}}) {
    for (const auto& [q, us] : {std::pair{"0.5", l.p50}, std::pair{"0.99", l.p99}}) {
      out += fmt::format(
          "cachefilesd_nydus_cachefiles_read_seconds{{data=\"{}\",quantile=\"{}\"}} {:g}\n", data,
          q, us / 1e6);
    }
    out += fmt::format("cachefilesd_nydus_cachefiles_read_seconds_count{{data=\"{}\"}} {}\n", data,
                       l.count);
  }
  out +=
      "# HELP cachefilesd_nydus_fill_latency_seconds Fill latency.\n"
      "# TYPE cachefilesd_nydus_fill_latency_seconds histogram\n";
  std::uint64_t cum = 0;
  for (std::size_t k = 0; k < m.fill_latency_us_buckets.size() && k < 64; ++k) {
    cum += m.fill_latency_us_buckets[k];
    out += fmt::format("cachefilesd_nydus_fill_latency_seconds_bucket{{le=\"{:g}\"}} {}\n",
                       static_cast<double>(1ULL << k) / 1e6, cum);
  }
  out += fmt::format("cachefilesd_nydus_fill_latency_seconds_bucket{{le=\"+Inf\"}} {}\n", cum);
  out += fmt::format("cachefilesd_nydus_fill_latency_seconds_count {}\n", cum);
  return out;
}

std::string to_json(const Request& r) {
  return request_json(r).dump();
}

std::string to_json(const RegistryOverrides& o) {
  return overrides_json(o).dump();
}

base::Result<Request> request_from_json(std::string_view text) {
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("op") || !j["op"].is_string()) {
    return base::make_error(EINVAL, "request must be a JSON object with a string \"op\"");
  }
  const auto op = j["op"].get<std::string>();
  if (op == "ping") {
    return PingRequest{};
  }
  if (op == "list") {
    return ListRequest{};
  }
  if (op == "bind") {
    BindRequest b;
    CFN_TRY(get(j, "reference", b.reference));
    const bool local = b.reference.empty();
    CFN_TRY(get(j, "bootstrap", b.bootstrap, local));
    CFN_TRY(get(j, "blob_dir", b.blob_dir, local));
    if (!local && (!b.bootstrap.empty() || !b.blob_dir.empty())) {
      return base::make_error(EINVAL,
                              "give \"reference\" or \"bootstrap\" + \"blob_dir\", not both");
    }
    CFN_TRY(get(j, "mountpoint", b.mountpoint, true));
    CFN_TRY(get(j, "frontend", b.frontend));
    CFN_TRY(get(j, "fsid", b.fsid));
    CFN_TRY(get(j, "domain_id", b.domain_id));
    if (!local && j.contains("registry")) {
      CFN_ASSIGN_OR_RETURN(b.registry, overrides_from(j["registry"]));
    }
    return b;
  }
  if (op == "unbind") {
    UnbindRequest u;
    CFN_TRY(get(j, "mountpoint", u.mountpoint, true));
    // Only true forces; any other value (as before the typed API) does not.
    u.force = j.contains("force") && j["force"] == true;
    return u;
  }
  if (op == "accessed") {
    AccessedRequest a;
    CFN_TRY(get(j, "mountpoint", a.mountpoint, true));
    return a;
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
  return answer({{"files", files}});
}

std::string to_json(const Metrics& m) {
  return answer({{"metrics", metrics_json(m)}});
}

std::string prometheus_to_json(const std::string& text) {
  return answer({{"text", text}});
}

std::string ok_to_json() {
  return answer(json::object());
}

std::string error_to_json(const base::Error& e) {
  return json{{"ok", false}, {"errno", e.code}, {"error", e.to_string()}}.dump();
}

base::Result<PingAnswer> ping_from_json(std::string_view text) {
  CFN_ASSIGN_OR_RETURN(auto j, answer_object(text));
  PingAnswer a;
  CFN_TRY(as_proto(get(j, "pid", a.pid)));
  CFN_TRY(as_proto(get(j, "frontend", a.frontend)));
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
  std::vector<std::string> files;
  if (!j.contains("files")) {
    return base::make_error(EPROTO, "control: bad answer: no \"files\"");
  }
  CFN_TRY(as_proto(get(j, "files", files)));
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
  std::string t;
  CFN_TRY(as_proto(get(j, "text", t, true)));
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
  return json{{"images", arr}}.dump(2);
}

std::string pretty_metrics(const Metrics& m) {
  return json{{"metrics", metrics_json(m)}}.dump(2);
}

}  // namespace control
