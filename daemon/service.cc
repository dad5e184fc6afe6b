// SPDX-License-Identifier: Apache-2.0
#include "daemon/service.h"

#include <signal.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string_view>
#include <thread>
#include <utility>

#include "base/defer.h"
#include "base/file.h"
#include "base/log.h"
#include "base/metrics_http.h"
#include "base/unique_fd.h"
#include "base/version.h"
#include "control/api.h"
#include "daemon/bind_plan.h"
#include "daemon/blob_cache.h"
#include "daemon/client_pool.h"
#include "daemon/control.h"
#include "daemon/devfd_handover.h"
#include "daemon/early_ranges.h"
#include "daemon/event_loop.h"
#include "daemon/failover_state.h"
#include "daemon/frontend_choice.h"
#include "daemon/fuse_frontend.h"
#include "daemon/image.h"
#include "daemon/mount_table.h"
#include "daemon/registry_backend.h"
#include "daemon/registry_image.h"
#include "daemon/sd_notify.h"
#include "erofs/reader.h"
#include "fscache/protocol.h"

namespace cfnd {
namespace {

// True when fd is /dev/cachefiles (the same character device).
bool is_cachefiles_dev(int fd) {
  struct stat a {};
  struct stat b {};
  return ::fstat(fd, &a) == 0 && ::stat("/dev/cachefiles", &b) == 0 && S_ISCHR(a.st_mode) &&
         S_ISCHR(b.st_mode) && a.st_rdev == b.st_rdev;
}

// True when fd is /dev/fuse.
bool is_fuse_dev(int fd) {
  struct stat a {};
  struct stat b {};
  return ::fstat(fd, &a) == 0 && ::stat("/dev/fuse", &b) == 0 && S_ISCHR(a.st_mode) &&
         S_ISCHR(b.st_mode) && a.st_rdev == b.st_rdev;
}

// The names of FUSE sessions' fds in the fd store / fd holder start with this.
constexpr std::string_view kFuseFdPrefix = "fuse-";

// A name for a new FUSE session's fd in the fd store / fd holder ("fuse-<16 hex>"),
// unlike any an earlier daemon left there.
std::string new_fuse_fd_name() {
  std::random_device rd;
  const std::uint64_t r = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  return fmt::format("fuse-{:016x}", r);
}

// The file system type of our FUSE mounts in the mount table.
constexpr std::string_view kFuseFsType = "fuse.nydus";

// A FUSE session of a dead daemon, found at start: its record and its fd (invalid when
// neither the fd store nor the fd holder had it).
struct HandedFuse {
  PersistedImage record;
  base::UniqueFd dev;
};

struct Bound {
  // Where it came from and how it is mounted, as the state file keeps it (fsid and
  // domain_id: kCachefiles only; blob_dir or reference + manifest_digest + registry).
  PersistedImage record;
  std::shared_ptr<BoundImage> image;
  Frontend frontend = Frontend::kFuse;
  std::unique_ptr<FuseMount> fuse;  // kFuse only
  // An eStargz image's prioritized files fetched while its bootstrap was built, for the
  // metrics; its backend owns it too (and serves reads from it).
  std::shared_ptr<EarlyRanges> early;
};

class ServiceImpl final : public Service {
 public:
  ServiceImpl(Config c, ServiceHooks hooks) : config_(std::move(c)), hooks_(std::move(hooks)) {}

  ~ServiceImpl() override {
    metrics_http_.reset();  // no scrape runs after this
    control_.reset();       // no request runs after this
    if (shutdown_thread_.joinable()) {
      shutdown_thread_.join();  // stop() without run()
    }
    stop_state_writer();  // no unbind runs after this: what it left pending is written
    (void)unmount_all();
    fanotify_.reset();  // after every unmount: closing the group with a live mount fails open
    if (cache_ && cachefiles_) {
      cache_->set_kernel_culler(nullptr);
      cache_->set_kernel_objects(nullptr);
      (void)cache_->entries();  // waits out a pass that may hold the culler
    }
    cachefiles_.reset();  // after every unmount: closing /dev/cachefiles fails reads with EIO
    cache_.reset();       // its space thread asks pins() about bound_: before bound_ goes
  }

