// SPDX-License-Identifier: Apache-2.0
#include "registry/manifest.h"

#include <algorithm>
#include <limits>

#include <nlohmann/json.hpp>

#include "base/json_fields.h"
#include "registry/manifest_json.h"

namespace registry {
namespace {

using nlohmann::json;

constexpr std::size_t kMaxManifestBytes = 4U << 20;
constexpr int kMaxDepth = 32;
constexpr std::size_t kMaxEntries = 10000;  // layers or index entries

// nlohmann's parser keeps its own stack, but refusing deep nesting first keeps
// every later walk (and the destructor) shallow.
bool nesting_ok(std::string_view s) {
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > kMaxDepth) {
        return false;
      }
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return true;
}

std::string_view strip_params(std::string_view ct) {
  ct = ct.substr(0, ct.find(';'));
  while (!ct.empty() && (ct.back() == ' ' || ct.back() == '\t')) {
    ct.remove_suffix(1);
  }
  while (!ct.empty() && (ct.front() == ' ' || ct.front() == '\t')) {
    ct.remove_prefix(1);
  }
  return ct;
}

}  // namespace

base::Result<Descriptor> parse_descriptor(const json& j, std::string_view where) {
  if (!j.is_object()) {
    return base::errorf(EINVAL, "{}: descriptor is not an object", where);
  }
  const base::JsonFields f(j, where, /*null_is_absent=*/true);
  Descriptor d;
  CFN_ASSIGN_OR_RETURN(d.media_type, f.string("mediaType"));
  CFN_ASSIGN_OR_RETURN(d.digest, f.string("digest"));
  if (!is_valid_digest(d.digest)) {
    const auto colon = d.digest.find(':');
    if (colon != std::string::npos && d.digest.substr(0, colon) != "sha256") {
      return base::errorf(EINVAL, "{}: unsupported digest algorithm '{}'", where,
                          d.digest.substr(0, std::min<std::size_t>(colon, 32)));
    }
    return base::errorf(EINVAL, "{}: malformed digest '{}'", where, d.digest.substr(0, 80));
  }
  const json* size = f.find("size");
  if (size == nullptr) {
    return base::errorf(EINVAL, "{}: missing \"size\"", where);
  }
  if (size->is_number_unsigned()) {
    d.size = size->get<std::uint64_t>();
  } else if (size->is_number_integer()) {
    return base::errorf(EINVAL, "{}: negative size", where);
  } else {
    return base::errorf(EINVAL, "{}: \"size\" is not an integer", where);
  }
  if (d.size > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    return base::errorf(EINVAL, "{}: size out of range", where);
  }
  CFN_ASSIGN_OR_RETURN(d.annotations, f.string_map("annotations"));
  CFN_ASSIGN_OR_RETURN(auto urls, f.opt_strings("urls"));
  if (urls) {
    d.urls = std::move(*urls);
  }
  if (const json* pl = f.find("platform")) {
    if (!pl->is_object()) {
      return base::errorf(EINVAL, "{}: \"platform\" is not an object", where);
    }
    const base::JsonFields pf(*pl, where, /*null_is_absent=*/true);
    Platform p;
    CFN_ASSIGN_OR_RETURN(p.os, pf.string("os"));
    CFN_ASSIGN_OR_RETURN(p.architecture, pf.string("architecture"));
    CFN_TRY(pf.read("variant", p.variant));
    d.platform = std::move(p);
  }
  return d;
}

