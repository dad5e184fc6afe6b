// SPDX-License-Identifier: Apache-2.0
#include "daemon/failover_state.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
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

json fuse_json(const PersistedFuse& f) {
  json j{{"fd_name", f.fd_name}, {"dev", f.dev}};
  if (f.init) {
    const auto& i = *f.init;
    j["init"] = json{
        {"kernel_minor", i.kernel_minor},   {"minor", i.minor},         {"flags", i.flags},
        {"max_readahead", i.max_readahead}, {"max_write", i.max_write}, {"max_pages", i.max_pages},
        {"time_gran", i.time_gran}};
  }
  return j;
}

bool good_fd_name(std::string_view n) {
  return !n.empty() && n.size() <= 64 && std::all_of(n.begin(), n.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '_' || c == '-';
  });
}

base::Result<PersistedFuse> parse_fuse(const json& j, const std::string& where) {
  if (!j.is_object()) {
    return base::errorf(EINVAL, "{}: \"fuse\" is not an object", where);
  }
  static constexpr std::string_view kKeys[] = {"fd_name", "dev", "init"};
  const base::JsonFields f(j, where + ": fuse");
  CFN_TRY(f.only_keys(kKeys));
  PersistedFuse out;
  CFN_ASSIGN_OR_RETURN(out.fd_name, f.string("fd_name", kRequired));
  if (!good_fd_name(out.fd_name)) {
    return f.error("fd_name must be 1..64 of [A-Za-z0-9._-]");
  }
  CFN_TRY(f.read("dev", out.dev, 0, UINT64_MAX));
  if (const json* init = f.find("init")) {
    if (!init->is_object()) {
      return f.error("\"init\" is not an object");
    }
    static constexpr std::string_view kInitKeys[] = {
        "kernel_minor", "minor", "flags", "max_readahead", "max_write", "max_pages", "time_gran"};
    const base::JsonFields g(*init, where + ": fuse: init");
    CFN_TRY(g.only_keys(kInitKeys));
    fusewire::InitParams p;
    for (std::string_view k : kInitKeys) {
      if (!g.has(k)) {
        return g.error(fmt::format("missing \"{}\"", k));
      }
    }
    CFN_TRY(g.read("kernel_minor", p.kernel_minor, 12, UINT32_MAX));
    CFN_TRY(g.read("minor", p.minor, 12, fusewire::kOurMinor));
    CFN_TRY(g.read("flags", p.flags, 0, UINT64_MAX));
    CFN_TRY(g.read("max_readahead", p.max_readahead, 0, UINT32_MAX));
    CFN_TRY(g.read("max_write", p.max_write, 0, UINT32_MAX));
    CFN_TRY(g.read("max_pages", p.max_pages, 0, UINT16_MAX));
    CFN_TRY(g.read("time_gran", p.time_gran, 0, 1000000000));
    if (p.minor > p.kernel_minor) {
      return g.error("minor above the kernel's");
    }
    out.init = p;
  }
  return out;
}

base::Result<PersistedWatch> parse_watch(const json& j, const std::string& where) {
  if (!j.is_object()) {
    return base::errorf(EINVAL, "{}: \"watch\" is not an object", where);
  }
  static constexpr std::string_view kKeys[] = {"wd", "dev", "ino", "lingering"};
  const base::JsonFields f(j, where + ": watch");
  CFN_TRY(f.only_keys(kKeys));
  for (std::string_view k : kKeys) {
    if (!f.has(k)) {
      return f.error(fmt::format("missing \"{}\"", k));
    }
  }
  PersistedWatch w;
  CFN_TRY(f.read("wd", w.wd, 1, INT32_MAX));
  CFN_TRY(f.read("dev", w.dev, 0, UINT64_MAX));
  CFN_TRY(f.read("ino", w.ino, 0, UINT64_MAX));
  CFN_TRY(f.read("lingering", w.lingering));
  return w;
}

}  // namespace

bool operator==(const PersistedImage& a, const PersistedImage& b) {
  return a.mountpoint == b.mountpoint && a.fsid == b.fsid && a.domain_id == b.domain_id &&
         a.bootstrap == b.bootstrap && a.blob_dir == b.blob_dir && a.reference == b.reference &&
         a.manifest_digest == b.manifest_digest && a.registry == b.registry && a.fuse == b.fuse &&
         a.watch == b.watch;
}

base::Result<std::string> serialize_image(const PersistedImage& im, std::size_t index) {
  json j{{"mountpoint", im.mountpoint},
         {"fsid", im.fsid},
         {"domain_id", im.domain_id},
         {"bootstrap", im.bootstrap}};
  if (im.reference.empty()) {
    j["blob_dir"] = im.blob_dir;
  } else {
    j["reference"] = im.reference;
    j["manifest_digest"] = im.manifest_digest;
    j["registry"] = registry_options_object(im.registry);
  }
  if (im.fuse) {
    j["fuse"] = fuse_json(*im.fuse);
  }
  if (im.watch) {
    j["watch"] = json{{"wd", im.watch->wd},
                      {"dev", im.watch->dev},
                      {"ino", im.watch->ino},
                      {"lingering", im.watch->lingering}};
  }
  auto text = base::json_text(j, "");
  if (!text) {  // "<member> is not valid UTF-8", as a whole state's text names it
    return base::errorf(EINVAL, "state: images[{}].{}", index, text.error().message);
  }
  return text;
}

