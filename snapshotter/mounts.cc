// SPDX-License-Identifier: Apache-2.0
#include "snapshotter/mounts.h"

#include <unistd.h>

#include <fmt/format.h>

namespace snapshotter {

std::string fs_path(const std::string& root, int64_t id) {
  return fmt::format("{}/snapshots/{}/fs", root, id);
}

std::string work_path(const std::string& root, int64_t id) {
  return fmt::format("{}/snapshots/{}/work", root, id);
}

std::vector<Mount> build_mounts(const std::string& root, Kind kind, int64_t id,
                                std::span<const int64_t> parent_ids, const MountFlags& flags) {
  if (parent_ids.empty()) {
    return {Mount{"bind", fs_path(root, id), {kind == Kind::kView ? "ro" : "rw", "rbind"}}};
  }
  if (kind != Kind::kActive && parent_ids.size() == 1) {
    return {Mount{"bind", fs_path(root, parent_ids[0]), {"ro", "rbind"}}};
  }
  Mount m{"overlay", "overlay", {}};
  if (flags.index_off) {
    m.options.emplace_back("index=off");
  }
  if (kind == Kind::kActive) {
    if (flags.volatile_) {
      m.options.emplace_back("volatile");
    }
    m.options.push_back("workdir=" + work_path(root, id));
    m.options.push_back("upperdir=" + fs_path(root, id));
  }
  std::string lower = "lowerdir=";
  for (size_t i = 0; i < parent_ids.size(); ++i) {
    if (i > 0) {
      lower.push_back(':');
    }
    lower += fs_path(root, parent_ids[i]);
  }
  m.options.push_back(std::move(lower));
  return {std::move(m)};
}

std::vector<Mount> build_image_mounts(const std::string& root, Kind kind, int64_t id,
                                      std::span<const int64_t> upper_lowers,
                                      const std::string& image_mount, const MountFlags& flags) {
  if (kind != Kind::kActive && upper_lowers.empty()) {
    return {Mount{"bind", image_mount, {"ro", "rbind"}}};
  }
  Mount m{"overlay", "overlay", {}};
  if (flags.index_off) {
    m.options.emplace_back("index=off");
  }
  if (kind == Kind::kActive) {
    if (flags.volatile_) {
      m.options.emplace_back("volatile");
    }
    m.options.push_back("workdir=" + work_path(root, id));
    m.options.push_back("upperdir=" + fs_path(root, id));
  }
  std::string lower = "lowerdir=";
  for (int64_t p : upper_lowers) {
    lower += fs_path(root, p);
    lower.push_back(':');
  }
  lower += image_mount;
  m.options.push_back(std::move(lower));
  return {std::move(m)};
}

bool overlay_has_index() {
  return ::access("/sys/module/overlay/parameters/index", F_OK) == 0;
}

}  // namespace snapshotter