namespace {

enum class Kind { kUnknown, kManifest, kIndex, kSchema1 };

Kind kind_of_media_type(std::string_view mt) {
  if (mt == kMediaOciManifest || mt == kMediaDockerManifest) {
    return Kind::kManifest;
  }
  if (mt == kMediaOciIndex || mt == kMediaDockerManifestList) {
    return Kind::kIndex;
  }
  if (mt == "application/vnd.docker.distribution.manifest.v1+json" ||
      mt == "application/vnd.docker.distribution.manifest.v1+prettyjws") {
    return Kind::kSchema1;
  }
  return Kind::kUnknown;
}

nlohmann::ordered_json descriptor_json(const Descriptor& d) {
  nlohmann::ordered_json j;
  j["mediaType"] = d.media_type;
  j["digest"] = d.digest;
  j["size"] = d.size;
  if (!d.urls.empty()) {
    j["urls"] = d.urls;
  }
  if (!d.annotations.empty()) {
    j["annotations"] = d.annotations;
  }
  if (d.platform) {
    nlohmann::ordered_json p;
    p["architecture"] = d.platform->architecture;
    p["os"] = d.platform->os;
    if (!d.platform->variant.empty()) {
      p["variant"] = d.platform->variant;
    }
    j["platform"] = std::move(p);
  }
  return j;
}

base::Result<std::variant<Manifest, Index>> parse_checked(std::string_view text,
                                                          std::string_view content_type) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return base::errorf(EINVAL, "manifest: malformed JSON");
  }
  if (!j.is_object()) {
    return base::errorf(EINVAL, "manifest: not a JSON object");
  }
  const auto sv = j.find("schemaVersion");
  if (sv == j.end() || !sv->is_number_integer()) {
    return base::errorf(EINVAL, "manifest: missing or non-integer \"schemaVersion\"");
  }
  const auto schema = sv->get<std::int64_t>();
  if (schema == 1) {
    return base::errorf(EOPNOTSUPP, "manifest: Docker schema 1 manifests are not supported");
  }
  if (schema != 2) {
    return base::errorf(EINVAL, "manifest: unsupported schemaVersion {}", schema);
  }
  const base::JsonFields top(j, "manifest", /*null_is_absent=*/true);
  std::string media_type;
  CFN_TRY(top.read("mediaType", media_type));

  Kind kind = kind_of_media_type(strip_params(content_type));
  const Kind json_kind = kind_of_media_type(media_type);
  if (kind == Kind::kSchema1 || json_kind == Kind::kSchema1) {
    return base::errorf(EOPNOTSUPP, "manifest: Docker schema 1 manifests are not supported");
  }
  if (!media_type.empty() && json_kind == Kind::kUnknown) {
    return base::errorf(EINVAL, "manifest: unknown mediaType '{}'", media_type.substr(0, 100));
  }
  if (kind != Kind::kUnknown && json_kind != Kind::kUnknown && kind != json_kind) {
    return base::errorf(EINVAL, "manifest: Content-Type '{}' disagrees with mediaType '{}'",
                        strip_params(content_type), media_type);
  }
  if (kind == Kind::kUnknown) {
    kind = json_kind;
  }
  if (kind == Kind::kUnknown) {
    const bool has_manifests = j.contains("manifests");
    const bool has_layers = j.contains("layers") || j.contains("config");
    if (has_manifests == has_layers) {
      return base::errorf(EINVAL, "manifest: neither a manifest nor an index");
    }
    kind = has_manifests ? Kind::kIndex : Kind::kManifest;
  }

  if (kind == Kind::kIndex) {
    Index idx;
    idx.schema_version = 2;
    idx.media_type = std::move(media_type);
    const auto ms = j.find("manifests");
    if (ms == j.end() || !ms->is_array()) {
      return base::errorf(EINVAL, "index: missing \"manifests\" array");
    }
    if (ms->size() > kMaxEntries) {
      return base::errorf(EINVAL, "index: more than {} manifests", kMaxEntries);
    }
    for (std::size_t i = 0; i < ms->size(); ++i) {
      CFN_ASSIGN_OR_RETURN(Descriptor d,
                           parse_descriptor((*ms)[i], fmt::format("index: manifests[{}]", i)));
      idx.manifests.push_back(std::move(d));
    }
    CFN_ASSIGN_OR_RETURN(idx.annotations,
                         base::JsonFields(j, "index", true).string_map("annotations"));
    return idx;
  }

  Manifest m;
  m.schema_version = 2;
  m.media_type = std::move(media_type);
  const auto cfg = j.find("config");
  if (cfg == j.end()) {
    return base::errorf(EINVAL, "manifest: missing \"config\"");
  }
  CFN_ASSIGN_OR_RETURN(m.config, parse_descriptor(*cfg, "manifest: config"));
  const auto layers = j.find("layers");
  if (layers == j.end() || !layers->is_array()) {
    return base::errorf(EINVAL, "manifest: missing \"layers\" array");
  }
  if (layers->size() > kMaxEntries) {
    return base::errorf(EINVAL, "manifest: more than {} layers", kMaxEntries);
  }
  for (std::size_t i = 0; i < layers->size(); ++i) {
    CFN_ASSIGN_OR_RETURN(Descriptor d,
                         parse_descriptor((*layers)[i], fmt::format("manifest: layers[{}]", i)));
    m.layers.push_back(std::move(d));
  }
  CFN_ASSIGN_OR_RETURN(m.annotations, top.string_map("annotations"));
  return m;
}

}  // namespace

