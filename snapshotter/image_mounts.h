// SPDX-License-Identifier: Apache-2.0
// Nydus image mounts shared by the snapshots that stand on them: one EROFS mount per image
// (keyed by the id of its bootstrap snapshot) at ROOT/mnt/<id>[-<generation>], made by the
// daemon through its control API, and a reference count of the active snapshots and views
// using it, kept in SQLite (ROOT/nydus.db) so it survives restarts.
//
//   acquire(key, image): the image's mount point, binding the image first when no mount of
//     it is live. A mount is live when the daemon lists it: after a fanotify or FUSE daemon
//     restarted (its binds are gone) the image is bound again at a new generation's mount
//     point, and the log says how many snapshots lost the old one; cachefiles failover keeps
//     the daemon's binds, so the mount stays.
//   release(key): drops key's use; the last one queues the unbind to a background thread
//     (a slow unmount never holds up other images; acquire of that one image waits for it).
//
// Crash safety: the image row is written before the bind, the user row after it; at open,
// user rows of snapshots that no longer exist are dropped and images without users are
// unbound in the background.
//
// Thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/result.h"
#include "control/api.h"
#include "snapshotter/nydus.h"

struct sqlite3;

namespace snapshotter {

// The daemon as the mounts see it (control/client.h behind it; tests give a fake).
class Daemon {
 public:
  virtual ~Daemon() = default;
  // Make sure a daemon answers (start one when none does).
  [[nodiscard]] virtual base::Status ensure() = 0;
  [[nodiscard]] virtual base::Result<control::ImageInfo> bind(const control::BindRequest& r) = 0;
  [[nodiscard]] virtual base::Status unbind(const control::UnbindRequest& r) = 0;
  [[nodiscard]] virtual base::Result<std::vector<control::ImageInfo>> list() = 0;
};

struct MountPolicy {
  std::string frontend;   // bind's "frontend": "" (the daemon's default), cachefiles, ...
  std::string domain_id;  // cachefiles only
  std::optional<control::RegistryOverrides> registry;
  std::vector<std::string> mirror_urls;  // mirrors of each image's own registry host
  std::string auth;  // base64 "user:password" for each image's registry; never logged
};

// A snapshot's use of an image mount.
struct ImageUse {
  int64_t bootstrap_id = 0;
  std::string mountpoint;
};

class ImageMounts {
 public:
  // alive(key): whether key is an active snapshot or view (the store's word), asked at open.
  [[nodiscard]] static base::Result<std::unique_ptr<ImageMounts>> open(
      const std::string& root, std::shared_ptr<Daemon> daemon, MountPolicy policy,
      const std::function<bool(const std::string&)>& alive);
  ~ImageMounts();
  ImageMounts(const ImageMounts&) = delete;
  ImageMounts& operator=(const ImageMounts&) = delete;

  // The mount point of the image for key. bootstrap_path: the image's bootstrap as
  // unpacked (bound with the reference when it is a regular file). Errors: the daemon's (start,
  // bind), EIO (SQLite).
  [[nodiscard]] base::Result<std::string> acquire(const std::string& key, const NydusImage& image,
                                                  const std::string& bootstrap_path);
  // key's use, or nullopt when key uses no image.
  [[nodiscard]] base::Result<std::optional<ImageUse>> use_of(const std::string& key);
  // Drop key's use (nothing when it has none).
  void release(const std::string& key);
  // The number of users of an image (tests).
  [[nodiscard]] int users(int64_t bootstrap_id);
  // Wait until the background thread has done every unbind queued (tests, shutdown).
  void drain();

 private:
  ImageMounts(std::string root, sqlite3* db, std::shared_ptr<Daemon> daemon, MountPolicy policy);
  enum class State { kBinding, kBound, kUnbinding };
  struct Image {
    State state = State::kBound;
    std::string mountpoint;
  };
  [[nodiscard]] base::Status exec(const std::string& sql);
  [[nodiscard]] base::Status run(const char* sql, const std::vector<std::string>& args);
  [[nodiscard]] base::Result<std::vector<std::vector<std::string>>> query(
      const char* sql, const std::vector<std::string>& args);
  [[nodiscard]] base::Result<bool> live(const std::string& mountpoint);
  [[nodiscard]] base::Result<std::string> bind_new(int64_t id, const NydusImage& image,
                                                   const std::string& bootstrap_path);
  void release_locked(const std::string& key, std::unique_lock<std::mutex>& lk);
  void unbind_loop();

  std::string root_;
  sqlite3* db_;
  std::shared_ptr<Daemon> daemon_;  // shared with the service's shutdown path
  MountPolicy policy_;

  std::mutex mu_;  // db_, images_, queue_
  std::condition_variable cv_;
  std::map<int64_t, Image> images_;
  std::deque<int64_t> queue_;
  int in_flight_ = 0;
  bool stop_ = false;
  std::thread worker_;
};

}  // namespace snapshotter
