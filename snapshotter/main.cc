// SPDX-License-Identifier: Apache-2.0
// containerd-nydus-grpc: containerd's snapshots.v1 API on a unix socket, for containerd's
// [proxy_plugins] (type "snapshot"). Overlayfs snapshots with SQLite metadata under --root.
//
// Start-up order: options, logging, the store, the socket; READY=1 to systemd once the
// socket listens. SIGTERM / SIGINT: stop accepting, let in-flight calls finish (up to
// kDrain), exit 0.
#include <signal.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include "base/file.h"
#include "base/metrics_http.h"
#include "base/subprocess.h"
#include "base/version.h"
#include "snapshotter/config.h"
#include "snapshotter/crash_point.h"
#include "snapshotter/daemon_link.h"
#include "snapshotter/image_mounts.h"
#include "snapshotter/metrics.h"
#include "snapshotter/mounts.h"
#include "snapshotter/nydusd_config.h"
#include "snapshotter/server.h"
#include "snapshotter/service.h"
#include "snapshotter/store.h"

namespace {

constexpr const char* kProgram = "containerd-nydus-grpc";
constexpr std::chrono::seconds kDrain{10};
bool g_logging = false;  // init_log done: errors go to the log too

base::Status init_log(const snapshotter::Options& o) {
  spdlog::sink_ptr sink;
  if (o.log_to_stdout) {
    sink = std::make_shared<spdlog::sinks::stdout_sink_mt>();
  } else {
    std::string dir = o.root + "/logs";
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) {
      return base::errorf(EIO, "creating {}: {}", dir, ec.message());
    }
    try {
      sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(dir + "/" + kProgram + ".log");
    } catch (const spdlog::spdlog_ex& e) {
      return base::errorf(EIO, "log file in {}: {}", dir, e.what());
    }
  }
  auto logger = std::make_shared<spdlog::logger>(kProgram, std::move(sink));
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %l %n: %v");
  logger->set_level(spdlog::level::from_str(o.log_level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(std::move(logger));
  g_logging = true;
  return {};
}

// The socket's directory (made 0700 when missing) and no stale socket in the way.
base::Status prepare_socket(const std::string& address) {
  if (address.empty() || address.size() >= sizeof(sockaddr_un::sun_path)) {
    return base::errorf(EINVAL, "address {:?}: a socket path must be 1..{} bytes", address,
                        sizeof(sockaddr_un::sun_path) - 1);
  }
  auto parent = std::filesystem::path(address).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    if (!std::filesystem::exists(parent, ec)) {
      std::filesystem::create_directories(parent, ec);
      if (ec) {
        return base::errorf(EIO, "creating {}: {}", parent.string(), ec.message());
      }
      if (::chmod(parent.c_str(), 0700) != 0) {
        return base::errno_error("chmod " + parent.string());
      }
    }
  }
  struct stat st {};
  if (::lstat(address.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return base::errorf(EEXIST, "{} exists and is not a socket", address);
    }
    if (::unlink(address.c_str()) != 0) {
      return base::errno_error("removing the stale socket " + address);
    }
  }
  return {};
}

int fail(std::string_view what) {
  std::fprintf(stderr, "%s: %.*s\n", kProgram, static_cast<int>(what.size()), what.data());
  if (g_logging) {
    spdlog::error("{}", what);
  }
  ::sd_notifyf(0, "STATUS=%.*s", static_cast<int>(what.size()), what.data());
  return 1;
}

// Everything from the store on, until a stop signal has been served; the exit status.
int serve(const snapshotter::Options& opts, const snapshotter::NydusdSettings& nydusd);

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "containerd-nydus-grpc: a containerd proxy snapshotter (snapshots.v1 gRPC API) with "
      "overlayfs snapshots and SQLite metadata. Configure containerd with\n"
      "  [proxy_plugins.nydus]\n    type = \"snapshot\"\n    address = \"<--address>\""};
  app.set_version_flag("--version", std::string(kProgram) + " " + CFN_VERSION);
  std::string config_file;
  snapshotter::Overrides ov;
  app.add_option("--config", config_file,
                 "TOML config file (root, address, [log] level / log_to_stdout, [daemon] "
                 "nydusd_path / nydusimage_path / nydusd_config / address / fs_driver / "
                 "domain_id, [experimental] enable_stargz); flags given on the command line "
                 "win over it")
      ->check(CLI::ExistingFile);
  app.add_option("--address", ov.address,
                 std::string("unix socket to serve on; its directory is made 0700 when missing, "
                             "the socket is 0600 (default ") +
                     snapshotter::kDefaultAddress + ")");
  app.add_option("--root", ov.root,
                 std::string("directory of the snapshots, the metadata database and the log "
                             "(default ") +
                     snapshotter::kDefaultRoot + ")");
  app.add_option("--config-path", ov.nydusd_config,
                 "nydusd JSON config for nydus images; must exist and parse (used for lazy "
                 "nydus mounts)");
  app.add_option("--nydusd-path", ov.nydusd_path,
                 "the cachefilesd-nydus daemon to start when none answers on --daemon-socket "
                 "(default: beside this program)");
  app.add_option("--daemon-socket", ov.daemon_address,
                 std::string("the daemon's control socket (default ") +
                     snapshotter::kDefaultDaemonAddress + "; the systemd service's)");
  app.add_option("--fs-driver", ov.fs_driver,
                 "how nydus images are mounted: fscache (cachefiles, fsid/domain_id), fanotify, "
                 "fusedev or auto (the daemon's choice; default)");
  app.add_option("--nydusimg-path", ov.nydusimg_path, "path of the nydus-image program (stored)");
  app.add_option("--log-level", ov.log_level,
                 "trace, debug, info, warn, error or off (default info)");
  app.add_option("--metrics-address", ov.metrics_address,
                 "HOST:PORT of an HTTP endpoint serving /metrics (Prometheus text) and /healthz, "
                 "e.g. 127.0.0.1:9110; TOML [metrics] address (default: off)");
  bool to_stdout = false;
  app.add_flag("--log-to-stdout", to_stdout,
               "log to stdout instead of ROOT/logs/containerd-nydus-grpc.log");
  bool enable_stargz = false;
  app.add_flag("--enable-stargz", enable_stargz,
               "serve eStargz layers (containerd.io/snapshot/stargz/toc.digest) lazily through "
               "the daemon, as nydus images; TOML [experimental] enable_stargz (default: "
               "containerd unpacks them)");
  CLI11_PARSE(app, argc, argv);
  if (to_stdout) {
    ov.log_to_stdout = true;
  }
  if (enable_stargz) {
    ov.enable_stargz = true;
  }

  snapshotter::Options opts;
  if (!config_file.empty()) {
    if (auto st = snapshotter::load_toml_file(config_file, opts); !st) {
      return fail(st.error().message);
    }
  }
  const bool fs_driver_given = ov.fs_driver.has_value() || opts.fs_driver != "auto";
  snapshotter::apply_overrides(ov, opts);
  if (auto st = snapshotter::check_log_level(opts.log_level); !st) {
    return fail(st.error().message);
  }
  if (auto st = snapshotter::check_fs_driver(opts.fs_driver); !st) {
    return fail(st.error().message);
  }
  if (opts.root.empty() || opts.root[0] != '/') {
    // Checked before the log directory is made under it.
    return fail("root " + opts.root + " is not an absolute path");
  }
  if (auto st = init_log(opts); !st) {
    return fail(st.error().message);
  }
  snapshotter::NydusdSettings nydusd;
  if (!opts.nydusd_config.empty()) {
    auto n = snapshotter::load_nydusd_config(opts.nydusd_config);
    if (!n) {
      return fail(n.error().message);
    }
    nydusd = std::move(*n);
    for (const auto& k : nydusd.unknown_keys) {
      spdlog::warn("{}: key {} not used", opts.nydusd_config, k);
    }
    for (const auto& u : nydusd.unsupported) {
      spdlog::warn("{}: {}", opts.nydusd_config, u);
    }
    if (!nydusd.cache_dir.empty()) {
      nydusd.daemon_args.insert(nydusd.daemon_args.end(), {"--cache-dir", nydusd.cache_dir});
    }
    if (nydusd.daemon_config_json != "{}") {
      // The daemon-wide settings, for a daemon we start (a running one keeps its own).
      std::string path = opts.root + "/daemon-config.json";
      std::error_code ec;
      std::filesystem::create_directories(opts.root, ec);
      if (auto st = base::write_file_atomic(
              path, std::as_bytes(std::span(nydusd.daemon_config_json)), 0600);
          !st) {
        return fail(st.error().message);
      }
      nydusd.daemon_args.insert(nydusd.daemon_args.end(), {"--config", path});
    }
    if (opts.fs_driver == "auto" && !nydusd.fs_driver.empty() && !fs_driver_given) {
      opts.fs_driver = nydusd.fs_driver;
    }
  }
  for (const auto& k : opts.unknown_keys) {
    spdlog::warn("{}: unknown key {} ignored", config_file, k);
  }
  snapshotter::init_crash_points();
  const int rc = serve(opts, nydusd);
  if (rc == 0) {
    spdlog::info("exited cleanly");
  }
  // Only now: every object of serve() is gone, and with them every thread that logs (the
  // store's removal thread may log while its destructor joins it). spdlog::shutdown() drops
  // the default logger, and a line logged after it is a call through a null pointer.
  spdlog::shutdown();
  return rc;
}