  base::Status init() {
    CacheOptions opts;
    opts.cache_dir = config_.cache_dir;
    opts.batch_size = config_.batch_size;
    opts.amplify_io = config_.amplify_io;
    opts.prefetch_bandwidth = config_.prefetch_bandwidth;
    opts.prefetch_merge_size = config_.prefetch_merge_size;
    opts.read_timeout = std::chrono::seconds(config_.read_timeout_s);
    opts.space.limit = config_.cache_limit;
    opts.space.limit_percent = config_.cache_limit_percent;
    opts.space.high_watermark = config_.cache_high_watermark;
    opts.space.low_watermark = config_.cache_low_watermark;
    opts.space.gc_interval = std::chrono::seconds(config_.cache_gc_interval_s);
    opts.space.orphan_grace = std::chrono::seconds(config_.cache_orphan_grace_s);
    CFN_ASSIGN_OR_RETURN(cache_, BlobCache::create(opts));
    cache_->set_pins([this] { return pins(); });
    CFN_ASSIGN_OR_RETURN(handover_, FdHandover::open(config_));
    Handed handed;
    CFN_ASSIGN_OR_RETURN(handed.cachefiles, handover_.take(kCachefilesFdName, is_cachefiles_dev));
    CFN_ASSIGN_OR_RETURN(handed.fanotify,
                         handover_.take(kFanotifyFdName, FanotifyFrontend::is_group));
    CFN_ASSIGN_OR_RETURN(handed.fanotify_watch,
                         handover_.take(kFanotifyWatchFdName, FanotifyFrontend::is_inotify));
    CFN_ASSIGN_OR_RETURN(auto handed_fuse, take_fuse_sessions());
    handover_.close_untaken();
    handed.can_keep = handover_.can_keep();
    CFN_ASSIGN_OR_RETURN(auto fe, choose_frontends(config_, std::move(handed)));
    default_ = fe.default_frontend;
    fanotify_ = std::move(fe.fanotify);
    cachefiles_ = std::move(fe.cachefiles);
    if (cachefiles_) {
      // The kernel's cache files go through the protocol (inuse / cull), from the
      // cache's space thread or a cache gc / rm; cachefiles_ outlives cache_'s users
      // (cache_ is reset last, after its space thread stopped asking).
      cache_->set_kernel_culler(
          [this, dir = config_.cache_dir + "/fscache"](const cache::FscacheObject& o) {
            return cachefiles_->cull(dir, o);
          });
      cache_->set_kernel_objects([this] { return cachefiles_->open_objects(); });
    }
    CFN_ASSIGN_OR_RETURN(loop_, EventLoop::create());
    CFN_ASSIGN_OR_RETURN(control_,
                         ControlServer::listen(config_.socket_path,
                                               [this](const std::string& r) { return handle(r); }));
    remove_stale_temporaries();  // the socket is ours: no other daemon writes there
    if (!config_.metrics_address.empty()) {
      base::MetricsHttpOptions mo;
      mo.address = config_.metrics_address;
      mo.metrics = [this] { return control::to_prometheus(metrics(), list()); };
      mo.healthy = [this] {
        std::lock_guard lk(mu_);
        return !stopping_;
      };
      CFN_ASSIGN_OR_RETURN(metrics_http_, base::MetricsHttpServer::start(std::move(mo)));
      spdlog::info("metrics on http://{}/metrics", metrics_http_->address());
    }
    CFN_TRY(loop_->add(control_->fd(), [this] { control_->on_readable(); }));
    if (fanotify_) {
      // A superblock gone: its lingering image's record goes at the next state write (a
      // record left behind is harmless: a successor finds its watch gone).
      fanotify_->on_released([this](int wd) {
        std::lock_guard lk(mu_);
        unmounted_.erase(wd);
      });
      CFN_TRY(loop_->add(fanotify_->group_fd(), [this] { fanotify_->on_readable(); }));
      if (fanotify_->sb_watch_fd() >= 0) {
        CFN_TRY(loop_->add(fanotify_->sb_watch_fd(), [this] { fanotify_->on_sb_readable(); }));
      }
    }
    if (cachefiles_) {
      CFN_TRY(loop_->add(cachefiles_->dev_fd(), [this] { cachefiles_->on_readable(); }));
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    signal_fd_.reset(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!signal_fd_) {
      return base::errno_error("signalfd");
    }
    CFN_TRY(loop_->add(signal_fd_.get(), [this] { on_signal(); }));
    // Last: nothing after this may fail, or a failed start would unmount the images
    // re-bound here (~ServiceImpl unmounts what is bound).
    if (cachefiles_) {
      if (fe.adopted) {
        restore_images();
      } else {
        handover_.keep(kCachefilesFdName, cachefiles_->dev_fd());
        persist(Frontend::kCachefiles);  // an earlier daemon's mounts died with it
      }
    }
    if (fanotify_) {
      // The unmount watch outlives us with the group (a handed-over one is kept there
      // already, like the group).
      if (fanotify_->sb_watch_fd() >= 0 && !fanotify_->sb_watch_handed()) {
        handover_.keep(kFanotifyWatchFdName, fanotify_->sb_watch_fd());
      }
      if (fe.fanotify_adopted) {
        restore_fanotify(std::move(fe.fanotify_takeover));
      } else {
        handover_.keep(kFanotifyFdName, fanotify_->group_fd());
        persist(Frontend::kFanotify);  // an earlier daemon's mounts died with its group
      }
    }
    resume_fuse_sessions(std::move(handed_fuse));
    spdlog::info("listening on {}; cache {}; default front end {}", config_.socket_path,
                 config_.cache_dir, frontend_name(default_));
    return {};
  }

  base::Status run() override {
    auto st = loop_->run();
    // Under stop_mu_: the shutdown thread may stop the loop before stop(), on another
    // thread, has finished storing it in shutdown_thread_ (TSan, ServiceTest).
    std::thread shutdown;
    {
      std::lock_guard lk(stop_mu_);
      shutdown = std::move(shutdown_thread_);
    }
    if (shutdown.joinable()) {
      shutdown.join();
    }
    return st;
  }

  std::string handle(const std::string& request) override {
    auto req = control::request_from_json(request);
    if (!req) {
      return control::error_to_json(req.error());
    }
    return std::visit(
        [this](const auto& q) -> std::string {
          using T = std::decay_t<decltype(q)>;
          if constexpr (std::is_same_v<T, control::PingRequest>) {
            return control::to_json(
                control::PingAnswer{::getpid(), std::string(frontend_name(default_))});
          } else if constexpr (std::is_same_v<T, control::BindRequest>) {
            return answer(bind(q), [](const auto& a) { return control::to_json(a); });
          } else if constexpr (std::is_same_v<T, control::UnbindRequest>) {
            auto st = unbind(q);
            return st ? control::ok_to_json() : control::error_to_json(st.error());
          } else if constexpr (std::is_same_v<T, control::ListRequest>) {
            return control::images_to_json(list());
          } else if constexpr (std::is_same_v<T, control::AccessedRequest>) {
            return answer(accessed(q), [](const auto& a) { return control::files_to_json(a); });
          } else if constexpr (std::is_same_v<T, control::CacheLsRequest>) {
            return control::to_json(cache_listing());
          } else if constexpr (std::is_same_v<T, control::CacheGcRequest>) {
            return control::to_json(cache_gc(q.dry_run));
          } else if constexpr (std::is_same_v<T, control::CacheRmRequest>) {
            auto st = cache_->remove(q.id);
            return st ? control::ok_to_json() : control::error_to_json(st.error());
          } else if constexpr (std::is_same_v<T, control::StatusRequest>) {
            return control::to_json(status());
          } else if constexpr (std::is_same_v<T, control::PrefetchRequest>) {
            return answer(prefetch(q), [](const auto& a) { return control::to_json(a); });
          } else if constexpr (std::is_same_v<T, control::StopRequest>) {
            spdlog::info("stop requested on the control socket: unmounting and exiting");
            sd::stopping("stop requested: unmounting and exiting");
            auto a = control::to_json(
                control::PingAnswer{::getpid(), std::string(frontend_name(default_))});
            stop();  // the answer is still sent: the control server joins this thread
            return a;
          } else {
            static_assert(std::is_same_v<T, control::MetricsRequest>);
            const auto m = metrics();
            return q.prometheus ? control::prometheus_to_json(control::to_prometheus(m, list()))
                                : control::to_json(m);
          }
        },
        *req);
  }

 private:
  template <typename T, typename Encode>
  static std::string answer(const base::Result<T>& r, Encode encode) {
    return r ? encode(*r) : control::error_to_json(r.error());
  }

  void on_signal() {
    signalfd_siginfo si{};
    while (::read(signal_fd_.get(), &si, sizeof si) == sizeof si) {
      spdlog::info("signal {}: unmounting and exiting", si.ssi_signo);
      sd::stopping(fmt::format("signal {}: unmounting and exiting", si.ssi_signo));
      stop();
    }
  }

  void stop() override {
    {
      std::lock_guard lk(stop_mu_);
      if (!stop_requested_) {
        stop_requested_ = true;
        // Refuse binds from the moment stop() returns, not from when the shutdown thread
        // gets to run: a bind between its download and its mount must see it.
        {
          std::lock_guard mlk(mu_);
          stopping_ = true;
        }
        // Unmount on another thread while the loop still answers fanotify events: a
        // reader blocked on an event would otherwise keep the mount busy for ever.
        shutdown_thread_ = std::thread([this] {
          if (unmount_all()) {
            // Clean shutdown, nothing mounted: the kernel may drop the cache with our fd.
            handover_.release(stored_fd_names());
          } else {
            spdlog::warn(
                "some cachefiles or fanotify mounts could not be removed: their fds stay "
                "in the fd store / fd holder for the next daemon");
          }
          loop_->stop();
        });
      }
    }
  }

  // The names this daemon keeps in the service manager's fd store.
  std::vector<std::string_view> stored_fd_names() const {
    std::vector<std::string_view> names;
    if (cachefiles_) {
      names.push_back(kCachefilesFdName);
    }
    if (fanotify_) {
      names.push_back(kFanotifyFdName);
      names.push_back(kFanotifyWatchFdName);
    }
    return names;
  }

  // Unmount every image. False when a cachefiles or fanotify mount is left behind (its
  // unmount failed even detached, and it is still mounted).
  bool unmount_all() {
    std::map<std::string, Bound> all;
    {
      std::unique_lock lk(mu_);
      stopping_ = true;  // no bind or unbind starts from now on
      // Binds inside their mount step finish (and are listed), unbinds finish.
      ops_done_.wait(lk, [this] { return ops_ == 0; });
      all.swap(bound_);
    }
    bool all_gone = true;
    for (auto& [dir, b] : all) {
      auto st = unmount_one(dir, b, false);
      if (!st) {
        spdlog::warn("{}; detaching", st.error().to_string());
        st = unmount_one(dir, b, true);
      }
      if (!st) {
        spdlog::error("{}", st.error().to_string());
        if (b.frontend != Frontend::kFuse && mounted_on(dir, "erofs")) {
          all_gone = false;
        }
      }
    }
    if (fanotify_) {
      if (const std::size_t n = fanotify_->lingering(); n > 0) {
        // Unmounted here, alive elsewhere (a bind mount, another mount namespace): once
        // the group closes their reads of holes would return zeros. Kept in the fd
        // store / fd holder, the group makes them wait for the next daemon, which
        // denies their events (EIO).
        spdlog::warn(
            "{} unmounted fanotify image(s) still in use through a bind mount, another mount "
            "namespace or an open file: without an fd store or fd holder their reads of "
            "data not fetched yet return zeros once this daemon exits",
            n);
        all_gone = false;
      }
    }
    if (!all.empty()) {
      persist(Frontend::kCachefiles);
      persist(Frontend::kFanotify);
      persist(Frontend::kFuse);
    }
    return all_gone;
  }

  // ---- failover ----

  // What write_file_atomic leaves when the daemon dies before its rename, in the
  // directories this daemon writes that way (never their subdirectories: fscache/ is
  // the kernel's).
  void remove_stale_temporaries() const {
    const std::string dirs[] = {config_.cache_dir, bootstraps_dir(config_.cache_dir),
                                std::filesystem::path(state_path(config_.cache_dir)).parent_path()};
    for (const std::string& dir : dirs) {
      auto n = base::remove_atomic_temporaries(dir);
      if (!n) {
        spdlog::warn("stale temporaries: {}", n.error().to_string());
      } else if (*n > 0) {
        spdlog::info("removed {} stale temporary file(s) from {}", *n, dir);
      }
    }
  }

  // Failover: re-bind every image of fe's state file whose mount is still there. `lost`
  // says what an image that cannot be re-bound loses. Returns {re-bound, recorded}.
  std::pair<std::size_t, std::size_t> rebind_recorded(Frontend fe, std::string_view lost) {
    auto images = load_state(state_path(config_.cache_dir, fe), fe);
    if (!images) {
      spdlog::error("failover: {}: the dead daemon's {} images cannot be served ({})",
                    images.error().to_string(), frontend_name(fe), lost);
      images = std::vector<PersistedImage>{};
    }
    std::size_t rebound = 0;
    for (const auto& im : *images) {
      const bool lingering = im.watch && im.watch->lingering;
      if (lingering || !mounted_on(im.mountpoint, "erofs")) {
        if (fe == Frontend::kFanotify && im.watch) {
          // Unmounted (by the dead daemon or behind its back): its file system may live
          // on through a bind mount, another mount namespace or an open file.
          if (auto st = rebind_lingering(im); !st) {
            spdlog::info("failover: the image once mounted on {} is not re-bound: {}",
                         im.mountpoint, st.error().to_string());
            continue;
          }
          ++rebound;
          continue;
        }
        spdlog::info("failover: {} is no longer mounted: not re-bound", im.mountpoint);
        continue;
      }
      if (auto st = rebind(im, fe); !st) {
        spdlog::error("failover: re-binding {}: {} ({})", im.mountpoint, st.error().to_string(),
                      lost);
        continue;
      }
      ++rebound;
    }
    persist(fe);
    return {rebound, images->size()};
  }

  // Failover of /dev/cachefiles: re-bind, then "restore": the kernel re-sends what the
  // dead daemon left unanswered.
  void restore_images() {
    const auto [rebound, recorded] = rebind_recorded(Frontend::kCachefiles, "their reads fail");
    if (auto st = cachefiles_->restore(); !st) {
      spdlog::error("failover: {}", st.error().to_string());
      return;
    }
    spdlog::info("failover: restored /dev/cachefiles with {} of {} image(s) re-bound", rebound,
                 recorded);
    sd::status(fmt::format("took over /dev/cachefiles; {} image(s) re-bound", rebound));
  }

  // Failover of the fanotify group: re-bind, then fill and answer the events the dead
  // daemon left.
  void restore_fanotify(FanotifyFrontend::Takeover takeover) {
    const auto [rebound, recorded] =
        rebind_recorded(Frontend::kFanotify, "their events are denied");
    // Settled on the workers once the loop serves the group (our fills raise events).
    fanotify_->settle(std::move(takeover.records), std::move(takeover.reserved));
    spdlog::info("failover: took over the fanotify group with {} of {} image(s) re-bound", rebound,
                 recorded);
    sd::status(fmt::format("took over the fanotify group; {} image(s) re-bound", rebound));
  }

  // At start, before the control socket is served: cachefiles or fanotify.
  base::Status rebind(const PersistedImage& im, Frontend fe) {
    Bound b;
    CFN_ASSIGN_OR_RETURN(b.image, open_recorded(im));
    b.record = im;
    if (fe == Frontend::kCachefiles) {
      CFN_TRY(cachefiles_->rebind(b.image, im.fsid, im.domain_id, im.mountpoint));
    } else {
      CFN_ASSIGN_OR_RETURN(const SbWatch w, fanotify_->rebind(b.image, im.mountpoint));
      b.record.watch = persisted_watch(w);
    }
    b.frontend = fe;
    spdlog::info("failover: re-bound {} on {} ({})", b.image->bootstrap_path(), im.mountpoint,
                 frontend_name(fe));
    std::lock_guard lk(mu_);
    bound_.emplace(im.mountpoint, std::move(b));
    return {};
  }

  // Failover of a lingering fanotify image: served again (its readers get data, not
  // EIO) while the dead daemon's watch says its superblock lives, kept until it dies.
  base::Status rebind_lingering(const PersistedImage& im) {
    CFN_ASSIGN_OR_RETURN(auto image, open_recorded(im));
    const SbWatch w{im.watch->wd, static_cast<dev_t>(im.watch->dev),
                    static_cast<ino_t>(im.watch->ino)};
    CFN_TRY(fanotify_->rebind_lingering(image, w));
    PersistedImage rec = im;
    rec.watch->lingering = true;
    {
      std::lock_guard lk(mu_);
      unmounted_.emplace(w.wd, std::move(rec));
    }
    // Released meanwhile (the callback ran before the record was there): drop it.
    if (!fanotify_->alive(w.wd)) {
      std::lock_guard lk(mu_);
      unmounted_.erase(w.wd);
    }
    spdlog::info(
        "failover: re-bound {} (once mounted on {}, its file system still in use: watch {})",
        image->bootstrap_path(), im.mountpoint, w.wd);
    return {};
  }

  static std::optional<PersistedWatch> persisted_watch(const SbWatch& w) {
    if (w.wd < 1) {
      return std::nullopt;
    }
    return PersistedWatch{w.wd, static_cast<std::uint64_t>(w.dev),
                          static_cast<std::uint64_t>(w.ino), false};
  }

  // The image of a state file record, opened again (its bootstrap is in the cache: no
  // registry round trip).
  base::Result<std::shared_ptr<BoundImage>> open_recorded(const PersistedImage& im) {
    std::shared_ptr<Backend> backend;
    if (!im.reference.empty()) {
      auto ref = registry::Reference::parse(im.reference);
      if (!ref) {
        return base::Unexpected(ref.error().wrap("reference '" + im.reference + "'"));
      }
      CFN_ASSIGN_OR_RETURN(auto client, clients_.get(im.registry, *ref));
      backend = make_registry_backend(std::move(client), *ref);
    } else {
      CFN_ASSIGN_OR_RETURN(auto local, make_localfs_backend(im.blob_dir));
      backend = std::move(local);
    }
    return BoundImage::open(im.bootstrap, std::move(backend), *cache_, config_.file_readahead);
  }

  // ---- FUSE failover ----

  // At start: the FUSE sessions of the state file, each with its /dev/fuse from the fd
  // store or the fd holder (taken before the service manager's other fds are closed).
  base::Result<std::vector<HandedFuse>> take_fuse_sessions() {
    std::vector<HandedFuse> out;
    std::vector<std::string> listed;
    std::string why = "the state file does not list it";
    auto images = load_state(state_path(config_.cache_dir, Frontend::kFuse), Frontend::kFuse);
    if (!images) {
      why = images.error().to_string();
      spdlog::error("failover: {}: the dead daemon's FUSE mounts cannot be served",
                    images.error().to_string());
    } else {
      for (auto& im : *images) {
        listed.push_back(im.fuse->fd_name);
        CFN_ASSIGN_OR_RETURN(auto fd, handover_.take(im.fuse->fd_name, is_fuse_dev));
        out.push_back(HandedFuse{std::move(im), std::move(fd)});
      }
    }
    // A session nobody can resume must end now: the kernel fails its readers (ENOTCONN)
    // once no process holds its /dev/fuse, instead of after the holder's grace time.
    for (const auto& name : handover_.drop_unlisted(kFuseFdPrefix, listed)) {
      spdlog::error(
          "failover: FUSE session '{}' of the dead daemon cannot be resumed ({}): its /dev/fuse "
          "is closed, the reads of its mount (unknown) fail with ENOTCONN",
          name, why);
    }
    return out;
  }

  // At the end of start: serve again each dead daemon's FUSE session whose mount is
  // still there (no new INIT; FUSE_NOTIFY_RESEND re-queues what it had read), forget the
  // fds of mounts that are gone, and write the FUSE state anew.
  void resume_fuse_sessions(std::vector<HandedFuse> handed) {
    std::size_t resumed = 0;
    for (auto& h : handed) {
      const std::string& mp = h.record.mountpoint;
      const std::string& name = h.record.fuse->fd_name;
      const auto dev = mounted_dev(mp, kFuseFsType);
      if (!h.dev) {
        if (dev) {
          spdlog::error(
              "failover: FUSE mount {}: its /dev/fuse ('{}') is in neither the fd store nor the "
              "fd holder: not resumed (its reads fail with ENOTCONN)",
              mp, name);
        }
        continue;
      }
      if (!dev || (h.record.fuse->dev != 0 && *dev != h.record.fuse->dev)) {
        spdlog::info("failover: FUSE mount {} is gone: its /dev/fuse ('{}') is closed", mp, name);
        handover_.forget(name);
        continue;
      }
      if (auto st = resume_fuse(h.record, std::move(h.dev), *dev); !st) {
        spdlog::error(
            "failover: resuming FUSE on {}: {}: its /dev/fuse ('{}') is closed, its reads fail "
            "with ENOTCONN",
            mp, st.error().to_string(), name);
        handover_.forget(name);
        h.dev.reset();
        continue;
      }
      ++resumed;
    }
    persist(Frontend::kFuse);
    if (!handed.empty()) {
      spdlog::info("failover: resumed {} of {} FUSE session(s)", resumed, handed.size());
      sd::status(fmt::format("resumed {} FUSE session(s)", resumed));
    }
  }

  base::Status resume_fuse(const PersistedImage& im, base::UniqueFd dev, dev_t conn_dev) {
    Bound b;
    CFN_ASSIGN_OR_RETURN(b.image, open_recorded(im));
    b.frontend = Frontend::kFuse;
    b.record = im;
    b.record.fuse->dev = conn_dev;
    const auto& init = im.fuse->init;
    {
      std::lock_guard lk(mu_);
      mounting_.emplace(im.mountpoint, b.record);  // where on_fuse_init finds it
    }
    auto m = FuseMount::resume(b.image, im.mountpoint, std::move(dev), init, conn_dev,
                               fuse_options(im.mountpoint));
    if (!m) {
      std::lock_guard lk(mu_);
      mounting_.erase(im.mountpoint);
      return base::Unexpected(m.error());
    }
    b.fuse = std::move(*m);
    if (!init) {
      spdlog::info("failover: resumed FUSE on {} before its INIT was answered", im.mountpoint);
    } else if (b.fuse->resent()) {
      spdlog::info(
          "failover: resumed FUSE on {} (protocol 7.{}); FUSE_NOTIFY_RESEND sent: the requests "
          "the dead daemon read are queued again",
          im.mountpoint, init->kernel_minor);
    } else {
      spdlog::warn(
          "failover: resumed FUSE on {}, but the kernel (protocol 7.{}) has no "
          "FUSE_NOTIFY_RESEND (7.40): requests the dead daemon had read stay unanswered",
          im.mountpoint, init->kernel_minor);
    }
    // One step from mounting_ to bound_: an INIT answered meanwhile is in the record.
    std::lock_guard lk(mu_);
    b.record.fuse = mounting_[im.mountpoint].fuse;
    mounting_.erase(im.mountpoint);
    bound_.emplace(im.mountpoint, std::move(b));
    return {};
  }

  FuseOptions fuse_options(const std::string& mp) {
    FuseOptions fo;
    fo.threads = config_.fuse_threads;
    fo.poll_us = config_.fuse_poll_us;
    fo.on_init = [this, mp](const fusewire::InitParams& p) { on_fuse_init(mp, p); };
    return fo;
  }

  // A FUSE session answered its INIT (on its thread, before the answer is sent): record
  // the parameters a successor resumes with; on a kernel without FUSE_NOTIFY_RESEND there
  // is no failover (a successor could not get back the requests this daemon read), so
  // the fd is not kept.
  void on_fuse_init(const std::string& mp, const fusewire::InitParams& p) {
    std::string forget;
    {
      std::lock_guard lk(mu_);
      PersistedImage* rec = nullptr;
      if (auto it = mounting_.find(mp); it != mounting_.end()) {
        rec = &it->second;
      } else if (auto jt = bound_.find(mp); jt != bound_.end()) {
        rec = &jt->second.record;
      }
      if (rec == nullptr || !rec->fuse) {
        return;  // not kept: no failover for it
      }
      if (fusewire::can_resend(p)) {
        rec->fuse->init = p;
      } else {
        forget = rec->fuse->fd_name;
        rec->fuse.reset();
      }
    }
    if (!forget.empty()) {
      spdlog::warn(
          "fuse: the kernel speaks FUSE 7.{}, without FUSE_NOTIFY_RESEND (7.40, Linux 6.9): no "
          "failover for {} (a daemon that dies takes it with it)",
          p.kernel_minor, mp);
      handover_.forget(forget);
    }
    persist(Frontend::kFuse);
  }

  // Write a front end's state file: its images bound and those being mounted
  // (cachefiles: all of them; FUSE: those whose /dev/fuse is kept). The snapshot is
  // taken under mu_, the (fsync'd) write runs under persist_mu_ only, and a snapshot
  // older than the last one written is dropped, so the file never goes back.
  void persist(Frontend fe, base::Durability durability = base::Durability::kSynced) {
    if ((fe == Frontend::kCachefiles && !cachefiles_) ||
        (fe == Frontend::kFanotify && !fanotify_)) {
      return;
    }
    const bool fuse = fe == Frontend::kFuse;
    std::vector<PersistedImage> images;
    std::uint64_t gen = 0;
    {
      std::lock_guard lk(mu_);
      gen = ++state_gen_;
      for (const auto& [mp, b] : bound_) {
        if (b.frontend == fe && (!fuse || b.record.fuse)) {
          images.push_back(b.record);
        }
      }
      for (const auto& [mp, im] : mounting_) {
        if (recorded_frontend(mp, im) == fe) {
          images.push_back(im);
        }
      }
      if (fe == Frontend::kFanotify) {
        for (const auto& [wd, im] : unmounted_) {
          images.push_back(im);
        }
      }
    }
    std::lock_guard w(persist_mu_);
    auto& written = state_written_[fe];
    if (gen < written) {
      return;
    }
    written = gen;
    if (auto st =
            save_state(state_path(config_.cache_dir, fe), images, durability, state_text_[fe]);
        !st) {
      static base::RateLimit rl;
      if (rl.allow()) {
        spdlog::error("{}: a restarted daemon could not serve these mounts",
                      st.error().to_string());
      }
    }
  }

  // persist(fe, kRenameOnly) on the state writer thread, after kStateWriteDelay: one write
  // for the unbinds of a removal. Pending writes are made when the service stops.
  void persist_soon(Frontend fe) {
    {
      std::lock_guard lk(state_writer_mu_);
      state_pending_.insert(fe);
      if (!state_writer_.joinable()) {
        state_writer_ = std::thread([this] { state_writer_loop(); });
      }
    }
    state_writer_cv_.notify_all();
  }

  void state_writer_loop() {
    std::unique_lock lk(state_writer_mu_);
    for (;;) {
      state_writer_cv_.wait(lk, [this] { return state_writer_stop_ || !state_pending_.empty(); });
      if (state_pending_.empty()) {
        return;  // stopping, nothing left to write
      }
      state_writer_cv_.wait_for(lk, kStateWriteDelay, [this] { return state_writer_stop_; });
      const std::set<Frontend> pending = std::exchange(state_pending_, {});
      lk.unlock();
      for (const Frontend fe : pending) {
        persist(fe, base::Durability::kRenameOnly);
      }
      lk.lock();
    }
  }

  // Writes what persist_soon() left pending, and ends the state writer thread.
  void stop_state_writer() {
    {
      std::lock_guard lk(state_writer_mu_);
      state_writer_stop_ = true;
    }
    state_writer_cv_.notify_all();
    if (state_writer_.joinable()) {
      state_writer_.join();
    }
  }

  // Under mu_. The front end of a mounting_ record whose state file lists it (kAuto:
  // none): fanotify's are in fan_mounting_, FUSE's have a kept session, cachefiles' an
  // fsid.
  Frontend recorded_frontend(const std::string& mp, const PersistedImage& im) const {
    if (fan_mounting_.contains(mp)) {
      return Frontend::kFanotify;
    }
    if (im.fuse) {
      return Frontend::kFuse;
    }
    return im.fsid.empty() ? Frontend::kAuto : Frontend::kCachefiles;
  }

  void end_op() {
    std::lock_guard lk(mu_);
    --ops_;
    ops_done_.notify_all();
  }

  static base::Unexpected stopping_error() {
    return base::make_error(ESHUTDOWN, "the daemon is stopping");
  }

  base::Status unmount_one(const std::string& dir, Bound& b, bool force) {
    if (b.frontend == Frontend::kFuse) {
      CFN_TRY(b.fuse->unmount(force));
      if (b.record.fuse) {
        handover_.forget(b.record.fuse->fd_name);  // the session ended with the mount
        std::lock_guard lk(mu_);
        b.record.fuse.reset();
      }
      return {};
    }
    if (b.frontend == Frontend::kCachefiles) {
      return cachefiles_->umount(dir, force);
    }
    CFN_TRY(fanotify_->umount(dir, force));
    if (b.record.watch) {
      // Its file system may outlive the mount: listed as lingering while it does, so a
      // successor serves it too. The record goes when the superblock dies (on_released),
      // or here if it died already (the check after the insert closes the race).
      const int wd = b.record.watch->wd;
      PersistedImage rec = b.record;
      rec.watch->lingering = true;
      {
        std::lock_guard lk(mu_);
        unmounted_.emplace(wd, std::move(rec));
      }
      if (!fanotify_->alive(wd)) {
        std::lock_guard lk(mu_);
        unmounted_.erase(wd);
      }
    }
    return {};
  }

  // A registry image (reference [+ registry overrides]) or a local one (bootstrap +
  // blob_dir) on a mount point.
  base::Result<control::ImageInfo> bind(const control::BindRequest& req) {
    CFN_ASSIGN_OR_RETURN(
        const BindPlan plan,
        plan_bind(req, {default_, cachefiles_ != nullptr, fanotify_ != nullptr, config_.registry}));
    const std::string& mp = plan.mountpoint;
    const Frontend fe = plan.frontend;
    const auto& ref = plan.ref;
    const RegistryOptions& ropts = plan.registry;
    std::string bootstrap = plan.bootstrap;
    spdlog::debug("bind {}: {} ({})", mp, ref ? ref->to_string() : plan.bootstrap,
                  frontend_name(fe));
    const std::string& blob_dir = plan.blob_dir;
    std::string fsid = plan.fsid;
    const std::string& domain_id = plan.domain_id;
    // mp is ours from here to the end of the bind: other binds of it are EBUSY.
    {
      std::lock_guard lk(mu_);
      if (stopping_) {
        return stopping_error();
      }
      if (bound_.contains(mp) || busy_.contains(mp)) {
        return base::errorf(EBUSY, "an image is already bound on {}", mp);
      }
      busy_.insert(mp);
      ++binding_;  // its bootstrap, not known yet, must not be evicted
    }
    auto unreserve = base::defer([&] {
      std::lock_guard lk(mu_);
      busy_.erase(mp);
      --binding_;
    });
    Bound b;
    std::shared_ptr<Backend> backend;
    // Where a bind's time goes, in its log line (bench/coldstart prints it).
    const auto t0 = std::chrono::steady_clock::now();
    const auto ms = [&t0] {
      return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
          .count();
    };
    std::string timings;  // the eStargz bootstrap build's steps
    if (ref) {
      // The manifest and bootstrap download holds no lock: a slow or stalled
      // registry must not hold up other binds, unbinds or shutdown (the bootstrap
      // file is renamed into place whole, so concurrent pulls of one image are
      // harmless).
      CFN_ASSIGN_OR_RETURN(auto client, clients_.get(ropts, *ref));
      std::map<std::string, std::string> renamed;
      std::shared_ptr<EarlyRanges> early;
      if (bootstrap.empty()) {
        CFN_ASSIGN_OR_RETURN(auto pulled, pull_bootstrap(*client, *ref, config_.cache_dir,
                                                         ropts.max_bootstrap_bytes));
        bootstrap = pulled.bootstrap_path;
        b.record.manifest_digest = pulled.manifest_digest;
        renamed = std::move(pulled.blob_digests);
        early = std::move(pulled.early);  // its fetches use *client: the backend owns both
        timings = std::move(pulled.timings);
      }
      b.record.reference = ref->to_string();
      b.record.registry = ropts;
      b.early = early;
      backend =
          make_registry_backend(std::move(client), *ref, std::move(renamed), std::move(early));
    }
    if (!ref) {
      CFN_ASSIGN_OR_RETURN(auto local, make_localfs_backend(blob_dir));
      backend = std::move(local);
    }
    // Opening the blobs may read their chunk-info tables through the backend: also
    // without a lock.
    const double pulled_ms = ms();
    CFN_ASSIGN_OR_RETURN(auto boot, BoundImage::load(bootstrap));
    CFN_ASSIGN_OR_RETURN(auto image, BoundImage::open(std::move(boot), std::move(backend), *cache_,
                                                      config_.file_readahead));
    const double opened_ms = ms();
    // The prefetch list (the bootstrap's prefetch table) starts before the mount, so
    // its reads are in flight while the kernel mounts and the workload starts.
    spdlog::debug("bind {}: image opened", mp);
    CFN_ASSIGN_OR_RETURN(auto listed, image->prefetch_list_chunks());
    std::size_t listed_chunks = 0;
    for (std::size_t i = 0; i < listed.size(); ++i) {
      listed_chunks += listed[i].size();
      cache_->prefetch_chunks(image->blobs()[i], std::move(listed[i]));
    }
    if (hooks_.before_mount) {
      hooks_.before_mount(mp);
    }
    // The mount step: shutdown waits for it (ops_), or it does not start.
    {
      std::lock_guard lk(mu_);
      if (stopping_) {
        return stopping_error();
      }
      ++ops_;
    }
    auto op_done = base::defer([this] { end_op(); });
    b.image = image;
    b.frontend = fe;
    b.record.mountpoint = mp;
    b.record.bootstrap = image->bootstrap_path();
    b.record.blob_dir = blob_dir;
    if (fe == Frontend::kFanotify) {
      // In the state file before mount(2), like cachefiles: a successor handed the group
      // serves a mount this daemon made just before it died.
      {
        std::lock_guard lk(mu_);
        mounting_.emplace(mp, b.record);
        fan_mounting_.insert(mp);
      }
      persist(fe);
      auto st = fanotify_->mount(image, mp);
      if (!st) {
        {
          std::lock_guard lk(mu_);
          mounting_.erase(mp);
          fan_mounting_.erase(mp);
        }
        persist(fe);
        return base::Unexpected(st.error());
      }
      b.record.watch = persisted_watch(*st);
    } else if (fe == Frontend::kCachefiles) {
      if (fsid.empty()) {
        CFN_ASSIGN_OR_RETURN(auto boot, base::read_file(image->bootstrap_path()));
        fsid = default_fsid(boot);
      }
      b.record.fsid = fsid;
      b.record.domain_id = domain_id;
      // In the state file before mount(2): a daemon that dies inside it leaves a mount
      // whose OPENs the next daemon must answer.
      {
        std::lock_guard lk(mu_);
        mounting_.emplace(mp, b.record);
      }
      persist(Frontend::kCachefiles);
      auto st = cachefiles_->mount(image, fsid, domain_id, mp);
      if (!st) {
        {
          std::lock_guard lk(mu_);
          mounting_.erase(mp);
        }
        persist(Frontend::kCachefiles);
        return base::Unexpected(st.error());
      }
    } else {
      CFN_TRY(mount_fuse(mp, image, b));
    }
    spdlog::debug("bind {}: mounted", mp);
    const double mounted_ms = ms();
    if (hooks_.after_mount) {
      hooks_.after_mount(mp);
    }
    for (const auto& blob : image->blobs()) {
      cache_->prefetch(blob);
    }
    spdlog::info(
        "bound {} on {} ({}, {} blobs from {}; prefetch list: {} chunks; bootstrap {:.1f} ms, "
        "opened {:.1f} ms, mounted {:.1f} ms{}{})",
        ref ? b.record.reference + " (" + b.record.manifest_digest + ")" : image->bootstrap_path(),
        mp, frontend_name(fe), image->blobs().size(), image->backend().describe(), listed_chunks,
        pulled_ms, opened_ms, mounted_ms, timings.empty() ? "" : "; eStargz: ", timings);
    auto answer = describe(mp, b);
    {
      std::lock_guard lk(mu_);
      mounting_.erase(mp);
      fan_mounting_.erase(mp);
      bound_.emplace(mp, std::move(b));
    }
    persist(fe);
    return answer;
  }

  // A registry image's prefetch list into the cache, nothing mounted (the snapshotter's
  // pull: docs/control-api.md). Its blobs are opened (their chunk-info tables read through
  // the registry, as a bind does) only when the bootstrap has a prefetch table; the list's
  // jobs hold the blobs until they are done, so the cache counts them in use meanwhile and
  // may evict them like any unused blob afterwards. A bind of the image later skips what
  // is present and waits for what is in flight (one fetch per chunk).
  base::Result<control::PrefetchAnswer> prefetch(const control::PrefetchRequest& req) {
    CFN_ASSIGN_OR_RETURN(const PrefetchPlan plan, plan_prefetch(req, config_.registry));
    {
      std::lock_guard lk(mu_);
      if (stopping_) {
        return stopping_error();
      }
    }
    const std::string what = plan.ref.to_string();
    const auto t0 = std::chrono::steady_clock::now();
    // Read and parsed once: the check here, then the blobs opened from it.
    CFN_ASSIGN_OR_RETURN(auto boot, BoundImage::load(plan.bootstrap));
    {
      CFN_ASSIGN_OR_RETURN(const auto table, boot.image().prefetch_table());
      if (table.empty()) {
        spdlog::info("prefetch {}: its bootstrap has no prefetch list: nothing to fetch", what);
        return control::PrefetchAnswer{};
      }
    }
    CFN_ASSIGN_OR_RETURN(auto client, clients_.get(plan.registry, plan.ref));
    std::shared_ptr<Backend> backend = make_registry_backend(std::move(client), plan.ref);
    CFN_ASSIGN_OR_RETURN(auto image,
                         BoundImage::open(std::move(boot), std::move(backend), *cache_));
    CFN_ASSIGN_OR_RETURN(auto listed, image->prefetch_list_chunks());
    control::PrefetchAnswer a;
    a.blobs = image->blobs().size();
    for (std::size_t i = 0; i < listed.size(); ++i) {
      a.chunks += listed[i].size();
      cache_->prefetch_chunks(image->blobs()[i], std::move(listed[i]));
    }
    spdlog::info(
        "prefetch {}: {} listed chunks of {} blobs queued ({:.1f} ms), nothing mounted", what,
        a.chunks, a.blobs,
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    return a;
  }

  // A new FUSE session on mp. When an fd outlives us (fd store or fd holder), its
  // /dev/fuse is kept there and the state file lists it before mount(2), so a daemon
  // that dies from here on leaves a session the next one resumes.
  base::Status mount_fuse(const std::string& mp, const std::shared_ptr<BoundImage>& image,
                          Bound& b) {
    CFN_ASSIGN_OR_RETURN(auto dev, FuseMount::open_device());
    const bool keep = handover_.can_keep();
    if (keep) {
      b.record.fuse = PersistedFuse{new_fuse_fd_name(), 0, std::nullopt};
      handover_.keep(b.record.fuse->fd_name, dev.get());
      {
        std::lock_guard lk(mu_);
        mounting_.emplace(mp, b.record);
      }
      persist(Frontend::kFuse);
    }
    auto m = FuseMount::start(image, mp, std::move(dev), fuse_options(mp));
    std::lock_guard lk(mu_);
    if (keep) {
      // INIT may have dropped the fd (no RESEND) or recorded its parameters.
      b.record.fuse = mounting_[mp].fuse;
    }
    if (!m) {
      mounting_.erase(mp);
      if (b.record.fuse) {
        handover_.forget(b.record.fuse->fd_name);
      }
      return base::Unexpected(m.error());
    }
    b.fuse = std::move(*m);
    if (b.record.fuse) {
      b.record.fuse->dev = b.fuse->conn_dev();
    }
    return {};
  }

  base::Status unbind(const control::UnbindRequest& req) {
    const std::string& mp_in = req.mountpoint;
    const bool force = req.force;
    std::string mp = mp_in;
    if (auto r = real_dir(mp_in, "mountpoint")) {
      mp = *r;
    }
    Bound* b = nullptr;
    {
      std::lock_guard lk(mu_);
      if (stopping_) {
        return stopping_error();
      }
      auto it = bound_.find(mp);
      if (it == bound_.end()) {
        return base::errorf(ENOENT, "no image bound on {}", mp);
      }
      if (busy_.contains(mp)) {
        return base::errorf(EBUSY, "the image on {} is being unbound", mp);
      }
      busy_.insert(mp);
      ++ops_;
      b = &it->second;
    }
    // busy_ keeps *b in bound_ (no other unbind takes it) and ops_ keeps it there
    // (shutdown waits before it empties bound_).
    auto op_done = base::defer([this, &mp] {
      {
        std::lock_guard lk(mu_);
        busy_.erase(mp);
      }
      end_op();
    });
    CFN_TRY(unmount_one(mp, *b, force));
    const Frontend fe = b->frontend;
    std::map<std::string, Bound>::node_type gone;  // destroyed without the lock
    {
      std::lock_guard lk(mu_);
      gone = bound_.extract(mp);
      if (!gone.empty() && gone.mapped().early) {
        // Its counts stay in the daemon's totals (counters never go down).
        const auto st = gone.mapped().early->stats();
        early_unbound_fetched_ += st.fetched_bytes;
        early_unbound_served_ += st.served_bytes;
      }
    }
    // Not fsynced: the file only loses an entry, and the state file matters only to a
    // successor handed this daemon's kernel sessions (a process crash: the page cache has
    // the new file; a successor that still finds the entry treats it as a mount gone behind
    // its back: not re-bound unless its file system lives on elsewhere). After an OS crash
    // no mount and no session is left, and a daemon started without them empties the file.
    // So a removal of many images (the snapshotter's unbinds) costs no fsync, and no
    // journal commit, per image (bench/snapgc). Nor a write each: the file is written once
    // for the unbinds of kStateWriteDelay (a 60 KB file per unbind with 200 images bound
    // was 24 MB of writes and discards on the disk a Prepare syncs on), except when the
    // image lingers (fanotify: its superblock lives on elsewhere), which a successor must
    // know at once to serve it.
    bool lingering = false;
    if (fe == Frontend::kFanotify && !gone.empty() && gone.mapped().record.watch) {
      std::lock_guard lk(mu_);
      lingering = unmounted_.contains(gone.mapped().record.watch->wd);
    }
    if (lingering) {
      persist(fe, base::Durability::kRenameOnly);
    } else {
      persist_soon(fe);
    }
    spdlog::info("unbound {}", mp);
    return {};
  }

  // The files of the image bound on the mount point whose chunks were read (a prefetch
  // list for the next build).
  base::Result<std::vector<std::string>> accessed(const control::AccessedRequest& req) {
    const std::string& mp_in = req.mountpoint;
    std::string mp = mp_in;
    if (auto r = real_dir(mp_in, "mountpoint")) {
      mp = *r;
    }
    std::shared_ptr<BoundImage> image;
    {
      std::lock_guard lk(mu_);
      auto it = bound_.find(mp);
      if (it == bound_.end()) {
        return base::errorf(ENOENT, "no image bound on {}", mp);
      }
      image = it->second.image;
    }
    return image->accessed_files();
  }

  static control::ImageInfo describe(const std::string& mp, const Bound& b) {
    control::ImageInfo out;
    for (const auto& blob : b.image->blobs()) {
      out.blobs.push_back({blob->info().id, blob->path(), blob->size(),
                           blob->info().compressed_size, blob->ready_chunks(),
                           blob->chunk_count()});
    }
    out.mountpoint = mp;
    out.bootstrap = b.image->bootstrap_path();
    out.frontend = frontend_name(b.frontend);
    out.backend = b.image->backend().describe();
    out.fsid = b.record.fsid;
    out.domain_id = b.record.domain_id;
    out.reference = b.record.reference;
    out.manifest_digest = b.record.manifest_digest;
    out.blob_dir = b.record.blob_dir;
    return out;
  }

  std::vector<control::ImageInfo> list() {
    std::vector<control::ImageInfo> images;
    std::lock_guard lk(mu_);
    for (const auto& [mp, b] : bound_) {
      images.push_back(describe(mp, b));
    }
    return images;
  }

  // ---- the cache's space ----

  // The cache entry id of a bootstrap the cache keeps ("bootstraps/<file>"), or "".
  [[nodiscard]] std::string bootstrap_entry(const std::string& path) const {
    const std::filesystem::path p(path);
    if (p.parent_path() != std::filesystem::path(bootstraps_dir(config_.cache_dir))) {
      return {};
    }
    return "bootstraps/" + p.filename().string();
  }

  // The cache entry of the kernel's copy of a cachefiles image's bootstrap (its fsid
  // cookie in the volume "erofs,<domain_id or fsid>"); empty for other front ends.
  [[nodiscard]] static std::string fscache_bootstrap_entry(const Bound& b) {
    if (b.frontend != Frontend::kCachefiles || b.record.fsid.empty()) {
      return {};
    }
    const std::string& vol = b.record.domain_id.empty() ? b.record.fsid : b.record.domain_id;
    return fmt::format("fscache/{}{}/{}", fscache::kErofsVolumePrefix, vol, b.record.fsid);
  }

  // What bound images use, for the cache's eviction (besides the blobs they hold open).
  CachePins pins() {
    CachePins p;
    std::lock_guard lk(mu_);
    for (const auto& [mp, b] : bound_) {
      for (const auto& blob : b.image->blobs()) {
        p.ids.insert(blob->info().id);
      }
      if (auto e = bootstrap_entry(b.image->bootstrap_path()); !e.empty()) {
        p.ids.insert(e);
      }
      if (auto e = fscache_bootstrap_entry(b); !e.empty()) {
        p.ids.insert(e);
      }
    }
    // A lingering image's bootstrap: a successor reopens it to serve the image again.
    for (const auto& [wd, im] : unmounted_) {
      if (auto e = bootstrap_entry(im.bootstrap); !e.empty()) {
        p.ids.insert(e);
      }
    }
    p.all_bootstraps = binding_ > 0;
    return p;
  }

  control::CacheListing cache_listing() {
    auto entries = cache_->entries();
    std::map<std::string, std::vector<std::string>> mounts;
    {
      std::lock_guard lk(mu_);
      for (const auto& [mp, b] : bound_) {
        for (const auto& blob : b.image->blobs()) {
          mounts[blob->info().id].push_back(mp);
        }
        if (auto e = bootstrap_entry(b.image->bootstrap_path()); !e.empty()) {
          mounts[e].push_back(mp);
        }
        if (auto e = fscache_bootstrap_entry(b); !e.empty()) {
          mounts[e].push_back(mp);
        }
      }
    }
    std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
      return a.last_use_ns != b.last_use_ns ? a.last_use_ns < b.last_use_ns : a.id < b.id;
    });
    control::CacheListing l;
    for (const auto& e : entries) {
      control::CacheEntry c;
      c.id = e.id;
      c.kind = e.kind == cache::EntryKind::kBlob        ? "blob"
               : e.kind == cache::EntryKind::kBootstrap ? "bootstrap"
                                                        : "fscache";
      c.bytes = e.bytes;
      c.kernel_bytes = e.kernel_bytes;
      c.last_use_ms = e.last_use_ns / 1000000;
      c.in_use = e.in_use;
      if (auto it = mounts.find(e.id); it != mounts.end()) {
        c.mounts = it->second;
      }
      l.bytes += e.bytes;
      l.entries.push_back(std::move(c));
    }
    const auto w = space_watermarks();
    l.limit = w.limit;
    l.high = w.high;
    l.low = w.low;
    return l;
  }

