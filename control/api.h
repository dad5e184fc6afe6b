// SPDX-License-Identifier: Apache-2.0
// The daemon's control API: its requests and answers as types, and their one JSON
// encoding. The wire: a unix stream socket (mode 0600); a client sends ONE request
// object on one line ('\n'-terminated, at most kMaxRequest bytes), the daemon answers
// with one JSON object on one line and closes. Every answer has "ok": true/false;
// failures carry "error" (text) and "errno" (positive).
//
//   {"op":"ping"}                          -> {"ok":true,"pid":N,"frontend":NAME}
//   {"op":"bind","reference":REF[,"registry":{overrides}],"mountpoint":DIR
//    [,"frontend":NAME][,"fsid":ID][,"domain_id":D]}           -> {"ok":true, IMAGE}
//   {"op":"bind","reference":REF,"bootstrap":PATH,...}   (the bootstrap already local: not
//                                                         fetched; blobs from the registry)
//   {"op":"bind","bootstrap":PATH,"blob_dir":DIR,"mountpoint":DIR ...}
//   {"op":"unbind","mountpoint":DIR[,"force":true]}             -> {"ok":true}
//   {"op":"list"}                          -> {"ok":true,"images":[IMAGE...]}
//   {"op":"accessed","mountpoint":DIR}     -> {"ok":true,"files":[PATH...]}  (a PATH that
//                                             is not UTF-8: {"hex":"<its bytes>"}, lossless)
//   {"op":"metrics"}                       -> {"ok":true,"metrics":{...}}
//   {"op":"metrics","format":"prometheus"} -> {"ok":true,"text":"..."}
//   {"op":"cache_ls"}                      -> {"ok":true, CACHE LISTING}
//   {"op":"cache_gc"[,"dry_run":true]}     -> {"ok":true, GC REPORT}
//   {"op":"cache_rm","id":BLOB}            -> {"ok":true}   (errno EBUSY while in use)
//   {"op":"status"}                        -> {"ok":true, STATUS}
//   {"op":"stop"}                          -> {"ok":true,"pid":N,"frontend":NAME}, then the
//                                             daemon unmounts every image and exits
//   {"op":"prefetch","reference":REF,"bootstrap":PATH[,"registry":{overrides}]}
//                                          -> {"ok":true,"blobs":N,"chunks":N}  (the
//                                             bootstrap's prefetch list queued; no mount)
//
// The daemon serves it (daemon/service.cc), its CLI and the snapshotter call it
// (control/client.h). Decoding is strict about types and required fields and ignores
// keys it does not know (an older daemon answering a newer client's extra fields).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "base/result.h"

