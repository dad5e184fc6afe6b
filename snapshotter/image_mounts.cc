// SPDX-License-Identifier: Apache-2.0
#include "snapshotter/image_mounts.h"

#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include "base/defer.h"
#include "base/file.h"
#include "base/log.h"
#include "registry/reference.h"
#include "snapshotter/crash_point.h"
#include "snapshotter/nydusd_config.h"

namespace snapshotter {
namespace {

base::Unexpected sql_error(sqlite3* db, std::string_view what) {
  return base::errorf(EIO, "sqlite (nydus.db): {}: {}", what, ::sqlite3_errmsg(db));
}

std::string mountpoint_for(const std::string& root, int64_t id, int64_t generation) {
  if (generation == 0) {
    return fmt::format("{}/mnt/{}", root, id);
  }
  return fmt::format("{}/mnt/{}-{}", root, id, generation);
}

}  // namespace

base::Status ImageMounts::exec(const std::string& sql) {
  char* err = nullptr;
  if (::sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err != nullptr ? err : "?";
    ::sqlite3_free(err);
    return base::errorf(EIO, "sqlite (nydus.db): {}", msg);
  }
  return {};
}

base::Result<std::vector<std::vector<std::string>>> ImageMounts::query(
    const char* sql, const std::vector<std::string>& args) {
  auto it = stmts_.find(std::string_view(sql));
  if (it == stmts_.end()) {
    sqlite3_stmt* prepared = nullptr;
    if (::sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &prepared, nullptr) !=
        SQLITE_OK) {
      return sql_error(db_, sql);
    }
    it = stmts_.emplace(sql, prepared).first;
  }
  sqlite3_stmt* raw = it->second;
  auto reset = base::defer([raw] {
    ::sqlite3_reset(raw);
    ::sqlite3_clear_bindings(raw);
  });
  for (size_t i = 0; i < args.size(); ++i) {
    ::sqlite3_bind_text(raw, static_cast<int>(i + 1), args[i].data(),
                        static_cast<int>(args[i].size()), SQLITE_TRANSIENT);
  }
  std::vector<std::vector<std::string>> rows;
  for (;;) {
    int rc = ::sqlite3_step(raw);
    if (rc == SQLITE_DONE) {
      break;
    }
    if (rc != SQLITE_ROW) {
      return sql_error(db_, sql);
    }
    std::vector<std::string> row;
    for (int c = 0; c < ::sqlite3_column_count(raw); ++c) {
      const auto* t = ::sqlite3_column_text(raw, c);
      row.emplace_back(t != nullptr ? reinterpret_cast<const char*>(t) : "");
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

base::Status ImageMounts::run(const char* sql, const std::vector<std::string>& args) {
  CFN_ASSIGN_OR_RETURN(auto rows, query(sql, args));
  (void)rows;
  return {};
}

ImageMounts::NoSync::NoSync(ImageMounts& m) : m_(m) {
  (void)m_.run("PRAGMA synchronous=NORMAL");
}

ImageMounts::NoSync::~NoSync() {
  (void)m_.run("PRAGMA synchronous=FULL");
}

ImageMounts::ImageMounts(std::string root, sqlite3* db, std::shared_ptr<Daemon> daemon,
                         MountPolicy policy)
    : root_(std::move(root)), db_(db), daemon_(std::move(daemon)), policy_(std::move(policy)) {}

base::Result<std::unique_ptr<ImageMounts>> ImageMounts::open(const std::string& root,
                                                             std::shared_ptr<Daemon> daemon,
                                                             MountPolicy policy,
                                                             const SnapshotFacts& facts) {
  std::error_code ec;
  std::filesystem::create_directories(root + "/mnt", ec);
  if (ec) {
    return base::errorf(EIO, "creating {}/mnt: {}", root, ec.message());
  }
  std::string path = root + "/nydus.db";
  sqlite3* db = nullptr;
  if (::sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    auto e = base::errorf(EIO, "opening {}: {}", path,
                          db != nullptr ? ::sqlite3_errmsg(db) : "out of memory");
    ::sqlite3_close(db);
    return e;
  }
  ::sqlite3_busy_timeout(db, 5000);
  std::unique_ptr<ImageMounts> m(new ImageMounts(root, db, std::move(daemon), std::move(policy)));
  CFN_TRY(m->exec(
      "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
      "CREATE TABLE IF NOT EXISTS images (bootstrap_id INTEGER PRIMARY KEY,"
      " mountpoint TEXT NOT NULL, generation INTEGER NOT NULL,"
      " bootstrap_name TEXT NOT NULL DEFAULT '', image_ref TEXT NOT NULL DEFAULT '',"
      " bootstrap_path TEXT NOT NULL DEFAULT '');"
      "CREATE TABLE IF NOT EXISTS users (key TEXT PRIMARY KEY, bootstrap_id INTEGER NOT NULL);"));
  // A database of a snapshotter that kept mounts only while containers used them.
  for (const char* col : {"bootstrap_name", "image_ref", "bootstrap_path"}) {
    CFN_ASSIGN_OR_RETURN(
        auto has,
        m->query("SELECT count(*) FROM pragma_table_info('images') WHERE name = ?1", {col}));
    if (has[0][0] == "0") {
      CFN_TRY(
          m->exec(fmt::format("ALTER TABLE images ADD COLUMN {} TEXT NOT NULL DEFAULT ''", col)));
    }
  }
  // Uses of snapshots that are gone (a crash between Remove and release) are dropped.
  CFN_ASSIGN_OR_RETURN(auto users, m->query("SELECT key FROM users", {}));
  for (const auto& u : users) {
    if (!facts.alive(u[0])) {
      CFN_TRY(m->run("DELETE FROM users WHERE key = ?1", {u[0]}));
    }
  }
  CFN_ASSIGN_OR_RETURN(auto images,
                       m->query("SELECT i.bootstrap_id, i.mountpoint, i.bootstrap_name, (SELECT"
                                " count(*) FROM users u WHERE u.bootstrap_id = i.bootstrap_id),"
                                " i.image_ref, i.bootstrap_path FROM images i",
                                {}));
  for (const auto& row : images) {
    int64_t id = std::stoll(row[0]);
    Image im{State::kBound, row[1], row[2], false, row[4], row[5]};
    bool keep = false;
    if (im.name.empty()) {
      // A row written before names were: kept while a snapshot uses it.
      keep = row[3] != "0";
    } else {
      auto cid = facts.committed_id(im.name);
      keep = cid && *cid == id;
      im.removed = !keep;
    }
    if (!keep) {
      im.state = State::kUnbinding;
      m->queue_.push_back(id);
    }
    m->images_.emplace(id, std::move(im));
  }
  if (!images.empty()) {
    spdlog::info(
        "nydus mounts: {} image(s) from {}, {} to unbind (their bootstrap snapshot is"
        " gone)",
        images.size(), path, m->queue_.size());
  }
  m->worker_ = std::thread([p = m.get()] { p->unbind_loop(); });
  if (m->policy_.check_interval.count() > 0) {
    m->monitor_ = std::thread([p = m.get()] { p->monitor_loop(); });
  }
  return m;
}

ImageMounts::~ImageMounts() {
  {
    std::lock_guard lk(pf_mu_);
    pf_stop_ = true;
  }
  pf_cv_.notify_all();
  if (prefetcher_.joinable()) {
    prefetcher_.join();
  }
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) {
    worker_.join();
  }
  if (monitor_.joinable()) {
    monitor_.join();
  }
  for (auto& [sql, st] : stmts_) {
    ::sqlite3_finalize(st);
  }
  ::sqlite3_close(db_);
}

base::Result<bool> ImageMounts::live(const std::string& mountpoint) {
  CFN_TRY(daemon_->ensure());
  CFN_ASSIGN_OR_RETURN(auto images, daemon_->list());
  for (const auto& i : images) {
    if (i.mountpoint == mountpoint) {
      return true;
    }
  }
  return false;
}

base::Result<std::optional<control::RegistryOverrides>> ImageMounts::registry_for(
    int64_t id, const std::string& image_ref) {
  std::optional<control::RegistryOverrides> out = policy_.registry;
  if (policy_.mirror_urls.empty() && policy_.auth.empty()) {
    return out;
  }
  auto ref = registry::Reference::parse(image_ref);
  if (!ref) {
    return base::Unexpected(ref.error().wrap("image reference " + image_ref));
  }
  if (!out) {
    out.emplace();
  }
  if (!policy_.mirror_urls.empty()) {
    out->mirrors =
        std::map<std::string, std::vector<std::string>>{{ref->host, policy_.mirror_urls}};
  }
  if (!policy_.auth.empty()) {
    // The credentials reach the daemon as a docker config of ours (0600), never in a
    // request or a log line.
    std::string dir = root_ + "/auth";
    ::mkdir(dir.c_str(), 0700);
    std::string path = dir + "/" + std::to_string(id) + ".json";
    const std::string text = docker_config_with_auth(ref->host, policy_.auth);
    CFN_TRY(base::write_file_atomic(path, std::as_bytes(std::span(text)), 0600));
    out->docker_config = path;
  }
  return out;
}

void ImageMounts::prefetch(int64_t bootstrap_id, const std::string& image_ref,
                           const std::string& bootstrap_path) {
  if (!policy_.prefetch_at_pull) {
    return;
  }
  {
    std::lock_guard lk(pf_mu_);
    if (pf_queue_.size() >= kMaxPrefetchQueue) {
      static base::RateLimit rl;
      if (rl.allow()) {
        spdlog::warn("prefetch at pull: {} pulls waiting already; {} is not prefetched",
                     pf_queue_.size(), image_ref);
      }
      return;
    }
    pf_queue_.push_back(PrefetchJob{bootstrap_id, image_ref, bootstrap_path});
    if (!prefetcher_.joinable()) {
      prefetcher_ = std::thread([this] { prefetch_loop(); });
    }
  }
  pf_cv_.notify_all();
}

void ImageMounts::prefetch_drain() {
  std::unique_lock lk(pf_mu_);
  pf_cv_.wait(lk, [&] { return pf_queue_.empty() && !pf_running_; });
}

void ImageMounts::prefetch_loop() {
  std::unique_lock lk(pf_mu_);
  for (;;) {
    pf_cv_.wait(lk, [&] { return pf_stop_ || !pf_queue_.empty(); });
    if (pf_stop_) {
      return;
    }
    PrefetchJob job = std::move(pf_queue_.front());
    pf_queue_.pop_front();
    pf_running_ = true;
    lk.unlock();
    // Bad input (no list, a bootstrap gone, a registry error) costs a log line: the
    // pull has been answered long ago, and a bind fetches what it needs itself.
    auto done = [&]() -> base::Result<control::PrefetchAnswer> {
      CFN_TRY(daemon_->ensure());
      control::PrefetchRequest req;
      req.reference = job.image_ref;
      req.bootstrap = job.bootstrap_path;
      CFN_ASSIGN_OR_RETURN(req.registry, registry_for(job.bootstrap_id, job.image_ref));
      return daemon_->prefetch(req);
    }();
    if (done) {
      spdlog::info("prefetch at pull: {}: {} listed chunks of {} blobs queued in the daemon",
                   job.image_ref, done->chunks, done->blobs);
    } else {
      spdlog::warn("prefetch at pull: {}: {} (the image's first container fetches what it reads)",
                   job.image_ref, done.error().to_string());
    }
    lk.lock();
    pf_running_ = false;
    pf_cv_.notify_all();
  }
}

base::Result<std::string> ImageMounts::bind_new(int64_t id, const NydusImage& image,
                                                const std::string& bootstrap_path) {
  std::string mp;
  {
    std::lock_guard lk(mu_);
    CFN_ASSIGN_OR_RETURN(auto rows, query("SELECT generation FROM images WHERE bootstrap_id = ?1",
                                          {std::to_string(id)}));
    int64_t gen = rows.empty() ? 0 : std::stoll(rows[0][0]) + 1;
    mp = mountpoint_for(root_, id, gen);
    CFN_TRY(
        run("INSERT OR REPLACE INTO images (bootstrap_id, mountpoint, generation, "
            "bootstrap_name, image_ref, bootstrap_path) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            {std::to_string(id), mp, std::to_string(gen), image.bootstrap_name, image.image_ref,
             bootstrap_path}));
  }
  if (::mkdir(mp.c_str(), 0700) != 0 && errno != EEXIST) {
    return base::errno_error("mkdir " + mp);
  }
  CFN_TRY(daemon_->ensure());
  control::BindRequest req;
  req.mountpoint = mp;
  req.reference = image.image_ref;
  CFN_ASSIGN_OR_RETURN(req.registry, registry_for(id, image.image_ref));
  req.frontend = policy_.frontend;
  if (policy_.frontend == "cachefiles") {
    req.domain_id = policy_.domain_id;
  }
  // The bootstrap layer is unpacked here already: the daemon takes that copy instead of
  // downloading it again (and fetches it by the reference when it is not there).
  struct stat st {};
  if (::stat(bootstrap_path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
    req.bootstrap = bootstrap_path;
  }
  auto bound = daemon_->bind(req);
  if (!bound) {
    std::string what = "binding " + image.image_ref + " on " + mp;
    if (!policy_.auth.empty() &&
        bound.error().message.find("credentials tried") != std::string::npos) {
      // The daemon's error names the docker config it was given (ours) and the user: say
      // where that config's credentials came from. (Matched by its text: the errno of a
      // registry's 401 may reach us as EIO, wrapped by a blob's open.)
      what += fmt::format(
          " (credentials: {}, handed to the daemon as the docker config {})",
          policy_.auth_source.empty() ? "the nydusd config's backend auth" : policy_.auth_source,
          req.registry->docker_config.value_or(""));
    }
    return base::Unexpected(bound.error().wrap(what));
  }
  spdlog::info("nydus image {} mounted on {} ({})", image.image_ref, mp, bound->frontend);
  return mp;
}

base::Result<std::string> ImageMounts::live_or_rebind(const NydusImage& image,
                                                      const std::string& bootstrap_path,
                                                      const std::string& old_mp) {
  const int64_t id = image.bootstrap_id;
  base::Result<std::string> mp = base::make_error(ENOENT, "no mount");
  if (!old_mp.empty()) {
    auto l = live(old_mp);
    if (l && *l) {
      mp = old_mp;
    } else {
      std::vector<std::string> keys;
      {
        std::lock_guard g(mu_);
        auto rows = query("SELECT key FROM users WHERE bootstrap_id = ?1 ORDER BY key",
                          {std::to_string(id)});
        for (const auto& r : rows ? *rows : decltype(rows)::value_type{}) {
          keys.push_back(r[0]);
        }
      }
      constexpr size_t kNamed = 16;
      std::string named;
      for (size_t i = 0; i < keys.size() && i < kNamed; ++i) {
        named += (i == 0 ? "" : ", ") + keys[i];
      }
      if (keys.size() > kNamed) {
        named += fmt::format(", and {} more", keys.size() - kNamed);
      }
      spdlog::warn(
          "nydus image {}: the daemon no longer serves {} ({}: it died or restarted); the {} "
          "active snapshot(s) on it lost the daemon behind their mount: [{}]. Their "
          "containers' reads of data not fetched before fail (FUSE: the connection is gone) "
          "or, through fanotify, are served again once the image is bound again, except what "
          "was read in between (fanotify fails open: the cache file's zeros); restart those "
          "containers. New snapshots get the new mount",
          image.image_ref, old_mp, l ? "not in its list" : l.error().to_string(), keys.size(),
          named);
      (void)daemon_->unbind(control::UnbindRequest{old_mp, true});
      if (l) {
        // The daemon answered and does not serve it: detach the dead mount from the
        // namespace (running containers' overlays keep their reference) and drop its
        // directory, so nothing of it is left once they are gone.
        if (::umount2(old_mp.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
          spdlog::warn("nydus mounts: detaching {}: {}", old_mp, std::strerror(errno));
        }
        ::rmdir(old_mp.c_str());
      }
    }
  }
  if (!mp) {
    mp = bind_new(id, image, bootstrap_path);
  }
  return mp;
}

base::Result<std::string> ImageMounts::acquire(const std::string& key, const NydusImage& image,
                                               const std::string& bootstrap_path) {
  const int64_t id = image.bootstrap_id;
  std::unique_lock lk(mu_);
  for (;;) {
    if (removed_.contains(id)) {
      return base::errorf(ENOENT, "the bootstrap snapshot of {} was removed", image.image_ref);
    }
    auto it = images_.find(id);
    if (it == images_.end() || it->second.state == State::kBound) {
      break;
    }
    cv_.wait(lk);
  }
  std::string old_mp;
  if (auto it = images_.find(id); it != images_.end()) {
    old_mp = it->second.mountpoint;
    it->second.state = State::kBinding;
  } else {
    images_.emplace(id, Image{State::kBinding, "", image.bootstrap_name, false, image.image_ref,
                              bootstrap_path});
  }
  lk.unlock();

  base::Result<std::string> mp = live_or_rebind(image, bootstrap_path, old_mp);

  lk.lock();
  Image& im = images_[id];
  base::Status st;
  if (mp) {
    im.mountpoint = *mp;
    if (im.name != image.bootstrap_name || im.image_ref != image.image_ref ||
        im.bootstrap_path != bootstrap_path) {
      // A row of an older snapshotter learns its bootstrap snapshot's name and what a
      // rebind needs.
      im.name = image.bootstrap_name;
      im.image_ref = image.image_ref;
      im.bootstrap_path = bootstrap_path;
      st =
          run("UPDATE images SET bootstrap_name = ?2, image_ref = ?3, bootstrap_path = ?4 "
              "WHERE bootstrap_id = ?1",
              {std::to_string(id), im.name, im.image_ref, im.bootstrap_path});
    }
    if (st) {
      st = run("INSERT OR REPLACE INTO users (key, bootstrap_id) VALUES (?1, ?2)",
               {key, std::to_string(id)});
    }
  }
  if (im.removed) {
    // The bootstrap snapshot was removed while we bound: the caller's snapshot cannot be
    // made on it, and the mount goes.
    (void)run("DELETE FROM users WHERE key = ?1", {key});
    im.state = State::kUnbinding;
    queue_.push_back(id);
    cv_.notify_all();
    return base::errorf(ENOENT, "the bootstrap snapshot of {} was removed", image.image_ref);
  }
  if (!mp) {
    // No mount: forget the image when nothing uses an older one of it.
    auto count = query("SELECT count(*) FROM users WHERE bootstrap_id = ?1", {std::to_string(id)});
    im.state = State::kBound;
    if (count && (*count)[0][0] == "0") {
      (void)run("DELETE FROM images WHERE bootstrap_id = ?1", {std::to_string(id)});
      images_.erase(id);
    }
    cv_.notify_all();
    return base::Unexpected(mp.error());
  }
  // Bound (and it stays bound while the bootstrap snapshot exists, whether or not the
  // use was recorded).
  im.state = State::kBound;
  cv_.notify_all();
  if (!st) {
    return base::Unexpected(st.error());
  }
  return mp;
}

base::Result<std::optional<ImageUse>> ImageMounts::use_of(const std::string& key) {
  std::lock_guard lk(mu_);
  // A use is a users row of an image in images_ (acquire adds the entry before the row;
  // an entry goes only with the users rows naming it, or when none does): with no image,
  // no query (Mounts of every plain snapshot asks).
  if (images_.empty()) {
    return std::optional<ImageUse>();
  }
  CFN_ASSIGN_OR_RETURN(auto rows, query("SELECT u.bootstrap_id, i.mountpoint FROM users u JOIN "
                                        "images i ON i.bootstrap_id = u.bootstrap_id WHERE "
                                        "u.key = ?1",
                                        {key}));
  if (rows.empty()) {
    return std::optional<ImageUse>();
  }
  return std::optional<ImageUse>(ImageUse{std::stoll(rows[0][0]), rows[0][1]});
}

int ImageMounts::users_locked(int64_t bootstrap_id) {
  auto count =
      query("SELECT count(*) FROM users WHERE bootstrap_id = ?1", {std::to_string(bootstrap_id)});
  return count ? std::stoi((*count)[0][0]) : -1;
}

int ImageMounts::users(int64_t bootstrap_id) {
  std::lock_guard lk(mu_);
  return users_locked(bootstrap_id);
}

bool ImageMounts::mounted(int64_t bootstrap_id) {
  std::lock_guard lk(mu_);
  auto it = images_.find(bootstrap_id);
  return it != images_.end() && it->second.state != State::kUnbinding;
}

void ImageMounts::release(const std::string& key) {
  std::lock_guard lk(mu_);
  auto rows = query("SELECT bootstrap_id FROM users WHERE key = ?1", {key});
  if (rows && !rows->empty()) {
    // What an OS crash that loses the unsynced delete below leaves: open() redoes it.
    crash_point("release-before-delete");
    const NoSync no_sync(*this);
    if (auto st = run("DELETE FROM users WHERE key = ?1", {key}); !st) {
      spdlog::error("nydus mounts: {}", st.error().to_string());
      return;
    }
  }
  if (rows && !rows->empty()) {
    // An image of an older snapshotter's row (its bootstrap's name unknown) goes with its
    // last user, as it did then.
    int64_t id = std::stoll((*rows)[0][0]);
    auto it = images_.find(id);
    if (it != images_.end() && it->second.name.empty() && it->second.state == State::kBound &&
        users_locked(id) == 0) {
      it->second.state = State::kUnbinding;
      queue_.push_back(id);
      cv_.notify_all();
    }
  }
  // containerd removes an image's snapshots from the top down, so when its bootstrap
  // snapshot goes no snapshot stands on the image any more.
  for (auto& [id, im] : images_) {
    if (im.name.empty() || im.name != key || im.removed) {
      continue;
    }
    im.removed = true;
    removed_.insert(id);
    if (im.state == State::kBound) {
      im.state = State::kUnbinding;
      queue_.push_back(id);
      cv_.notify_all();
    }
    // kBinding: acquire queues the unbind when it is done; kUnbinding: on its way.
  }
}

void ImageMounts::drain() {
  std::unique_lock lk(mu_);
  cv_.wait(lk, [&] { return queue_.empty() && in_flight_ == 0; });
}

int ImageMounts::check_now() {
  struct Kept {
    int64_t id;
    std::string mountpoint;
    NydusImage image;
    std::string bootstrap_path;
  };
  std::vector<Kept> kept;
  {
    std::lock_guard lk(mu_);
    for (const auto& [id, im] : images_) {
      if (im.state == State::kBound && !im.removed && !im.image_ref.empty()) {
        NydusImage ni;
        ni.bootstrap_id = id;
        ni.bootstrap_name = im.name;
        ni.image_ref = im.image_ref;
        kept.push_back(Kept{id, im.mountpoint, std::move(ni), im.bootstrap_path});
      }
    }
  }
  if (kept.empty()) {
    return 0;
  }
  // One list for all: a daemon that does not answer (control API gone) is started by the
  // rebinds below (live() -> ensure()).
  std::vector<control::ImageInfo> listed;
  if (auto l = daemon_->list(); l) {
    listed = std::move(*l);
  } else {
    spdlog::warn("nydus mounts: the daemon does not answer ({}); binding its {} image(s) again",
                 l.error().to_string(), kept.size());
  }
  int rebound = 0;
  for (auto& k : kept) {
    bool served = false;
    for (const auto& i : listed) {
      served = served || i.mountpoint == k.mountpoint;
    }
    if (served) {
      continue;
    }
    {
      std::lock_guard lk(mu_);
      auto it = images_.find(k.id);
      if (it == images_.end() || it->second.state != State::kBound || it->second.removed ||
          it->second.mountpoint != k.mountpoint) {
        continue;  // an acquire or an unbind got there first
      }
      it->second.state = State::kBinding;
    }
    auto mp = live_or_rebind(k.image, k.bootstrap_path, k.mountpoint);
    std::lock_guard lk(mu_);
    Image& im = images_[k.id];
    im.state = State::kBound;
    if (mp) {
      im.mountpoint = *mp;
      rebound += *mp != k.mountpoint ? 1 : 0;
    } else {
      spdlog::error("nydus mounts: binding {} again: {} (the next container retries)",
                    k.image.image_ref, mp.error().to_string());
    }
    if (im.removed) {
      im.state = State::kUnbinding;
      queue_.push_back(k.id);
    }
    cv_.notify_all();
  }
  return rebound;
}

void ImageMounts::monitor_loop() {
  std::unique_lock lk(mu_);
  for (;;) {
    cv_.wait_for(lk, policy_.check_interval, [&] { return stop_; });
    if (stop_) {
      return;
    }
    lk.unlock();
    (void)check_now();
    lk.lock();
  }
}

void ImageMounts::recheck() {
  std::vector<std::string> kept;
  {
    std::lock_guard lk(mu_);
    for (const auto& [id, im] : images_) {
      if (im.state == State::kBound) {
        kept.push_back(im.mountpoint);
      }
    }
  }
  if (kept.empty()) {
    return;
  }
  if (!daemon_->answers()) {
    spdlog::warn(
        "nydus mounts: no daemon answers: the {} image(s) kept mounted are bound "
        "again at their next container",
        kept.size());
    return;
  }
  auto listed = daemon_->list();
  if (!listed) {
    spdlog::warn("nydus mounts: the daemon's list: {}", listed.error().to_string());
    return;
  }
  size_t served = 0;
  for (const auto& mp : kept) {
    bool found = false;
    for (const auto& i : *listed) {
      found = found || i.mountpoint == mp;
    }
    if (found) {
      ++served;
    } else {
      spdlog::warn(
          "nydus mounts: the daemon does not serve {} (it restarted): bound again at "
          "the image's next container",
          mp);
    }
  }
  spdlog::info("nydus mounts: the daemon serves {} of the {} image(s) kept mounted", served,
               kept.size());
}

void ImageMounts::unbind_loop() {
  recheck();
  std::unique_lock lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
    if (stop_) {
      return;
    }
    int64_t id = queue_.front();
    queue_.pop_front();
    ++in_flight_;
    std::string mp = images_[id].mountpoint;
    lk.unlock();
    auto st = daemon_->unbind(control::UnbindRequest{mp, false});
    if (!st && st.error().code == EBUSY) {
      spdlog::warn("nydus mounts: {} is busy; detaching it", mp);
      st = daemon_->unbind(control::UnbindRequest{mp, true});
    }
    bool gone = st || st.error().code == ENOENT;
    if (!gone) {
      spdlog::error("nydus mounts: unbinding {}: {}", mp, st.error().to_string());
    } else {
      ::rmdir(mp.c_str());
      spdlog::info("nydus mounts: {} unmounted and unbound", mp);
    }
    lk.lock();
    --in_flight_;
    auto count = query("SELECT count(*) FROM users WHERE bootstrap_id = ?1", {std::to_string(id)});
    bool unused = count && (*count)[0][0] == "0";
    if (gone && (unused || images_[id].removed)) {
      // Unbound, rows still there: what an OS crash that loses the deletes below leaves.
      crash_point("unbind-before-delete");
      // One transaction, not synced (NoSync): mu_ is held, and every Commit and Remove
      // waits for it (release).
      const NoSync no_sync(*this);
      const bool txn = static_cast<bool>(run("BEGIN IMMEDIATE"));
      (void)run("DELETE FROM users WHERE bootstrap_id = ?1", {std::to_string(id)});
      (void)run("DELETE FROM images WHERE bootstrap_id = ?1", {std::to_string(id)});
      if (txn && !run("COMMIT")) {
        (void)run("ROLLBACK");
      }
      images_.erase(id);
    } else {
      // Still bound (the unbind failed): the next acquire checks it against the daemon.
      images_[id].state = State::kBound;
    }
    cv_.notify_all();
  }
}

}  // namespace snapshotter
