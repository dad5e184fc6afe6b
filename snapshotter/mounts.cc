// SPDX-License-Identifier: Apache-2.0
#include "snapshotter/mounts.h"

#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace snapshotter {

std::string fs_path(const std::string& root, int64_t id) {
  return fmt::format("{}/snapshots/{}/fs", root, id);
}

std::string work_path(const std::string& root, int64_t id) {
  return fmt::format("{}/snapshots/{}/work", root, id);
}

namespace {

// The overlay of snapshot id: its upper and work dirs when active, then lowerdir in the
// order given (the nearest parent first).
Mount overlay(const std::string& root, Kind kind, int64_t id,
              const std::vector<std::string>& lowers, const MountFlags& flags) {
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
  m.options.push_back(fmt::format("lowerdir={}", fmt::join(lowers, ":")));
  return m;
}

std::vector<std::string> fs_paths(const std::string& root, std::span<const int64_t> ids) {
  std::vector<std::string> out;
  out.reserve(ids.size() + 1);
  for (int64_t p : ids) {
    out.push_back(fs_path(root, p));
  }
  return out;
}

}  // namespace

std::vector<Mount> build_mounts(const std::string& root, Kind kind, int64_t id,
                                std::span<const int64_t> parent_ids, const MountFlags& flags) {
  if (parent_ids.empty()) {
    return {Mount{"bind", fs_path(root, id), {kind == Kind::kView ? "ro" : "rw", "rbind"}}};
  }
  if (kind != Kind::kActive && parent_ids.size() == 1) {
    return {Mount{"bind", fs_path(root, parent_ids[0]), {"ro", "rbind"}}};
  }
  return {overlay(root, kind, id, fs_paths(root, parent_ids), flags)};
}

std::vector<Mount> build_image_mounts(const std::string& root, Kind kind, int64_t id,
                                      std::span<const int64_t> upper_lowers,
                                      const std::string& image_mount, const MountFlags& flags) {
  if (kind != Kind::kActive && upper_lowers.empty()) {
    return {Mount{"bind", image_mount, {"ro", "rbind"}}};
  }
  auto lowers = fs_paths(root, upper_lowers);
  lowers.push_back(image_mount);
  return {overlay(root, kind, id, lowers, flags)};
}

bool overlay_has_index() {
  return ::access("/sys/module/overlay/parameters/index", F_OK) == 0;
}

}  // namespace snapshotter
