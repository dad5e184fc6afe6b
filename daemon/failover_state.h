// SPDX-License-Identifier: Apache-2.0
// What a restarted daemon needs to serve the dead daemon's mounts after a failover, one
// file per front end that fails over. cachefiles: the images bound through it (fsid, domain_id,
// bootstrap, where their blobs come from, mount point). The daemon rewrites the state file
// atomically (a temporary, fsync, rename) after every cachefiles bind and unbind; a daemon that is
// handed a live /dev/cachefiles fd registers these images again (without mounting:
// the mounts are still there) before it writes "restore". fanotify: the same list (no
// fsid) for the images mounted through the fanotify group, re-bound (marks and blob
// map, no mount) when the group is handed over.
//
// FUSE (state/fuse.json): the images mounted through FUSE whose /dev/fuse is kept in the
// fd store / fd holder, each with that fd's name, the mount's device number and the
// INIT parameters (a successor resumes the session without an INIT). Written before the
// mount (no dev, no init yet), again once INIT is answered and once mounted.
//
// Format: one JSON object, {"version":1,"images":[{...}, ...]}; each image has
// "mountpoint", "fsid", "bootstrap" (absolute paths or names, non-empty), "domain_id"
// (may be empty) and either "blob_dir" (a local image) or "reference" +
// "manifest_digest" + "registry" (the RegistryOptions object the bind used). FUSE images
// have no fsid and a "fuse" object: {"fd_name", "dev", "init": {"kernel_minor", "minor",
// "flags", "max_readahead", "max_write", "max_pages", "time_gran"}} ("init" absent until
// INIT was answered).
//
// fanotify images also have a "watch" object once mounted: {"wd", "dev", "ino",
// "lingering"}: the inotify watch (its number in the inotify instance kept in the fd
// store / fd holder as "fanotify-unmount") on the root of the image's EROFS superblock
// (device number and root inode as stat(2) gives them), and whether the daemon has
// unmounted it while that superblock lives on (a bind mount, another mount namespace, an
// open file). A lingering image's mount point is only where it was mounted (logs); it
// may be listed again, by a later mount there or by another lingering image.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/file.h"
#include "base/result.h"
#include "daemon/config.h"
#include "daemon/fuse_wire.h"

namespace cfnd {

inline constexpr int kStateVersion = 1;

// A FUSE session a successor can take over.
struct PersistedFuse {
  std::string fd_name;                       // its /dev/fuse in the fd store / fd holder
  std::uint64_t dev = 0;                     // the mount's device number; 0 before the mount
  std::optional<fusewire::InitParams> init;  // absent until INIT was answered

  bool operator==(const PersistedFuse&) const = default;
};

// fanotify: the watch on an image's superblock (see the format above).
struct PersistedWatch {
  int wd = -1;             // in the kept inotify instance; >= 1
  std::uint64_t dev = 0;   // st_dev of the mount's root
  std::uint64_t ino = 0;   // st_ino of the mount's root
  bool lingering = false;  // unmounted by the daemon, superblock alive

  bool operator==(const PersistedWatch&) const = default;
};

struct PersistedImage {
  std::string mountpoint;
  std::string fsid;
  std::string domain_id;  // empty: the fsid is its own domain
  std::string bootstrap;  // a complete local file
  std::string blob_dir;   // a local image; empty for a registry image
  std::string reference;  // a registry image; empty for a local one
  std::string manifest_digest;
  RegistryOptions registry;             // the options the bind used (registry images)
  std::optional<PersistedFuse> fuse;    // FUSE images only
  std::optional<PersistedWatch> watch;  // fanotify images only, once mounted
};

// Equal fields.
[[nodiscard]] bool operator==(const PersistedImage& a, const PersistedImage& b);

// Pure. The state as JSON text (canonical: equal inputs give equal texts). Errors:
// EINVAL naming the first string that is not valid UTF-8 (binds refuse such paths;
// this keeps an exception out of the daemon should one get here anyway).
[[nodiscard]] base::Result<std::string> serialize_state(const std::vector<PersistedImage>& images);

// One state file's text, rewritten after each bind and unbind: remembers each image's
// entry (its JSON object) between writes, so a write serializes only the images that are
// new or changed since the last one. Without it, a removal of many images serialized every
// image still bound at each unbind: 4-5 ms of CPU per unbind with 200 bound (bench/snapgc).
// The text is serialize_state(images)'s. Not thread-safe: one per state file, used under
// the lock that orders its writes.
class StateText {
 public:
  [[nodiscard]] base::Result<std::string> text(const std::vector<PersistedImage>& images);
  // Entries taken from the last write, in all (tests).
  [[nodiscard]] std::uint64_t reused() const { return reused_; }

 private:
  struct Entry {
    PersistedImage image;
    std::string text;
  };
  std::multimap<std::string, Entry> entries_;  // by mount point (lingering ones may share one)
  std::uint64_t reused_ = 0;
};

// Pure. Parse a state text. Errors (EINVAL, naming the image index and the key): not a
// JSON object, a version other than kStateVersion, a missing or mistyped key, an empty
// mountpoint/bootstrap, an empty fsid (cachefiles' state only: frontend), an image with
// both or neither of blob_dir and reference, a mount point listed twice, bad registry
// options, a "fuse" object in another front end's state or missing from FUSE's, a bad
// fd name (1..64 of [A-Za-z0-9._-]) or INIT value, a "watch" outside fanotify's state or
// with a bad value (wd below 1).
[[nodiscard]] base::Result<std::vector<PersistedImage>> parse_state(
    std::string_view text, Frontend frontend = Frontend::kCachefiles);

// <cache_dir>/state/<front end name>.json: cachefiles.json, fanotify.json,
// fuse.json.
[[nodiscard]] std::string state_path(const std::string& cache_dir,
                                     Frontend frontend = Frontend::kCachefiles);

// Write the state file (its directory made 0700 when missing) through a temporary and a
// rename (fsynced unless durability says otherwise). Errors name the path.
[[nodiscard]] base::Status save_state(const std::string& path,
                                      const std::vector<PersistedImage>& images,
                                      base::Durability durability = base::Durability::kSynced);
// The same, its text made by cache (the state file's own: see StateText).
[[nodiscard]] base::Status save_state(const std::string& path,
                                      const std::vector<PersistedImage>& images,
                                      base::Durability durability, StateText& cache);
// Read and parse the state file; an absent file is an empty state. Errors name the path.
[[nodiscard]] base::Result<std::vector<PersistedImage>> load_state(
    const std::string& path, Frontend frontend = Frontend::kCachefiles);

}  // namespace cfnd