  [[nodiscard]] cache::Watermarks space_watermarks() const {
    cache::SpaceOptions o;
    o.limit = config_.cache_limit;
    o.limit_percent = config_.cache_limit_percent;
    o.high_watermark = config_.cache_high_watermark;
    o.low_watermark = config_.cache_low_watermark;
    struct statvfs v {};
    std::uint64_t fs = 0;
    if (::statvfs(config_.cache_dir.c_str(), &v) == 0) {
      fs = static_cast<std::uint64_t>(v.f_blocks) * v.f_frsize;
    }
    return cache::watermarks(o, fs);
  }

  control::GcAnswer cache_gc(bool dry_run) {
    const GcReport r = cache_->gc(dry_run);
    control::GcAnswer a;
    a.dry_run = r.dry_run;
    a.evicted = r.evicted;
    a.evicted_bytes = r.evicted_bytes;
    a.bytes_before = r.bytes_before;
    a.bytes_after = r.bytes_after;
    a.limit = r.watermarks.limit;
    a.low = r.watermarks.low;
    a.errors = r.errors;
    a.busy = r.busy;
    a.over = r.over;
    return a;
  }

  control::StatusAnswer status() {
    control::StatusAnswer a;
    a.pid = ::getpid();
    a.version = CFN_VERSION;
    a.frontend = frontend_name(default_);
    if (cachefiles_) {
      a.frontends.emplace_back("cachefiles");
    }
    if (fanotify_) {
      a.frontends.emplace_back("fanotify");
    }
    a.frontends.emplace_back("fuse");
    a.uptime_s = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                                std::chrono::steady_clock::now() - started_)
                                                .count());
    {
      std::lock_guard lk(mu_);
      a.images = bound_.size();
    }
    a.cache_dir = config_.cache_dir;
    // The cache's own accounting (the cache_bytes gauge of `metrics`, what the limit is held
    // to), as of its last pass: no walk of the cache directory per call.
    a.cache_bytes = cache_->metrics().cache_bytes.load();
    a.socket = config_.socket_path;
    if (metrics_http_) {
      a.metrics_address = metrics_http_->address();
    }
    return a;
  }