std::string manifest_accept_header() {
  return fmt::format("{}, {}, {}, {}", kMediaOciManifest, kMediaOciIndex, kMediaDockerManifest,
                     kMediaDockerManifestList);
}

bool is_valid_digest(std::string_view d) {
  constexpr std::string_view kPrefix = "sha256:";
  if (d.size() != kPrefix.size() + 64 || !d.starts_with(kPrefix)) {
    return false;
  }
  return std::all_of(d.begin() + kPrefix.size(), d.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

base::Result<std::variant<Manifest, Index>> parse_manifest(base::Bytes body,
                                                           std::string_view content_type) {
  if (body.size() > kMaxManifestBytes) {
    return base::errorf(EMSGSIZE, "manifest: {} bytes, over the {} byte limit", body.size(),
                        kMaxManifestBytes);
  }
  const std::string_view text = base::as_chars(body);
  if (!nesting_ok(text)) {
    return base::errorf(EINVAL, "manifest: JSON nested deeper than {}", kMaxDepth);
  }
  try {
    return parse_checked(text, content_type);
  } catch (const std::exception& e) {
    // get<> on a checked type cannot throw, but allocation or a library surprise
    // must not escape.
    return base::errorf(EINVAL, "manifest: {}", e.what());
  }
}

base::Result<Descriptor> select_platform(const Index& index, const Platform& p) {
  std::string have;
  for (const Descriptor& d : index.manifests) {
    if (!d.platform) {
      continue;
    }
    const Platform& dp = *d.platform;
    if (!have.empty()) {
      have += ", ";
    }
    have += dp.os + "/" + dp.architecture + (dp.variant.empty() ? "" : "/" + dp.variant);
    if (dp.os != p.os || dp.architecture != p.architecture) {
      continue;
    }
    if (!p.variant.empty() && !dp.variant.empty() && dp.variant != p.variant) {
      continue;
    }
    if (kind_of_media_type(d.media_type) != Kind::kManifest) {
      continue;
    }
    return d;
  }
  return base::errorf(ENOENT, "no manifest for platform {}/{}{} in the index (it has: {})", p.os,
                      p.architecture, p.variant.empty() ? "" : "/" + p.variant,
                      have.empty() ? "no platforms" : have);
}

std::string serialize(const Manifest& m) {
  nlohmann::ordered_json j;
  j["schemaVersion"] = m.schema_version;
  if (!m.media_type.empty()) {
    j["mediaType"] = m.media_type;
  }
  j["config"] = descriptor_json(m.config);
  j["layers"] = nlohmann::ordered_json::array();
  for (const Descriptor& d : m.layers) {
    j["layers"].push_back(descriptor_json(d));
  }
  if (!m.annotations.empty()) {
    j["annotations"] = m.annotations;
  }
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::string serialize(const Index& i) {
  nlohmann::ordered_json j;
  j["schemaVersion"] = i.schema_version;
  if (!i.media_type.empty()) {
    j["mediaType"] = i.media_type;
  }
  j["manifests"] = nlohmann::ordered_json::array();
  for (const Descriptor& d : i.manifests) {
    j["manifests"].push_back(descriptor_json(d));
  }
  if (!i.annotations.empty()) {
    j["annotations"] = i.annotations;
  }
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::string host_architecture() {
#if defined(__x86_64__)
  return "amd64";
#elif defined(__aarch64__)
  return "arm64";
#elif defined(__i386__)
  return "386";
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  return "ppc64le";
#elif defined(__s390x__)
  return "s390x";
#elif defined(__riscv) && __riscv_xlen == 64
  return "riscv64";
#else
  return "";
#endif
}

}  // namespace registry
