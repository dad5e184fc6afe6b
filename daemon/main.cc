// SPDX-License-Identifier: Apache-2.0
// cachefilesd-nydus: the lazy image daemon, and the small client commands that drive it
// through its control socket.
//
//   cachefilesd-nydus [--config F] [--frontend auto|cachefiles|fanotify|fuse]
//                     [--cache-dir D] [--socket P] [--log-level L]       run the daemon
//   cachefilesd-nydus mount SOURCE DIR [--blob-dir D] [--frontend F]   bind + mount
//                     [--fsid ID] [--domain-id D]     (cachefiles: EROFS fsid=, domain_id=)
//   cachefilesd-nydus umount DIR [--force]                             unmount + unbind
//   cachefilesd-nydus list | metrics [--prometheus]
//   cachefilesd-nydus cache ls | cache gc [--dry-run] | cache rm ID    the blob cache's space
//   cachefilesd-nydus status
//   cachefilesd-nydus stop [--timeout S]      unmount every image, exit; waits for the exit
//   cachefilesd-nydus fd-holder --socket P [--grace S]   keep /dev/cachefiles for failover
//                     (started by a daemon run with --fd-holder; see daemon/fd_holder.h)
//
// SOURCE is a local bootstrap (an existing file; --blob-dir names its blobs) or an
// image reference (host[:port]/repo[:tag][@digest]) of a RAFS v6 image in a registry:
// the daemon resolves it, fetches the bootstrap and reads blobs lazily. Registry
// options (--plain-http, --insecure, --ca-file, --docker-config, --mirror, timeouts,
// --retries) set the daemon's defaults when it runs, and travel with a mount's bind
// request to override them for that image. `mount` starts a daemon when none answers.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include <CLI/CLI.hpp>

#include "base/log.h"
#include "base/subprocess.h"
#include "base/version.h"
#include "control/api.h"
#include "control/client.h"
#include "daemon/config.h"
#include "daemon/fd_holder.h"
#include "daemon/sd_notify.h"
#include "daemon/service.h"
#include "registry/reference.h"

namespace {

constexpr std::chrono::milliseconds kCallTimeout{120000};

// The options every subcommand shares.
struct Common {
  std::string config_file;
  std::string frontend;
  std::string cache_dir;
  std::string socket;
  std::string log_level;
  bool fd_holder = false;
  bool allow_fail_open = false;
  std::optional<unsigned> read_timeout;
  std::string cache_limit;
  std::optional<std::string> metrics_address;
  // Registry options given on the command line: the daemon's defaults, or one mount's
  // overrides.
  control::RegistryOverrides registry;
  std::vector<std::string> mirrors;
};

void raise_nofile() {
  // Every pending fanotify event holds an open fd; an event whose fd cannot be made is
  // denied by the kernel.
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) {
      spdlog::warn("raising RLIMIT_NOFILE: {}", std::strerror(errno));
    }
  }
}

int fail(const std::string& message, int rc = 1) {
  std::fprintf(stderr, "cachefilesd-nydus: %s\n", message.c_str());
  return rc;
}

// A failed control call: the daemon's own error text, or what kept us from it.
int fail(const base::Error& e) {
  return fail(e.message);
}

int run_daemon(const cfnd::Config& config) {
  raise_nofile();
  // Before any thread exists: every thread inherits the mask and the loop's signalfd
  // is the only taker of these signals (children get a clean mask: base/subprocess.h).
  base::block_stop_signals();
  auto svc = cfnd::Service::create(config);
  if (!svc) {
    spdlog::error("{}", svc.error().to_string());
    cfnd::sd::failed(svc.error().code, svc.error().to_string());
    return 1;
  }
  // The control socket listens and the front end is up: systemd may start dependents.
  cfnd::sd::ready("serving on " + config.socket_path);
  auto st = (*svc)->run();
  svc->reset();
  if (!st) {
    spdlog::error("{}", st.error().to_string());
    return 1;
  }
  spdlog::info("exited cleanly");
  return 0;
}