std::string join_state(const std::vector<const std::string*>& entries) {
  // What json{{"version", kStateVersion}, {"images", [...]}}.dump() gives: nlohmann orders
  // object keys, so "images" comes first.
  std::size_t n = 32;
  for (const std::string* e : entries) {
    n += e->size() + 1;
  }
  std::string text;
  text.reserve(n);
  text += "{\"images\":[";
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (i != 0) {
      text += ',';
    }
    text += *entries[i];
  }
  text += fmt::format("],\"version\":{}}}\n", kStateVersion);
  return text;
}

base::Result<std::string> serialize_state(const std::vector<PersistedImage>& images) {
  StateText fresh;  // every entry serialized anew
  return fresh.text(images);
}

base::Result<std::string> StateText::text(const std::vector<PersistedImage>& images) {
  std::multimap<std::string, Entry> next;
  std::vector<const std::string*> refs;
  refs.reserve(images.size());
  for (const auto& im : images) {
    const std::string* text = nullptr;
    for (auto [it, end] = entries_.equal_range(im.mountpoint); it != end; ++it) {
      if (it->second.image == im) {
        auto moved = next.emplace(im.mountpoint, std::move(it->second));
        entries_.erase(it);
        text = &moved->second.text;
        ++reused_;
        break;
      }
    }
    if (text == nullptr) {
      CFN_ASSIGN_OR_RETURN(std::string t, serialize_image(im, refs.size()));
      text = &next.emplace(im.mountpoint, Entry{im, std::move(t)})->second.text;
    }
    refs.push_back(text);
  }
  entries_ = std::move(next);  // those no longer listed are forgotten
  return join_state(refs);
}

base::Result<std::vector<PersistedImage>> parse_state(std::string_view text, Frontend frontend) {
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
    static constexpr std::string_view kKeys[] = {
        "mountpoint",      "fsid",     "domain_id", "bootstrap", "blob_dir", "reference",
        "manifest_digest", "registry", "fuse",      "watch"};
    const base::JsonFields f(e, fmt::format("state: image {}", index));
    CFN_TRY(f.only_keys(kKeys));
    PersistedImage im;
    CFN_ASSIGN_OR_RETURN(im.mountpoint, f.string("mountpoint", kRequired));
    if (frontend == Frontend::kCachefiles) {
      CFN_ASSIGN_OR_RETURN(im.fsid, f.string("fsid", kRequired));
    } else {
      CFN_TRY(f.read("fsid", im.fsid, kOptional));
    }
    if (e.contains("fuse") != (frontend == Frontend::kFuse)) {
      return base::errorf(EINVAL, "state: image {}: \"fuse\" {}", index,
                          frontend == Frontend::kFuse ? "missing" : "in another front end's state");
    }
    if (frontend == Frontend::kFuse) {
      CFN_ASSIGN_OR_RETURN(im.fuse, parse_fuse(e["fuse"], fmt::format("state: image {}", index)));
    }
    if (e.contains("watch")) {
      if (frontend != Frontend::kFanotify) {
        return base::errorf(EINVAL, "state: image {}: \"watch\" in another front end's state",
                            index);
      }
      CFN_ASSIGN_OR_RETURN(im.watch,
                           parse_watch(e["watch"], fmt::format("state: image {}", index)));
    }
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
      // Empty when the bind came with its own copy of the bootstrap (the snapshotter's):
      // the daemon then never fetched the manifest.
      CFN_ASSIGN_OR_RETURN(im.manifest_digest, f.string("manifest_digest", kOptional));
      if (!e.contains("registry")) {
        return base::errorf(EINVAL, "state: image {}: missing \"registry\"", index);
      }
      auto r = parse_registry_options(e["registry"].dump());
      if (!r) {
        return base::Unexpected(r.error().wrap(fmt::format("state: image {}", index)));
      }
      im.registry = std::move(*r);
    }
    const bool lingering = im.watch && im.watch->lingering;
    if (!lingering && !mountpoints.insert(im.mountpoint).second) {
      return base::errorf(EINVAL, "state: image {}: mount point {} listed twice", index,
                          im.mountpoint);
    }
    out.push_back(std::move(im));
    ++index;
  }
  return out;
}

std::string state_path(const std::string& cache_dir, Frontend frontend) {
  return fmt::format("{}/state/{}.json", cache_dir, frontend_name(frontend));
}

base::Status save_state(const std::string& path, const std::vector<PersistedImage>& images,
                        base::Durability durability) {
  StateText fresh;
  return save_state(path, images, durability, fresh);
}

base::Status save_state(const std::string& path, const std::vector<PersistedImage>& images,
                        base::Durability durability, StateText& cache) {
  const std::string dir = std::filesystem::path(path).parent_path();
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return base::errno_error("mkdir " + dir);
  }
  CFN_ASSIGN_OR_RETURN(const std::string text, cache.text(images));
  auto st = base::write_file_atomic(path, base::as_bytes(text), 0600, durability);
  if (!st) {
    return base::Unexpected(st.error().wrap("state file " + path));
  }
  return {};
}

base::Result<std::vector<PersistedImage>> load_state(const std::string& path, Frontend frontend) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 && errno == ENOENT) {
    return std::vector<PersistedImage>{};
  }
  CFN_ASSIGN_OR_RETURN(auto bytes, base::read_file(path));
  auto r = parse_state(base::as_chars(bytes), frontend);
  if (!r) {
    return base::Unexpected(r.error().wrap(path));
  }
  return r;
}

}  // namespace cfnd