  // One snapshot of every counter: the JSON answer and the Prometheus text print it.
  control::Metrics metrics() {
    const auto& c = cache_->metrics();
    control::Metrics m;
    m.backend_bytes = c.backend_bytes.load();
    m.backend_requests = c.backend_requests.load();
    m.fill_requests = c.fill_requests.load();
    m.hits = c.hits.load();
    m.misses = c.misses.load();
    m.verify_failures = c.verify_failures.load();
    m.refetches = c.refetches.load();
    m.refetch_successes = c.refetch_successes.load();
    const ClientPool::RefetchCounts blob = clients_.blob_refetch_counts();
    m.blob_refetches = blob.refetches;
    m.blob_refetch_successes = blob.successes;
    m.prefetch_bytes = c.prefetch_bytes.load();
    m.prefetch_list_bytes = c.prefetch_list_bytes.load();
    m.readahead_bytes = c.readahead_bytes.load();
    m.cache_bytes = c.cache_bytes.load();
    m.cache_limit = c.cache_limit.load();
    m.cache_entries_in_use = c.blobs_in_use.load();
    m.cache_over_limit_bytes = c.over_limit_bytes.load();
    m.cache_evictions = c.evictions.load();
    m.cache_evicted_bytes = c.evicted_bytes.load();
    m.cache_eviction_errors = c.eviction_errors.load();
    m.cache_no_space = c.no_space_events.load();
    m.cache_fscache_bytes = c.fscache_bytes.load();
    m.cache_fscache_culled = c.fscache_culled.load();
    m.cache_fscache_busy = c.fscache_busy.load();
    m.cache_fscache_unnamed_bytes = c.fscache_unnamed_bytes.load();
    m.cache_fscache_dirs_removed = c.fscache_dirs_removed.load();
    for (const std::uint64_t n : c.fill_latency_us_buckets()) {
      m.fill_latency_us_buckets.push_back(n);
    }
    {
      const auto s = c.fill_latency.snapshot();
      m.fill_latency_count = s.count;
      m.fill_latency_us_sum = s.sum_ns / 1000;
    }
    {
      std::lock_guard lk(mu_);
      m.estargz_early_fetched_bytes = early_unbound_fetched_;
      m.estargz_early_served_bytes = early_unbound_served_;
      for (const auto& [mp, b] : bound_) {
        for (const auto& blob : b.image->blobs()) {
          m.ready_chunks += blob->ready_chunks();
          m.chunk_count += blob->chunk_count();
        }
        if (b.early) {
          const auto st = b.early->stats();
          m.estargz_early_held_bytes += st.held_bytes;
          m.estargz_early_fetched_bytes += st.fetched_bytes;
          m.estargz_early_served_bytes += st.served_bytes;
        }
      }
    }
    if (fanotify_) {
      m.fanotify_allowed = fanotify_->events_allowed();
      m.fanotify_denied = fanotify_->events_denied();
      m.fanotify_marked_blobs = fanotify_->marked_blobs();
      m.fanotify_marks_removed = fanotify_->marks_removed();
      m.fanotify_lingering_images = fanotify_->lingering();
    }
    if (cachefiles_) {
      m.cachefiles_reads = cachefiles_->reads_served();
      m.cachefiles_read_failures = cachefiles_->reads_failed();
      m.cachefiles_read_local_us = latency(cachefiles_->read_latency_local());
      m.cachefiles_read_fetched_us = latency(cachefiles_->read_latency_fetched());
    }
    return m;
  }