// Start a daemon in the background unless one answers on the socket. Its log goes to
// <cache_dir>/daemon.log.
int ensure_daemon(const cfnd::Config& config, const std::string& config_file) {
  if (control::Client(config.socket_path, std::chrono::milliseconds(2000)).ping()) {
    return 0;
  }
  std::error_code ec;
  std::filesystem::create_directories(config.cache_dir, ec);
  base::SpawnOptions o;
  o.argv = {"/proc/self/exe"};
  if (!config_file.empty()) {
    o.argv.insert(o.argv.end(), {"--config", config_file});
  }
  o.argv.insert(o.argv.end(), {"--frontend", std::string(cfnd::frontend_name(config.frontend)),
                               "--cache-dir", config.cache_dir, "--socket", config.socket_path,
                               "--log-level", config.log_level});
  if (config.fd_holder) {
    o.argv.emplace_back("--fd-holder");
  }
  if (config.allow_fail_open) {
    o.argv.emplace_back("--allow-fail-open");
  }
  o.argv.insert(o.argv.end(), {"--read-timeout", std::to_string(config.read_timeout_s)});
  if (config.cache_limit_percent != 0) {
    o.argv.insert(o.argv.end(),
                  {"--cache-limit", std::to_string(config.cache_limit_percent) + "%"});
  } else if (config.cache_limit != 0) {
    o.argv.insert(o.argv.end(), {"--cache-limit", std::to_string(config.cache_limit)});
  }
  if (!config.metrics_address.empty()) {
    o.argv.insert(o.argv.end(), {"--metrics-address", config.metrics_address});
  }
  o.log_path = config.cache_dir + "/daemon.log";
  o.new_session = true;
  auto pid = base::spawn(o);
  if (!pid) {
    return fail(pid.error().to_string());
  }
  const control::Client probe(config.socket_path, std::chrono::milliseconds(1000));
  auto st = base::wait_ready(
      *pid, [&] { return probe.ping().has_value(); },
      std::chrono::steady_clock::now() + std::chrono::seconds(15));
  if (!st && st.error().code == ECHILD) {
    return fail("the daemon exited at start; see " + o.log_path);
  }
  if (!st) {
    return fail("the daemon did not answer; see " + o.log_path);
  }
  return 0;
}

int cmd_mount(const cfnd::Config& config, const Common& c, const std::string& source,
              const std::string& dir, const std::string& blob_dir, const std::string& fsid,
              const std::string& domain_id) {
  control::BindRequest req;
  req.mountpoint = std::filesystem::absolute(dir).string();
  std::error_code ec;
  if (std::filesystem::is_regular_file(source, ec)) {
    if (blob_dir.empty()) {
      return fail(source + " is a local bootstrap: give --blob-dir", 2);
    }
    req.bootstrap = std::filesystem::absolute(source).string();
    req.blob_dir = std::filesystem::absolute(blob_dir).string();
  } else {
    auto ref = registry::Reference::parse(source);
    if (!ref) {
      return fail(source + " is neither a file nor an image reference: " + ref.error().to_string(),
                  2);
    }
    if (!blob_dir.empty()) {
      return fail("--blob-dir goes with a local bootstrap", 2);
    }
    req.reference = source;
    req.registry = c.registry;
    if (!c.mirrors.empty()) {
      req.registry->mirrors =
          std::map<std::string, std::vector<std::string>>{{ref->host, c.mirrors}};
    }
  }
  if (int rc = ensure_daemon(config, c.config_file); rc != 0) {
    return rc;
  }
  req.frontend = c.frontend;
  req.fsid = fsid;
  req.domain_id = domain_id;
  auto a = control::Client(config.socket_path, kCallTimeout).bind(req);
  return a ? 0 : fail(a.error());
}

int cmd_umount(const cfnd::Config& config, const std::string& dir, bool force) {
  auto st = control::Client(config.socket_path, kCallTimeout)
                .unbind({std::filesystem::absolute(dir).string(), force});
  return st ? 0 : fail(st.error());
}

int cmd_accessed(const cfnd::Config& config, const std::string& dir) {
  auto files = control::Client(config.socket_path, kCallTimeout)
                   .accessed(std::filesystem::absolute(dir).string());
  if (!files) {
    return fail(files.error());
  }
  for (const auto& f : *files) {
    std::puts(f.c_str());
  }
  return 0;
}

int cmd_list(const cfnd::Config& config) {
  auto images = control::Client(config.socket_path, kCallTimeout).list();
  if (!images) {
    return fail(images.error());
  }
  std::puts(control::pretty_images(*images).c_str());
  return 0;
}

int cmd_metrics(const cfnd::Config& config, bool prometheus) {
  const control::Client client(config.socket_path, kCallTimeout);
  if (prometheus) {
    auto text = client.metrics_prometheus();
    if (!text) {
      return fail(text.error());
    }
    std::fputs(text->c_str(), stdout);
    return 0;
  }
  auto m = client.metrics();
  if (!m) {
    return fail(m.error());
  }
  std::puts(control::pretty_metrics(*m).c_str());
  return 0;
}

