// SPDX-License-Identifier: Apache-2.0
// The mounts a snapshot is used through, shaped like containerd's overlayfs snapshotter
// returns them (containerd mounts them with its own helper, mount.All):
//   - no parent: a bind of the snapshot's fs dir, rw for an active snapshot, ro for a view;
//   - a view on exactly one parent: a ro bind of that parent's fs dir;
//   - otherwise overlay: [index=off] [volatile] workdir= upperdir= (active only) and
//     lowerdir=P1:P2:... nearest parent first.
// Paths are ROOT/snapshots/ID/fs and ROOT/snapshots/ID/work. When the options pass a page
// (128 layers do), containerd's helper chdirs to the lowerdirs' common directory
// (ROOT/snapshots) and passes them relative, so all lowerdirs must share that directory.
//
// Pure: no I/O.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace snapshotter {

enum class Kind : int { kView = 1, kActive = 2, kCommitted = 3 };  // containerd's values

struct Mount {
  std::string type;
  std::string source;
  std::vector<std::string> options;
};

struct MountFlags {
  bool index_off = false;  // the kernel has /sys/module/overlay/parameters/index
  bool volatile_ = false;  // the snapshot carries containerd.io/snapshot/overlay.volatile
};

// The label that asks for a volatile overlay (no syncs on the upper dir).
inline constexpr const char* kVolatileLabel = "containerd.io/snapshot/overlay.volatile";

[[nodiscard]] std::string fs_path(const std::string& root, int64_t id);
[[nodiscard]] std::string work_path(const std::string& root, int64_t id);

// parent_ids: nearest parent first. Committed snapshots have no mounts (callers refuse).
[[nodiscard]] std::vector<Mount> build_mounts(const std::string& root, Kind kind, int64_t id,
                                              std::span<const int64_t> parent_ids,
                                              const MountFlags& flags);

// A snapshot on a nydus image: the image's EROFS mount (image_mount) is the lowest layer,
// under the snapshots upper_lowers names (nearest first). Active: overlay with upperdir and
// workdir; a view: a ro bind of the image mount when nothing is above it, else an overlay
// without upperdir.
[[nodiscard]] std::vector<Mount> build_image_mounts(const std::string& root, Kind kind, int64_t id,
                                                    std::span<const int64_t> upper_lowers,
                                                    const std::string& image_mount,
                                                    const MountFlags& flags);

// Whether this kernel's overlayfs has the index feature (so index=off is passed).
[[nodiscard]] bool overlay_has_index();

}  // namespace snapshotter