namespace {

int serve(const snapshotter::Options& opts, const snapshotter::NydusdSettings& nydusd) {
  // Before any thread: only sigwait below takes these.
  const sigset_t set = base::block_stop_signals();

  auto store = snapshotter::Store::open(opts.root);
  if (!store) {
    return fail(store.error().message);
  }
  if (auto st = prepare_socket(opts.address); !st) {
    return fail(st.error().message);
  }
  snapshotter::DaemonStart start;
  start.socket = opts.daemon_address;
  start.program =
      opts.nydusd_path.empty() ? snapshotter::default_daemon_program() : opts.nydusd_path;
  start.frontend = snapshotter::frontend_of(opts.fs_driver);
  if (start.frontend.empty()) {
    start.frontend = "auto";
  }
  start.log_path = opts.root + "/logs/cachefilesd-nydus.log";
  snapshotter::MountPolicy policy;
  policy.frontend = snapshotter::frontend_of(opts.fs_driver);
  policy.domain_id = nydusd.domain_id.empty() ? opts.domain_id : nydusd.domain_id;
  if (nydusd.registry != control::RegistryOverrides{}) {
    policy.registry = nydusd.registry;
  }
  policy.mirror_urls = nydusd.mirror_urls;
  policy.auth = nydusd.auth;
  if (!nydusd.auth.empty()) {
    policy.auth_source = "the backend auth of the nydusd config " + opts.nydusd_config;
  }
  policy.check_interval = std::chrono::seconds(1);
  policy.prefetch_at_pull = opts.prefetch_at_pull;
  start.args = nydusd.daemon_args;
  auto daemon = std::make_shared<snapshotter::DaemonLink>(std::move(start));
  snapshotter::SnapshotFacts facts;
  facts.alive = [&](const std::string& key) {
    auto i = (*store)->stat(key);
    return i.has_value() && i->kind != snapshotter::Kind::kCommitted;
  };
  facts.committed_id = [&](const std::string& name) -> std::optional<int64_t> {
    auto i = (*store)->stat(name);
    if (!i || i->kind != snapshotter::Kind::kCommitted) {
      return std::nullopt;
    }
    auto chain = (*store)->lineage(name);
    if (!chain || chain->empty()) {
      return std::nullopt;
    }
    return chain->front().id;
  };
  auto images = snapshotter::ImageMounts::open(opts.root, daemon, policy, facts);
  if (!images) {
    return fail(images.error().message);
  }
  bool index_off = snapshotter::overlay_has_index();
  snapshotter::OperationMetrics op_metrics;
  std::unique_ptr<base::MetricsHttpServer> metrics_http;
  if (!opts.metrics_address.empty()) {
    base::MetricsHttpOptions mo;
    mo.address = opts.metrics_address;
    mo.metrics = [&op_metrics] { return op_metrics.prometheus(CFN_VERSION); };
    auto m = base::MetricsHttpServer::start(std::move(mo));
    if (!m) {
      return fail(m.error().message);
    }
    metrics_http = std::move(*m);
    spdlog::info("metrics on http://{}/metrics", metrics_http->address());
  }
  snapshotter::Service service(**store, index_off, images->get(), &op_metrics, opts.enable_stargz);
  // The socket is made by Server::start: 0600 from birth.
  mode_t old_mask = ::umask(0177);
  auto server = snapshotter::Server::start(service, "unix:" + opts.address);
  ::umask(old_mask);
  if (!server) {
    return fail(server.error().message);
  }
  if (::chmod(opts.address.c_str(), 0600) != 0) {
    spdlog::warn("chmod {}: {}", opts.address, std::strerror(errno));
  }
  spdlog::info("serving on {} (root {}, index=off: {}, eStargz: {})", opts.address, opts.root,
               index_off, opts.enable_stargz ? "lazy" : "unpacked");
  ::sd_notifyf(0, "READY=1\nSTATUS=serving on %s", opts.address.c_str());

  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  spdlog::info("signal {}: draining calls, up to {} s", sig, kDrain.count());
  ::sd_notify(0, "STOPPING=1\nSTATUS=draining");
  (*server)->shutdown(std::chrono::system_clock::now() + kDrain);
  server->reset();
  metrics_http.reset();
  images->reset();
  ::unlink(opts.address.c_str());
  // The rest goes in the reverse order of its making as this returns: the service, then
  // the store, whose destructor joins its removal thread (which finishes the directory
  // tree it is removing first).
  return 0;
}

}  // namespace