namespace control {

inline constexpr std::size_t kMaxRequest = 64 * 1024;
inline constexpr std::size_t kMaxResponse = 16 * 1024 * 1024;

// ---- requests ----

// One bind's registry options over the daemon's defaults: only the fields set travel.
// The daemon checks their ranges (daemon/config.h RegistryOptions).
struct RegistryOverrides {
  std::optional<bool> plain_http;
  std::optional<bool> insecure;
  std::optional<std::vector<std::string>> ca_files;
  std::optional<std::string> docker_config;
  std::optional<std::map<std::string, std::vector<std::string>>> mirrors;  // host -> URLs
  // mirror URL -> header name -> value: sent on every request to that mirror
  std::optional<std::map<std::string, std::map<std::string, std::string>>> mirror_headers;
  std::optional<std::uint64_t> connect_timeout_ms;
  std::optional<std::uint64_t> request_timeout_ms;
  std::optional<std::uint64_t> stall_timeout_ms;
  std::optional<std::uint64_t> retries;
  std::optional<std::uint64_t> max_parallel;
  std::optional<std::uint64_t> max_bootstrap_bytes;
  friend bool operator==(const RegistryOverrides&, const RegistryOverrides&) = default;
};

struct PingRequest {
  friend bool operator==(const PingRequest&, const PingRequest&) = default;
};

// A registry image (reference, registry[, bootstrap: a local copy of its bootstrap]) or a
// local one (bootstrap + blob_dir).
struct BindRequest {
  std::string mountpoint;
  std::string reference;
  std::optional<RegistryOverrides> registry;  // reference only
  std::string bootstrap;
  std::string blob_dir;
  std::string frontend;   // empty: the daemon's default
  std::string fsid;       // cachefiles only; empty: from the bootstrap
  std::string domain_id;  // cachefiles only
  friend bool operator==(const BindRequest&, const BindRequest&) = default;
};

struct UnbindRequest {
  std::string mountpoint;
  bool force = false;
  friend bool operator==(const UnbindRequest&, const UnbindRequest&) = default;
};

struct ListRequest {
  friend bool operator==(const ListRequest&, const ListRequest&) = default;
};

struct AccessedRequest {
  std::string mountpoint;
  friend bool operator==(const AccessedRequest&, const AccessedRequest&) = default;
};

struct MetricsRequest {
  bool prometheus = false;
  friend bool operator==(const MetricsRequest&, const MetricsRequest&) = default;
};

// The blob cache's space (docs/cache.md): list its entries, evict now, remove one.
struct CacheLsRequest {
  friend bool operator==(const CacheLsRequest&, const CacheLsRequest&) = default;
};
struct CacheGcRequest {
  bool dry_run = false;
  friend bool operator==(const CacheGcRequest&, const CacheGcRequest&) = default;
};
struct CacheRmRequest {
  std::string id;  // a blob id, or "bootstraps/<file>"
  friend bool operator==(const CacheRmRequest&, const CacheRmRequest&) = default;
};

struct StatusRequest {
  friend bool operator==(const StatusRequest&, const StatusRequest&) = default;
};

// The graceful stop SIGTERM starts (unmount every image, give the kernel fds up, exit).
struct StopRequest {
  friend bool operator==(const StopRequest&, const StopRequest&) = default;
};

// Fetch the chunks of a registry image's prefetch list (its bootstrap's prefetch table)
// into the blob cache, verified as a bind's are, without mounting anything: the
// snapshotter sends it when a pull commits the image's bootstrap layer, so a later bind
// finds the chunks present (or joins their fetches). The answer comes once the list is
// queued, not fetched. bootstrap: the local copy (an absolute path of a regular file).
struct PrefetchRequest {
  std::string reference;
  std::string bootstrap;
  std::optional<RegistryOverrides> registry;
  friend bool operator==(const PrefetchRequest&, const PrefetchRequest&) = default;
};

using Request = std::variant<PingRequest, BindRequest, UnbindRequest, ListRequest, AccessedRequest,
                             MetricsRequest, CacheLsRequest, CacheGcRequest, CacheRmRequest,
                             StatusRequest, StopRequest, PrefetchRequest>;

// ---- answers ----

struct PingAnswer {
  std::int64_t pid = 0;
  std::string frontend;  // the daemon's default front end
  friend bool operator==(const PingAnswer&, const PingAnswer&) = default;
};

struct BlobInfo {
  std::string id;
  std::string cache_file;
  std::uint64_t size = 0;  // uncompressed
  std::uint64_t compressed_size = 0;
  std::uint64_t ready_chunks = 0;
  std::uint64_t chunk_count = 0;
  friend bool operator==(const BlobInfo&, const BlobInfo&) = default;
};

// What `cachefilesd-nydus status` prints.
struct StatusAnswer {
  std::int64_t pid = 0;
  std::string version;
  std::string frontend;                // the default front end
  std::vector<std::string> frontends;  // the front ends this daemon can mount with
  std::uint64_t uptime_s = 0;
  std::uint64_t images = 0;  // bound images
  std::string cache_dir;
  // The cache's entries' allocated bytes as of its last accounting pass: metrics'
  // cache_bytes (docs/control-api.md says what it leaves out).
  std::uint64_t cache_bytes = 0;
  std::string socket;
  std::string metrics_address;  // the bound HTTP endpoint; empty: off
  friend bool operator==(const StatusAnswer&, const StatusAnswer&) = default;
};

// What a prefetch request queued: the image's blobs and its listed chunks (those present
// or in flight are skipped when their turn comes; 0 chunks: no prefetch list, no blob
// opened, nothing fetched).
struct PrefetchAnswer {
  std::uint64_t blobs = 0;
  std::uint64_t chunks = 0;
  friend bool operator==(const PrefetchAnswer&, const PrefetchAnswer&) = default;
};

// A bound image (bind's answer, list's entries).
struct ImageInfo {
  std::string mountpoint;
  std::string bootstrap;
  std::string frontend;
  std::string backend;  // the backend's description
  std::vector<BlobInfo> blobs;
  std::string fsid;  // cachefiles: fsid and domain_id (both on the wire when fsid is set)
  std::string domain_id;
  std::string reference;  // a registry image: reference and manifest_digest
  std::string manifest_digest;
  std::string blob_dir;  // a local image
  friend bool operator==(const ImageInfo&, const ImageInfo&) = default;
};

// A latency summary in microseconds.
struct LatencySummary {
  std::uint64_t count = 0;
  double mean = 0;
  double p50 = 0;
  double p99 = 0;
  friend bool operator==(const LatencySummary&, const LatencySummary&) = default;
};

// One snapshot of the daemon's metrics: the JSON answer and the Prometheus text both
// print it.
struct Metrics {
  std::uint64_t backend_bytes = 0;      // compressed bytes fetched from backends
  std::uint64_t backend_requests = 0;   // backend range reads
  std::uint64_t fill_requests = 0;      // fill calls from front ends
  std::uint64_t hits = 0;               // fills already fully present
  std::uint64_t misses = 0;             // fills that fetched something
  std::uint64_t verify_failures = 0;    // chunks whose digest did not match
  std::uint64_t refetches = 0;          // of those, chunks fetched once more
  std::uint64_t refetch_successes = 0;  // refetches that came back right
  // Whole registry blobs (bootstrap layers) fetched once more past the caches after a
  // digest mismatch, and those that came back right.
  std::uint64_t blob_refetches = 0;
  std::uint64_t blob_refetch_successes = 0;
  std::uint64_t prefetch_bytes = 0;       // uncompressed bytes filled by prefetch
  std::uint64_t prefetch_list_bytes = 0;  // of prefetch_bytes: prefetch lists
  std::uint64_t readahead_bytes = 0;      // of prefetch_bytes: file readahead
  // eStargz images' prioritized files fetched into memory while their bootstraps were
  // built (daemon/early_ranges.h): bytes held now over bound images (gauge), and bytes
  // fetched and served from them since start (counters; unbound images' included).
  std::uint64_t estargz_early_held_bytes = 0;
  std::uint64_t estargz_early_fetched_bytes = 0;
  std::uint64_t estargz_early_served_bytes = 0;
  std::uint64_t ready_chunks = 0;  // gauge: chunks present, bound images
  std::uint64_t chunk_count = 0;   // gauge: chunks of bound images
  std::uint64_t fanotify_allowed = 0;
  std::uint64_t fanotify_denied = 0;
  std::uint64_t fanotify_marked_blobs = 0;
  std::uint64_t fanotify_marks_removed = 0;
  std::uint64_t fanotify_lingering_images = 0;  // gauge: unmounted, file system alive
  std::uint64_t cachefiles_reads = 0;
  std::uint64_t cachefiles_read_failures = 0;
  LatencySummary cachefiles_read_local_us;    // READ to READ_COMPLETE, data local
  LatencySummary cachefiles_read_fetched_us;  // ... data fetched
  // Fill latency: bucket k counts fills of at most 2^k us (k = 0..size-1), not cumulative.
  std::vector<std::uint64_t> fill_latency_us_buckets;
  // The cache's space (gauges as of the last accounting pass, then counters).
  std::uint64_t cache_bytes = 0;
  std::uint64_t cache_limit = 0;
  std::uint64_t cache_entries_in_use = 0;
  std::uint64_t cache_over_limit_bytes = 0;
  std::uint64_t cache_evictions = 0;
  std::uint64_t cache_evicted_bytes = 0;
  std::uint64_t cache_eviction_errors = 0;
  std::uint64_t cache_no_space = 0;  // cache writes that failed ENOSPC / EDQUOT
  // cachefiles' own cache files (part of cache_bytes), objects culled, EBUSY answers.
  std::uint64_t cache_fscache_bytes = 0;
  std::uint64_t cache_fscache_culled = 0;
  std::uint64_t cache_fscache_busy = 0;
  // Of cache_fscache_bytes: the kernel's unnamed tmpfiles (objects made in this mount),
  // at what the daemon wrote into them; empty cachefiles directories removed.
  std::uint64_t cache_fscache_unnamed_bytes = 0;
  std::uint64_t cache_fscache_dirs_removed = 0;
  // Every fill's latency: how many and their sum (the last bucket above holds fills of
  // 2^(size-2) us and more, so the buckets' sum may miss none but their le is open).
  std::uint64_t fill_latency_count = 0;
  std::uint64_t fill_latency_us_sum = 0;
  friend bool operator==(const Metrics&, const Metrics&) = default;
};

// One entry of the cache (a blob's files, or a bootstrap).
struct CacheEntry {
  std::string id;
  std::string kind;                // "blob", "bootstrap" or "fscache" (a kernel-only object)
  std::uint64_t bytes = 0;         // allocated on disk
  std::uint64_t kernel_bytes = 0;  // of bytes, in cachefiles' cache dir (the kernel's files)
  std::int64_t last_use_ms = 0;    // unix time, ms
  bool in_use = false;
  std::vector<std::string> mounts;  // mount points of the bound images that use it
  friend bool operator==(const CacheEntry&, const CacheEntry&) = default;
};

struct CacheListing {
  std::vector<CacheEntry> entries;  // least recently used first
  std::uint64_t bytes = 0;          // of every entry
  std::uint64_t limit = 0;          // 0: no limit
  std::uint64_t high = 0;           // watermarks, bytes
  std::uint64_t low = 0;
  friend bool operator==(const CacheListing&, const CacheListing&) = default;
};

struct GcAnswer {
  bool dry_run = false;
  std::vector<std::string> evicted;  // in eviction (LRU) order
  std::uint64_t evicted_bytes = 0;
  std::uint64_t bytes_before = 0;
  std::uint64_t bytes_after = 0;
  std::uint64_t limit = 0;
  std::uint64_t low = 0;
  std::uint64_t errors = 0;
  std::uint64_t busy = 0;  // of errors, in use (the kernel's EBUSY): tried again later
  std::uint64_t over = 0;  // above the target with only entries in use left
  friend bool operator==(const GcAnswer&, const GcAnswer&) = default;
};

// The Prometheus text exposition (format 0.0.4) of m, plus per-image gauges labelled
// with reference (or bootstrap), mountpoint and frontend for each of `images`.
[[nodiscard]] std::string to_prometheus(const Metrics& m,
                                        const std::vector<ImageInfo>& images = {});

// ---- encoding ----

// Pure. One request as its JSON text (no newline). Errors: EINVAL naming the first
// field that is not valid UTF-8 (a path or reference from a command line or a label:
// JSON carries only UTF-8).
[[nodiscard]] base::Result<std::string> to_json(const Request& r);
// Pure. Errors: EINVAL naming the field (not a JSON object, no string "op", an unknown
// op, a missing required field, a field of the wrong type).
[[nodiscard]] base::Result<Request> request_from_json(std::string_view text);

// The overrides as a JSON object text ("{}" when none is set). Errors: EINVAL naming
// the first field that is not valid UTF-8.
[[nodiscard]] base::Result<std::string> to_json(const RegistryOverrides& o);

// Answers: "ok": true plus the answer's fields.
[[nodiscard]] std::string to_json(const PingAnswer& a);
[[nodiscard]] std::string to_json(const ImageInfo& a);                           // bind's answer
[[nodiscard]] std::string images_to_json(const std::vector<ImageInfo>& images);  // list
[[nodiscard]] std::string files_to_json(const std::vector<std::string>& files);  // accessed
[[nodiscard]] std::string to_json(const Metrics& m);                             // metrics
[[nodiscard]] std::string prometheus_to_json(const std::string& text);  // metrics, prometheus
[[nodiscard]] std::string ok_to_json();                                 // unbind, cache_rm
[[nodiscard]] std::string to_json(const CacheListing& l);               // cache_ls
[[nodiscard]] std::string to_json(const GcAnswer& g);                   // cache_gc
[[nodiscard]] std::string to_json(const StatusAnswer& a);               // status
[[nodiscard]] std::string to_json(const PrefetchAnswer& a);             // prefetch
// "ok": false with the error's errno and text.
[[nodiscard]] std::string error_to_json(const base::Error& e);

// Decoding an answer: a failure answer becomes its Error (errno, text); a text that is
// not an answer is EPROTO.
[[nodiscard]] base::Result<PingAnswer> ping_from_json(std::string_view text);
[[nodiscard]] base::Result<ImageInfo> image_from_json(std::string_view text);
[[nodiscard]] base::Result<std::vector<ImageInfo>> images_from_json(std::string_view text);
[[nodiscard]] base::Result<std::vector<std::string>> files_from_json(std::string_view text);
[[nodiscard]] base::Result<Metrics> metrics_from_json(std::string_view text);
[[nodiscard]] base::Result<std::string> prometheus_from_json(std::string_view text);
[[nodiscard]] base::Status ok_from_json(std::string_view text);
[[nodiscard]] base::Result<CacheListing> cache_listing_from_json(std::string_view text);
[[nodiscard]] base::Result<GcAnswer> gc_from_json(std::string_view text);
[[nodiscard]] base::Result<StatusAnswer> status_from_json(std::string_view text);
[[nodiscard]] base::Result<PrefetchAnswer> prefetch_from_json(std::string_view text);

// Pretty JSON for people (the CLI): the answer's fields without "ok", indented by 2.
[[nodiscard]] std::string pretty_images(const std::vector<ImageInfo>& images);
[[nodiscard]] std::string pretty_metrics(const Metrics& m);
[[nodiscard]] std::string pretty_cache_listing(const CacheListing& l);
[[nodiscard]] std::string pretty_gc(const GcAnswer& g);
[[nodiscard]] std::string pretty_status(const StatusAnswer& s);

}  // namespace control