std::string utc_time(std::int64_t ms) {
  const std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// A table for people: id, bytes on disk, last use (UTC), in use by which mounts.
int cmd_cache_ls(const cfnd::Config& config, bool json) {
  auto l = control::Client(config.socket_path, kCallTimeout).cache_ls();
  if (!l) {
    return fail(l.error());
  }
  if (json) {
    std::puts(control::pretty_cache_listing(*l).c_str());
    return 0;
  }
  std::printf("%-72s %14s %14s  %-20s  %s\n", "ENTRY", "BYTES", "KERNEL BYTES", "LAST USE",
              "IN USE BY");
  for (const auto& e : l->entries) {
    std::string users;
    for (const auto& m : e.mounts) {
      users += (users.empty() ? "" : ",") + m;
    }
    if (users.empty() && e.in_use) {
      users = "(open)";
    }
    std::printf("%-72s %14llu %14llu  %-20s  %s\n", e.id.c_str(),
                static_cast<unsigned long long>(e.bytes),
                static_cast<unsigned long long>(e.kernel_bytes), utc_time(e.last_use_ms).c_str(),
                users.empty() ? "-" : users.c_str());
  }
  std::printf("total %llu bytes in %zu entries; limit %llu (high %llu, low %llu)\n",
              static_cast<unsigned long long>(l->bytes), l->entries.size(),
              static_cast<unsigned long long>(l->limit), static_cast<unsigned long long>(l->high),
              static_cast<unsigned long long>(l->low));
  return 0;
}

int cmd_cache_gc(const cfnd::Config& config, bool dry_run) {
  auto g = control::Client(config.socket_path, kCallTimeout).cache_gc(dry_run);
  if (!g) {
    return fail(g.error());
  }
  std::puts(control::pretty_gc(*g).c_str());
  return 0;
}

int cmd_cache_rm(const cfnd::Config& config, const std::string& id) {
  auto st = control::Client(config.socket_path, kCallTimeout).cache_rm(id);
  return st ? 0 : fail(st.error());
}

int cmd_status(const cfnd::Config& config) {
  auto s = control::Client(config.socket_path, kCallTimeout).status();
  if (!s) {
    return fail(s.error().message + " (is a daemon running on " + config.socket_path + "?)");
  }
  std::puts(control::pretty_status(*s).c_str());
  return 0;
}

// True while pid names a process that has not exited (a zombie has exited).
bool alive(std::int64_t pid) {
  if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
    return false;
  }
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) {
    return false;
  }
  const auto close = line.rfind(')');
  return close == std::string::npos || close + 2 >= line.size() || line[close + 2] != 'Z';
}

