// SPDX-License-Identifier: Apache-2.0
// Nydus image mounts shared by the snapshots that stand on them: one EROFS mount per image
// (keyed by the id of its bootstrap snapshot) at ROOT/mnt/<id>[-<generation>], made by the
// daemon through its control API, kept in SQLite (ROOT/nydus.db) so it survives restarts,
// with the active snapshots and views using it.
//
// Lifetime, as nydus-snapshotter has it: an image stays mounted and bound while its bootstrap
// (committed) snapshot exists, so one container after another (`ctr run --rm`) finds the
// mount warm; Remove of the bootstrap snapshot (`ctr image rm`, containerd's GC) unmounts and
// unbinds it.
//
//   acquire(key, image): the image's mount point, binding the image first when no mount of
//     it is live. A mount is live when the daemon lists it: after a fanotify or FUSE daemon
//     restarted (its binds are gone) the image is bound again at a new generation's mount
//     point, and the log says how many snapshots lost the old one; cachefiles failover keeps
//     the daemon's binds, so the mount stays.
//   release(key): drops key's use; when key names an image's bootstrap snapshot (it was
//     removed), the unbind is queued to a background thread (a slow unmount never holds up
//     Prepare or Remove of other snapshots; acquire of that one image waits for it).
//
// Crash safety: the image row (with its bootstrap snapshot's name) is written before the
// bind, the user row after it; at open, user rows of snapshots that no longer exist are
// dropped and images whose bootstrap snapshot is gone are unbound in the background; the
// mounts kept are checked against the daemon's list (logged; acquire rebinds what it lost).
//
// Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "base/result.h"
#include "control/api.h"
#include "snapshotter/nydus.h"

struct sqlite3;

struct sqlite3_stmt;

namespace snapshotter {

// The daemon as the mounts see it (control/client.h behind it; tests give a fake).
class Daemon {
 public:
  virtual ~Daemon() = default;
  // Make sure a daemon answers (start one when none does).
  [[nodiscard]] virtual base::Status ensure() = 0;
  // Whether a daemon answers now (nothing is started).
  [[nodiscard]] virtual bool answers() { return true; }
  [[nodiscard]] virtual base::Result<control::ImageInfo> bind(const control::BindRequest& r) = 0;
  [[nodiscard]] virtual base::Status unbind(const control::UnbindRequest& r) = 0;
  [[nodiscard]] virtual base::Result<std::vector<control::ImageInfo>> list() = 0;
  // The image's prefetch list into the daemon's cache, nothing mounted.
  [[nodiscard]] virtual base::Result<control::PrefetchAnswer> prefetch(
      const control::PrefetchRequest& r) {
    (void)r;
    return base::make_error(EOPNOTSUPP, "this daemon link has no prefetch");
  }
};

struct MountPolicy {
  std::string frontend;   // bind's "frontend": "" (the daemon's default), cachefiles, ...
  std::string domain_id;  // cachefiles only
  std::optional<control::RegistryOverrides> registry;
  std::vector<std::string> mirror_urls;  // mirrors of each image's own registry host
  std::string auth;  // base64 "user:password" for each image's registry; never logged
  // Where auth came from, for an error that names the credentials tried ("the nydusd config
  // PATH's backend auth"); never the value.
  std::string auth_source;
  // How often the background check asks the daemon whether it still serves the kept mounts
  // (check_now()); 0: never (acquire still checks before each new use).
  std::chrono::milliseconds check_interval{0};
  // When a pull commits a nydus image's bootstrap layer, ask the daemon to fetch the
  // image's prefetch list into its cache (prefetch()); TOML [snapshot] prefetch_at_pull.
  bool prefetch_at_pull = true;
};

// A snapshot's use of an image mount.
struct ImageUse {
  int64_t bootstrap_id = 0;
  std::string mountpoint;
};

// The store's word on snapshots, asked at open.
struct SnapshotFacts {
  // Whether key is an active snapshot or a view.
  std::function<bool(const std::string& key)> alive;
  // The id of the committed snapshot `name`; nullopt when there is none.
  std::function<std::optional<int64_t>(const std::string& name)> committed_id;
};

class ImageMounts {
 public:
  [[nodiscard]] static base::Result<std::unique_ptr<ImageMounts>> open(
      const std::string& root, std::shared_ptr<Daemon> daemon, MountPolicy policy,
      const SnapshotFacts& facts);
  ~ImageMounts();
  ImageMounts(const ImageMounts&) = delete;
  ImageMounts& operator=(const ImageMounts&) = delete;

