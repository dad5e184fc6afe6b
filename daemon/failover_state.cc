// SPDX-License-Identifier: Apache-2.0
#include "daemon/failover_state.h"

#include <sys/stat.h>

#include <cerrno>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "base/file.h"
#include "base/json_fields.h"

namespace cfnd {
namespace {

using nlohmann::json;

// Strings that become paths and mount options: no NUL; the required ones non-empty.
constexpr base::StringRule kRequired{.non_empty = true, .no_nul = true};
constexpr base::StringRule kOptional{.non_empty = false, .no_nul = true};

}  // namespace

bool operator==(const PersistedImage& a, const PersistedImage& b) {
  return a.mountpoint == b.mountpoint && a.fsid == b.fsid && a.domain_id == b.domain_id &&
         a.bootstrap == b.bootstrap && a.blob_dir == b.blob_dir && a.reference == b.reference &&
         a.manifest_digest == b.manifest_digest &&
         registry_options_json(a.registry) == registry_options_json(b.registry);
}

std::string serialize_state(const std::vector<PersistedImage>& images) {
  json list = json::array();
  for (const auto& im : images) {
    json j{{"mountpoint", im.mountpoint},
           {"fsid", im.fsid},
           {"domain_id", im.domain_id},
           {"bootstrap", im.bootstrap}};
    if (im.reference.empty()) {
      j["blob_dir"] = im.blob_dir;
    } else {
      j["reference"] = im.reference;
      j["manifest_digest"] = im.manifest_digest;
      j["registry"] = json::parse(registry_options_json(im.registry));
    }
    list.push_back(std::move(j));
  }
  return json{{"version", kStateVersion}, {"images", list}}.dump() + "\n";
}

base::Result<std::vector<PersistedImage>> parse_state(std::string_view text) {
  CFN_ASSIGN_OR_RETURN(auto j, base::parse_json_object(text, "state"));
  if (!j.contains("version") || !j["version"].is_number_integer()) {
    return base::make_error(EINVAL, "state: missing integer \"version\"");
  }
  if (j["version"].get<std::int64_t>() != kStateVersion) {
    return base::errorf(EINVAL, "state: version {} (this daemon reads {})", j["version"].dump(),
                        kStateVersion);
  }
  if (!j.contains("images") || !j["images"].is_array()) {
    return base::make_error(EINVAL, "state: \"images\" must be an array");
  }
  std::vector<PersistedImage> out;
  std::set<std::string> mountpoints;
  std::size_t index = 0;
  for (const auto& e : j["images"]) {
    if (!e.is_object()) {
      return base::errorf(EINVAL, "state: image {} is not an object", index);
    }
    static constexpr std::string_view kKeys[] = {"mountpoint",      "fsid",     "domain_id",
                                                 "bootstrap",       "blob_dir", "reference",
                                                 "manifest_digest", "registry"};
    const base::JsonFields f(e, fmt::format("state: image {}", index));
    CFN_TRY(f.only_keys(kKeys));
    PersistedImage im;
    CFN_ASSIGN_OR_RETURN(im.mountpoint, f.string("mountpoint", kRequired));
    CFN_ASSIGN_OR_RETURN(im.fsid, f.string("fsid", kRequired));
    CFN_TRY(f.read("domain_id", im.domain_id, kOptional));
    CFN_ASSIGN_OR_RETURN(im.bootstrap, f.string("bootstrap", kRequired));
    const bool local = e.contains("blob_dir");
    const bool remote = e.contains("reference");
    if (local == remote) {
      return base::errorf(EINVAL, "state: image {}: needs exactly one of blob_dir and reference",
                          index);
    }
    if (local) {
      CFN_ASSIGN_OR_RETURN(im.blob_dir, f.string("blob_dir", kRequired));
      if (e.contains("manifest_digest") || e.contains("registry")) {
        return base::errorf(EINVAL, "state: image {}: a local image has no registry keys", index);
      }
    } else {
      CFN_ASSIGN_OR_RETURN(im.reference, f.string("reference", kRequired));
      CFN_ASSIGN_OR_RETURN(im.manifest_digest, f.string("manifest_digest", kRequired));
      if (!e.contains("registry")) {
        return base::errorf(EINVAL, "state: image {}: missing \"registry\"", index);
      }
      auto r = parse_registry_options(e["registry"].dump());
      if (!r) {
        return base::Unexpected(r.error().wrap(fmt::format("state: image {}", index)));
      }
      im.registry = std::move(*r);
    }
    if (!mountpoints.insert(im.mountpoint).second) {
      return base::errorf(EINVAL, "state: image {}: mount point {} listed twice", index,
                          im.mountpoint);
    }
    out.push_back(std::move(im));
    ++index;
  }
  return out;
}

std::string state_path(const std::string& cache_dir) {
  return cache_dir + "/state/cachefiles.json";
}

base::Status save_state(const std::string& path, const std::vector<PersistedImage>& images) {
  const std::string dir = std::filesystem::path(path).parent_path();
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return base::errno_error("mkdir " + dir);
  }
  const std::string text = serialize_state(images);
  auto st = base::write_file_atomic(path, base::as_bytes(text), 0600);
  if (!st) {
    return base::Unexpected(st.error().wrap("state file " + path));
  }
  return {};
}

base::Result<std::vector<PersistedImage>> load_state(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 && errno == ENOENT) {
    return std::vector<PersistedImage>{};
  }
  CFN_ASSIGN_OR_RETURN(auto bytes, base::read_file(path));
  auto r = parse_state(base::as_chars(bytes));
  if (!r) {
    return base::Unexpected(r.error().wrap(path));
  }
  return r;
}

}  // namespace cfnd
