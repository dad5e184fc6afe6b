// SPDX-License-Identifier: Apache-2.0
// What a restarted daemon needs to answer the kernel's re-OPENs after a failover: the
// images bound through the cachefiles front end (fsid, domain_id, bootstrap, where their
// blobs come from, mount point). The daemon rewrites the state file atomically (a
// temporary, fsync, rename) after every cachefiles bind and unbind; a daemon that is
// handed a live /dev/cachefiles fd registers these images again (without mounting:
// the mounts are still there) before it writes "restore".
//
// Format: one JSON object, {"version":1,"images":[{...}, ...]}; each image has
// "mountpoint", "fsid", "bootstrap" (absolute paths or names, non-empty), "domain_id"
// (may be empty) and either "blob_dir" (a local image) or "reference" +
// "manifest_digest" + "registry" (the RegistryOptions object the bind used).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "daemon/config.h"

namespace cfnd {

inline constexpr int kStateVersion = 1;

struct PersistedImage {
  std::string mountpoint;
  std::string fsid;
  std::string domain_id;  // empty: the fsid is its own domain
  std::string bootstrap;  // a complete local file
  std::string blob_dir;   // a local image; empty for a registry image
  std::string reference;  // a registry image; empty for a local one
  std::string manifest_digest;
  RegistryOptions registry;  // the options the bind used (registry images)
};

// Equal fields; registry options compared by their canonical JSON.
[[nodiscard]] bool operator==(const PersistedImage& a, const PersistedImage& b);

// Pure. The state as JSON text (canonical: equal inputs give equal texts).
[[nodiscard]] std::string serialize_state(const std::vector<PersistedImage>& images);

// Pure. Parse a state text. Errors (EINVAL, naming the image index and the key): not a
// JSON object, a version other than kStateVersion, a missing or mistyped key, an empty
// mountpoint/fsid/bootstrap, an image with both or neither of blob_dir and reference,
// a mount point listed twice, bad registry options.
[[nodiscard]] base::Result<std::vector<PersistedImage>> parse_state(std::string_view text);

// <cache_dir>/state/cachefiles.json.
[[nodiscard]] std::string state_path(const std::string& cache_dir);

// Write the state file (its directory made 0700 when missing) through a temporary and a
// rename. Errors name the path.
[[nodiscard]] base::Status save_state(const std::string& path,
                                      const std::vector<PersistedImage>& images);
// Read and parse the state file; an absent file is an empty state. Errors name the path.
[[nodiscard]] base::Result<std::vector<PersistedImage>> load_state(const std::string& path);

}  // namespace cfnd