  // A READ latency histogram as count, mean, p50 and p99 in microseconds.
  static control::LatencySummary latency(const base::LatencyHistogram::Snapshot& s) {
    const auto us = [](std::uint64_t ns) { return static_cast<double>(ns) / 1000.0; };
    return {s.count, s.count == 0 ? 0.0 : us(s.sum_ns) / static_cast<double>(s.count),
            us(s.quantile(0.5)), us(s.quantile(0.99))};
  }

  Config config_;
  ServiceHooks hooks_;
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  std::unique_ptr<base::MetricsHttpServer> metrics_http_;
  Frontend default_ = Frontend::kFuse;
  std::unique_ptr<BlobCache> cache_;
  std::unique_ptr<FanotifyFrontend> fanotify_;
  std::unique_ptr<CachefilesFrontend> cachefiles_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<ControlServer> control_;
  base::UniqueFd signal_fd_;
  std::mutex stop_mu_;  // guards stop_requested_ and shutdown_thread_'s start
  bool stop_requested_ = false;
  std::thread shutdown_thread_;
  FdHandover handover_;
  // mu_ guards the bookkeeping below and is never held across I/O.
  std::mutex mu_;
  std::map<std::string, Bound> bound_;
  // The early-range bytes (Bound::early) of images unbound since start.
  std::uint64_t early_unbound_fetched_ = 0;
  std::uint64_t early_unbound_served_ = 0;
  std::map<std::string, PersistedImage> mounting_;  // binds inside mount(2)
  std::set<std::string> fan_mounting_;              // of those, the fanotify ones
  // fanotify images unmounted here whose file system lives on, by watch (the state
  // file lists them as lingering).
  std::multimap<int, PersistedImage> unmounted_;
  std::set<std::string> busy_;  // mount points a bind or an unbind is working on
  int binding_ = 0;             // binds under way (CachePins::all_bootstraps)
  int ops_ = 0;                 // binds in their mount step, unbinds: shutdown waits
  bool stopping_ = false;       // shutdown began: no bind or unbind starts
  std::condition_variable ops_done_;
  std::uint64_t state_gen_ = 0;  // persist() snapshots taken
  std::mutex persist_mu_;        // serializes state-file writes; guards state_written_
  std::map<Frontend, std::uint64_t> state_written_;  // per state file
  std::map<Frontend, StateText> state_text_;         // per state file; under persist_mu_
  // Unbinds' state writes, one per kStateWriteDelay (persist_soon).
  static constexpr std::chrono::milliseconds kStateWriteDelay{20};
  std::mutex state_writer_mu_;
  std::condition_variable state_writer_cv_;
  std::set<Frontend> state_pending_;  // under state_writer_mu_
  bool state_writer_stop_ = false;    // under state_writer_mu_
  std::thread state_writer_;
  ClientPool clients_;
};

}  // namespace

base::Result<std::unique_ptr<Service>> Service::create(const Config& config, ServiceHooks hooks) {
  auto s = std::make_unique<ServiceImpl>(config, std::move(hooks));
  CFN_TRY(s->init());
  return s;
}

}  // namespace cfnd