// Ask the daemon to stop (as SIGTERM does: unmount every image, give /dev/cachefiles and
// the fanotify group up) and wait until its process is gone.
int cmd_stop(const cfnd::Config& config, unsigned timeout_s) {
  auto a = control::Client(config.socket_path, kCallTimeout).stop();
  if (!a) {
    if (a.error().code == ENOENT || a.error().code == ECONNREFUSED) {
      std::printf("no daemon answers on %s: nothing to stop\n", config.socket_path.c_str());
      return 0;
    }
    return fail(a.error());
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (alive(a->pid)) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return fail(fmt::format(
          "the daemon (pid {}) is still unmounting after {} s; its log says why (a busy "
          "mount is detached; `kill -9 {}` loses its lazy mounts' unread data)",
          a->pid, timeout_s, a->pid));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::printf("stopped the daemon (pid %lld)\n", static_cast<long long>(a->pid));
  return 0;
}

// The config file, then the command line over it. Errors: exit status 2.
std::optional<cfnd::Config> make_config(const Common& c, bool apply_registry) {
  cfnd::Config config;
  if (!c.config_file.empty()) {
    auto loaded = cfnd::load_config(c.config_file);
    if (!loaded) {
      fail(loaded.error().to_string());
      return std::nullopt;
    }
    config = std::move(*loaded);
  }
  if (!c.frontend.empty()) {
    auto f = cfnd::parse_frontend(c.frontend);
    if (!f) {
      fail(f.error().to_string());
      return std::nullopt;
    }
    config.frontend = *f;
  }
  if (!c.cache_dir.empty()) {
    config.cache_dir = std::filesystem::absolute(c.cache_dir);
  }
  if (!c.socket.empty()) {
    config.socket_path = std::filesystem::absolute(c.socket);
  }
  if (!c.log_level.empty()) {
    config.log_level = c.log_level;
  }
  if (c.fd_holder) {
    config.fd_holder = true;
  }
  if (c.allow_fail_open) {
    config.allow_fail_open = true;
  }
  if (c.read_timeout) {
    config.read_timeout_s = *c.read_timeout;
  }
  if (!c.cache_limit.empty()) {
    if (auto st = cfnd::set_cache_limit(config, c.cache_limit); !st) {
      fail(st.error().to_string());
      return std::nullopt;
    }
  }
  if (c.metrics_address) {
    config.metrics_address = *c.metrics_address;
  }
  if (apply_registry) {
    if (!c.mirrors.empty()) {
      fail(
          "--mirror goes with mount (a host's mirrors in the daemon config: "
          "registry.mirrors)");
      return std::nullopt;
    }
    auto text = control::to_json(c.registry);
    if (!text) {
      fail(text.error().to_string());
      return std::nullopt;
    }
    auto r = cfnd::parse_registry_options(*text, config.registry);
    if (!r) {
      fail(r.error().to_string());
      return std::nullopt;
    }
    config.registry = std::move(*r);
  }
  return config;
}

void add_registry_options(CLI::App& app, Common& c) {
  auto ms = [](double s) { return static_cast<std::uint64_t>(s * 1000.0 + 0.5); };
  auto& r = c.registry;
  app.add_flag_callback(
      "--plain-http", [&r] { r.plain_http = true; }, "http:// for registries");
  app.add_flag_callback(
      "--insecure", [&r] { r.insecure = true; }, "TLS without certificate verification");
  app.add_option_function<std::vector<std::string>>(
      "--ca-file",
      [&r](const std::vector<std::string>& files) {
        r.ca_files.emplace();
        for (const auto& f : files) {
          r.ca_files->push_back(std::filesystem::absolute(f).string());
        }
      },
      "extra trusted CA (PEM); repeatable");
  app.add_option_function<std::string>(
      "--docker-config",
      [&r](const std::string& f) { r.docker_config = std::filesystem::absolute(f).string(); },
      "docker config.json for credentials");
  app.add_option("--mirror", c.mirrors, "mirror URL for the image's host; repeatable");
  app.add_option_function<double>(
         "--connect-timeout", [&r, ms](double s) { r.connect_timeout_ms = ms(s); },
         "seconds (default 5)")
      ->check(CLI::PositiveNumber);
  app.add_option_function<double>(
         "--request-timeout", [&r, ms](double s) { r.request_timeout_ms = ms(s); },
         "seconds per try (default 60)")
      ->check(CLI::PositiveNumber);
  app.add_option_function<double>(
         "--stall-timeout", [&r, ms](double s) { r.stall_timeout_ms = ms(s); },
         "seconds without a byte (default 10)")
      ->check(CLI::PositiveNumber);
  app.add_option_function<unsigned>(
         "--retries", [&r](unsigned n) { r.retries = n; },
         "retries after the first try (default 3)")
      ->check(CLI::Range(0, 100));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cachefilesd-nydus: lazy RAFS v6 / EROFS image daemon"};
  app.fallthrough();
  app.set_version_flag("--version", std::string("cachefilesd-nydus ") + CFN_VERSION);
  Common c;
  app.add_option("--config", c.config_file, "JSON config file");
  app.add_option("--frontend", c.frontend, "auto, cachefiles, fanotify or fuse");
  app.add_option("--cache-dir", c.cache_dir, "blob cache directory");
  app.add_option("--socket", c.socket, "control socket path");
  app.add_option("--log-level", c.log_level, "trace, debug, info, warn, error, off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  app.add_flag("--fd-holder", c.fd_holder,
               "failover without systemd: keep /dev/cachefiles and the fanotify group in an fd "
               "holder process");
  app.add_flag("--allow-fail-open", c.allow_fail_open,
               "let the fanotify front end run without an fd holder or systemd's fd store "
               "(a dead daemon's readers then read holes as zeros)");
  app.add_option("--read-timeout", c.read_timeout,
                 "seconds a read waits for uncached bytes before EIO, retries included "
                 "(default 30; 0: the registry timeouts only)")
      ->check(CLI::Range(0, 3600));
  app.add_option("--cache-limit", c.cache_limit,
                 "the blob cache's size limit: bytes (10G, 512M) or a percent of its file "
                 "system (20%); 0: none (default; the config's cache.limit)");
  app.add_option("--metrics-address", c.metrics_address,
                 "HOST:PORT of an HTTP endpoint serving /metrics (Prometheus text) and /healthz, "
                 "e.g. 127.0.0.1:9110 (default: off)");
  add_registry_options(app, c);

  auto* mount = app.add_subcommand("mount", "bind an image and mount it lazily on DIR");
  std::string source;
  std::string dir;
  std::string blob_dir;
  mount->add_option("SOURCE", source, "an image reference, or a local bootstrap (image.boot)")
      ->required();
  mount->add_option("DIR", dir, "mount point")->required();
  mount->add_option("--blob-dir", blob_dir, "directory of a local bootstrap's blob files");
  std::string fsid;
  std::string domain_id;
  mount->add_option("--fsid", fsid,
                    "cachefiles: the image's fsid (default: 32 hex digits of the bootstrap's "
                    "sha256)");
  mount->add_option("--domain-id", domain_id,
                    "cachefiles: share blobs (and page cache) with the domain's other images");
  auto* umount = app.add_subcommand("umount", "unmount DIR and unbind its image");
  bool force = false;
  umount->add_option("DIR", dir, "mount point")->required();
  umount->add_flag("--force", force, "detach even when busy");
  auto* list = app.add_subcommand("list", "list bound images (JSON)");
  auto* accessed = app.add_subcommand(
      "accessed",
      "print the files of DIR's image that were read, one a line, in the order of their first "
      "read (a prefetch list)");
  accessed->add_option("DIR", dir, "mount point")->required();
  auto* metrics = app.add_subcommand("metrics", "print metrics (JSON)");
  bool prom = false;
  metrics->add_flag("--prometheus", prom, "Prometheus text format");
  auto* cache = app.add_subcommand("cache", "the blob cache's space: ls, gc, rm");
  cache->require_subcommand(1);
  auto* cache_ls = cache->add_subcommand(
      "ls", "list the cache's entries: size on disk, last use, the mounts using each");
  bool ls_json = false;
  cache_ls->add_flag("--json", ls_json, "JSON");
  auto* cache_gc = cache->add_subcommand(
      "gc",
      "evict unused entries now, least recently used first, down to the low watermark "
      "(no limit: every unused one)");
  bool dry_run = false;
  cache_gc->add_flag("--dry-run", dry_run, "only print what would go");
  auto* cache_rm = cache->add_subcommand("rm", "remove one unused entry (refused while in use)");
  std::string entry_id;
  cache_rm->add_option("ID", entry_id, "a blob id (or bootstraps/<file>)")->required();
  auto* status = app.add_subcommand(
      "status", "print the daemon's pid, version, front ends, images, cache use, uptime (JSON)");
  auto* stop = app.add_subcommand(
      "stop",
      "stop the daemon gracefully (unmount every image, give the kernel fds up) and "
      "wait until it has exited");
  unsigned stop_timeout = 90;
  stop->add_option("--timeout", stop_timeout, "seconds to wait for the exit (default 90)");
  auto* holder = app.add_subcommand(
      "fd-holder", "keep the daemon's /dev/cachefiles across its restarts (--socket: where)");
  unsigned grace = 300;
  holder->add_option("--grace", grace,
                     "exit this many seconds after the last daemon disconnected (0: never)");
  app.require_subcommand(0, 1);
  CLI11_PARSE(app, argc, argv);

  // A mount's registry options travel with its bind; every other command's set the
  // daemon's defaults.
  auto config = make_config(c, !*mount);
  if (!config) {
    return 2;
  }
  if (*holder) {
    if (c.socket.empty()) {
      return fail("fd-holder needs --socket PATH", 2);
    }
    base::init_logging("cachefilesd-nydus-fd-holder", config->log_level);
    return cfnd::run_fd_holder(config->socket_path, std::chrono::seconds(grace));
  }
  base::init_logging("cachefilesd-nydus", config->log_level);
  if (*mount) {
    return cmd_mount(*config, c, source, dir, blob_dir, fsid, domain_id);
  }
  if (*umount) {
    return cmd_umount(*config, dir, force);
  }
  if (*accessed) {
    return cmd_accessed(*config, dir);
  }
  if (*list) {
    return cmd_list(*config);
  }
  if (*metrics) {
    return cmd_metrics(*config, prom);
  }
  if (*cache_ls) {
    return cmd_cache_ls(*config, ls_json);
  }
  if (*cache_gc) {
    return cmd_cache_gc(*config, dry_run);
  }
  if (*cache_rm) {
    return cmd_cache_rm(*config, entry_id);
  }
  if (*status) {
    return cmd_status(*config);
  }
  if (*stop) {
    return cmd_stop(*config, stop_timeout);
  }
  return run_daemon(*config);
}