  // The mount point of the image for key. bootstrap_path: the image's bootstrap as
  // unpacked (bound with the reference when it is a regular file). Errors: the daemon's (start,
  // bind), EIO (SQLite), ENOENT when the image's bootstrap snapshot was removed meanwhile.
  [[nodiscard]] base::Result<std::string> acquire(const std::string& key, const NydusImage& image,
                                                  const std::string& bootstrap_path);
  // key's use, or nullopt when key uses no image.
  [[nodiscard]] base::Result<std::optional<ImageUse>> use_of(const std::string& key);
  // key is gone (Remove) or no longer active (Commit): drop its use (nothing when it has
  // none), and when key is the bootstrap snapshot of a bound image, unmount and unbind that
  // image in the background.
  void release(const std::string& key);
  // The number of users of an image (tests).
  [[nodiscard]] int users(int64_t bootstrap_id);
  // Whether the image is mounted (bound or binding; tests).
  [[nodiscard]] bool mounted(int64_t bootstrap_id);
  // Wait until the background thread has done every unbind queued (tests, shutdown).
  void drain();
  // Ask the daemon whether it serves every kept mount; bind again (starting a daemon when
  // none answers) the images it lost, the way acquire does. Returns how many were bound
  // again. Run every policy.check_interval by a thread of its own: a daemon that died is
  // noticed without waiting for a container, and under fanotify the running containers'
  // mounts read right again once the image is bound again (the new daemon marks the same
  // cache files); what they read in between is what the cache file held (fail-open).
  int check_now();
  // A pull committed the bootstrap snapshot bootstrap_id of image_ref (its bootstrap at
  // bootstrap_path): queue a prefetch request for the image's prefetch list to the daemon
  // (control::PrefetchRequest, with the registry options a bind of it gets), sent by a
  // thread of its own, so the caller (Commit) never waits for it. A failure (no daemon,
  // a bootstrap gone, a registry error) is logged, nothing more. Nothing when
  // policy.prefetch_at_pull is off; at most kMaxPrefetchQueue requests wait.
  void prefetch(int64_t bootstrap_id, const std::string& image_ref,
                const std::string& bootstrap_path);
  static constexpr std::size_t kMaxPrefetchQueue = 64;
  // Wait until every queued prefetch request has been answered (tests).
  void prefetch_drain();

 private:
  ImageMounts(std::string root, sqlite3* db, std::shared_ptr<Daemon> daemon, MountPolicy policy);
  enum class State { kBinding, kBound, kUnbinding };
  struct Image {
    State state = State::kBound;
    std::string mountpoint;
    std::string name;       // the bootstrap snapshot's name ("": not known, an old row)
    bool removed = false;   // the bootstrap snapshot is gone: unbind, never bind again
    std::string image_ref;  // what a rebind needs ("": an old row, until the next acquire)
    std::string bootstrap_path;
  };
  [[nodiscard]] base::Status exec(const std::string& sql);
  [[nodiscard]] base::Status run(const char* sql, const std::vector<std::string>& args = {});
  // Under mu_: the transactions in its scope are not synced (PRAGMA synchronous=NORMAL; WAL:
  // the next synced commit or checkpoint makes them durable). Only for deletes that open()
  // redoes after an OS crash: uses of snapshots that are gone are dropped there, images
  // whose bootstrap snapshot is gone unbound. Inserts stay synced (FULL).
  class NoSync {
   public:
    explicit NoSync(ImageMounts& m);
    ~NoSync();
    NoSync(const NoSync&) = delete;
    NoSync& operator=(const NoSync&) = delete;

   private:
    ImageMounts& m_;
  };
  // Runs sql (a prepared statement kept in stmts_) with the arguments bound as text; the
  // rows as text.
  [[nodiscard]] base::Result<std::vector<std::vector<std::string>>> query(
      const char* sql, const std::vector<std::string>& args);
  [[nodiscard]] base::Result<bool> live(const std::string& mountpoint);
  // old_mp when the daemon still serves it, else a new bind (old_mp: "" none before).
  [[nodiscard]] base::Result<std::string> live_or_rebind(const NydusImage& image,
                                                         const std::string& bootstrap_path,
                                                         const std::string& old_mp);
  [[nodiscard]] base::Result<std::string> bind_new(int64_t id, const NydusImage& image,
                                                   const std::string& bootstrap_path);
  [[nodiscard]] int users_locked(int64_t bootstrap_id);
  // What a bind or prefetch of image_ref sends as its registry options: the policy's,
  // with the mirrors of the image's host and its credentials (as a docker config file of
  // ours, ROOT/auth/<id>.json).
  [[nodiscard]] base::Result<std::optional<control::RegistryOverrides>> registry_for(
      int64_t id, const std::string& image_ref);
  void prefetch_loop();
  // At open, on the background thread: the kept mounts against the daemon's list, logged.
  void recheck();
  void unbind_loop();
  void monitor_loop();

  std::string root_;
  sqlite3* db_;
  std::shared_ptr<Daemon> daemon_;  // shared with the service's shutdown path
  MountPolicy policy_;

  std::mutex mu_;  // db_, stmts_, images_, queue_
  // query()'s statements, prepared once per SQL text (Mounts asks use_of on every call).
  std::map<std::string, sqlite3_stmt*, std::less<>> stmts_;
  std::condition_variable cv_;
  std::map<int64_t, Image> images_;
  std::set<int64_t> removed_;  // bootstrap ids removed while we run (ids are never reused)
  std::deque<int64_t> queue_;
  int in_flight_ = 0;
  bool stop_ = false;
  std::thread worker_;
  std::thread monitor_;

  // Prefetch at pull (prefetch()): its own queue and thread, so a slow daemon answer holds
  // up no unbind.
  struct PrefetchJob {
    int64_t bootstrap_id = 0;
    std::string image_ref;
    std::string bootstrap_path;
  };
  std::mutex pf_mu_;  // pf_queue_, pf_running_, pf_stop_, prefetcher_
  std::condition_variable pf_cv_;
  std::deque<PrefetchJob> pf_queue_;
  bool pf_running_ = false;
  bool pf_stop_ = false;
  std::thread prefetcher_;  // started with the first request
};

}  // namespace snapshotter
