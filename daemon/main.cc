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
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "base/log.h"
#include "daemon/config.h"
#include "daemon/control.h"
#include "daemon/fd_holder.h"
#include "daemon/sd_notify.h"
#include "daemon/service.h"
#include "registry/reference.h"

namespace {

using nlohmann::json;
constexpr std::chrono::milliseconds kCallTimeout{120000};

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

int run_daemon(const cfnd::Config& config) {
  raise_nofile();
  // Before any thread exists: every thread inherits the mask and the loop's signalfd
  // is the only taker of these signals.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
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

// Send a request and print the answer's interesting part. Returns the exit status.
int call(const cfnd::Config& config, const json& req, json* answer_out = nullptr) {
  auto r = cfnd::control_call(config.socket_path, req.dump(), kCallTimeout);
  if (!r) {
    std::fprintf(stderr, "cachefilesd-nydus: %s\n", r.error().to_string().c_str());
    return 1;
  }
  auto a = json::parse(*r, nullptr, false);
  if (a.is_discarded() || !a.is_object()) {
    std::fprintf(stderr, "cachefilesd-nydus: bad answer from daemon\n");
    return 1;
  }
  if (a.value("ok", false) != true) {
    std::fprintf(stderr, "cachefilesd-nydus: %s\n", a.value("error", std::string("?")).c_str());
    return 1;
  }
  if (answer_out != nullptr) {
    *answer_out = std::move(a);
  }
  return 0;
}

// Start a daemon in the background unless one answers on the socket. Its log goes to
// <cache_dir>/daemon.log.
int ensure_daemon(const cfnd::Config& config, const std::string& config_file) {
  auto ping =
      cfnd::control_call(config.socket_path, R"({"op":"ping"})", std::chrono::milliseconds(2000));
  if (ping) {
    return 0;
  }
  std::error_code ec;
  std::filesystem::create_directories(config.cache_dir, ec);
  std::string log_path = config.cache_dir + "/daemon.log";
  std::vector<std::string> args = {
      "/proc/self/exe",   "--frontend",     std::string(cfnd::frontend_name(config.frontend)),
      "--cache-dir",      config.cache_dir, "--socket",
      config.socket_path, "--log-level",    config.log_level};
  if (!config_file.empty()) {
    args.insert(args.begin() + 1, {"--config", config_file});
  }
  if (config.fd_holder) {
    args.emplace_back("--fd-holder");
  }
  args.insert(args.end(), {"--read-timeout", std::to_string(config.read_timeout_s)});
  pid_t pid = ::fork();
  if (pid < 0) {
    std::perror("fork");
    return 1;
  }
  if (pid == 0) {
    ::setsid();
    int in = ::open("/dev/null", O_RDONLY);
    int out = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (in >= 0 && out >= 0) {
      ::dup2(in, 0);
      ::dup2(out, 1);
      ::dup2(out, 2);
    }
    std::vector<char*> argv;
    for (auto& a : args) {
      argv.push_back(a.data());
    }
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  for (int i = 0; i < 200; ++i) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      std::fprintf(stderr, "cachefilesd-nydus: the daemon exited at start; see %s\n",
                   log_path.c_str());
      return 1;
    }
    if (cfnd::control_call(config.socket_path, R"({"op":"ping"})",
                           std::chrono::milliseconds(1000))) {
      return 0;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::fprintf(stderr, "cachefilesd-nydus: the daemon did not answer; see %s\n", log_path.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cachefilesd-nydus: lazy RAFS v6 / EROFS image daemon"};
  app.fallthrough();
  std::string config_file;
  std::string frontend;
  std::string cache_dir;
  std::string socket;
  std::string log_level;
  app.add_option("--config", config_file, "JSON config file");
  app.add_option("--frontend", frontend, "auto, cachefiles, fanotify or fuse");
  app.add_option("--cache-dir", cache_dir, "blob cache directory");
  app.add_option("--socket", socket, "control socket path");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error");
  bool fd_holder = false;
  app.add_flag("--fd-holder", fd_holder,
               "failover without systemd: keep /dev/cachefiles in an fd holder process");
  std::optional<unsigned> read_timeout;
  app.add_option("--read-timeout", read_timeout,
                 "seconds a read waits for uncached bytes before EIO, retries included "
                 "(default 30; 0: the registry timeouts only)")
      ->check(CLI::Range(0, 3600));

  // Registry options: the daemon's defaults, or one mount's overrides.
  bool plain_http = false;
  bool insecure = false;
  std::vector<std::string> ca_files;
  std::vector<std::string> mirrors;
  std::string docker_config;
  double connect_timeout = 0;
  double request_timeout = 0;
  double stall_timeout = 0;
  unsigned retries = 0;
  std::vector<CLI::Option*> reg_opts = {
      app.add_flag("--plain-http", plain_http, "http:// for registries"),
      app.add_flag("--insecure", insecure, "TLS without certificate verification"),
      app.add_option("--ca-file", ca_files, "extra trusted CA (PEM); repeatable"),
      app.add_option("--docker-config", docker_config, "docker config.json for credentials"),
      app.add_option("--mirror", mirrors, "mirror URL for the image's host; repeatable"),
      app.add_option("--connect-timeout", connect_timeout, "seconds (default 5)")
          ->check(CLI::PositiveNumber),
      app.add_option("--request-timeout", request_timeout, "seconds per try (default 60)")
          ->check(CLI::PositiveNumber),
      app.add_option("--stall-timeout", stall_timeout, "seconds without a byte (default 10)")
          ->check(CLI::PositiveNumber),
      app.add_option("--retries", retries, "retries after the first try (default 3)")
          ->check(CLI::Range(0, 100)),
  };
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
  auto* holder = app.add_subcommand(
      "fd-holder", "keep the daemon's /dev/cachefiles across its restarts (--socket: where)");
  unsigned grace = 300;
  holder->add_option("--grace", grace,
                     "exit this many seconds after the last daemon disconnected (0: never)");
  app.require_subcommand(0, 1);
  CLI11_PARSE(app, argc, argv);

  cfnd::Config config;
  if (!config_file.empty()) {
    auto c = cfnd::load_config(config_file);
    if (!c) {
      std::fprintf(stderr, "cachefilesd-nydus: %s\n", c.error().to_string().c_str());
      return 2;
    }
    config = std::move(*c);
  }
  if (!frontend.empty()) {
    auto f = cfnd::parse_frontend(frontend);
    if (!f) {
      std::fprintf(stderr, "cachefilesd-nydus: %s\n", f.error().to_string().c_str());
      return 2;
    }
    config.frontend = *f;
  }
  if (!cache_dir.empty()) {
    config.cache_dir = std::filesystem::absolute(cache_dir);
  }
  if (!socket.empty()) {
    config.socket_path = std::filesystem::absolute(socket);
  }
  if (!log_level.empty()) {
    config.log_level = log_level;
  }
  if (fd_holder) {
    config.fd_holder = true;
  }
  if (read_timeout) {
    config.read_timeout_s = *read_timeout;
  }
  if (*holder) {
    if (socket.empty()) {
      std::fprintf(stderr, "cachefilesd-nydus: fd-holder needs --socket PATH\n");
      return 2;
    }
    base::init_logging("cachefilesd-nydus-fd-holder", config.log_level);
    return cfnd::run_fd_holder(config.socket_path, std::chrono::seconds(grace));
  }
  // The registry options given on this command line, as RegistryOptions JSON keys.
  json reg = json::object();
  auto ms = [](double s) { return static_cast<std::uint64_t>(s * 1000.0 + 0.5); };
  if (reg_opts[0]->count() > 0) {
    reg["plain_http"] = plain_http;
  }
  if (reg_opts[1]->count() > 0) {
    reg["insecure"] = insecure;
  }
  if (!ca_files.empty()) {
    std::vector<std::string> abs;
    for (const auto& f : ca_files) {
      abs.push_back(std::filesystem::absolute(f).string());
    }
    reg["ca_files"] = abs;
  }
  if (!docker_config.empty()) {
    reg["docker_config"] = std::filesystem::absolute(docker_config).string();
  }
  if (connect_timeout > 0) {
    reg["connect_timeout_ms"] = ms(connect_timeout);
  }
  if (request_timeout > 0) {
    reg["request_timeout_ms"] = ms(request_timeout);
  }
  if (stall_timeout > 0) {
    reg["stall_timeout_ms"] = ms(stall_timeout);
  }
  if (reg_opts[8]->count() > 0) {
    reg["retries"] = retries;
  }
  if (!*mount) {
    if (!mirrors.empty()) {
      std::fprintf(stderr,
                   "cachefilesd-nydus: --mirror goes with mount (a host's mirrors in the "
                   "daemon config: registry.mirrors)\n");
      return 2;
    }
    auto r = cfnd::parse_registry_options(reg.dump(), config.registry);
    if (!r) {
      std::fprintf(stderr, "cachefilesd-nydus: %s\n", r.error().to_string().c_str());
      return 2;
    }
    config.registry = std::move(*r);
  }
  base::init_logging("cachefilesd-nydus", config.log_level);

  if (*mount) {
    json req{{"op", "bind"}, {"mountpoint", std::filesystem::absolute(dir).string()}};
    std::error_code ec;
    if (std::filesystem::is_regular_file(source, ec)) {
      if (blob_dir.empty()) {
        std::fprintf(stderr, "cachefilesd-nydus: %s is a local bootstrap: give --blob-dir\n",
                     source.c_str());
        return 2;
      }
      req["bootstrap"] = std::filesystem::absolute(source).string();
      req["blob_dir"] = std::filesystem::absolute(blob_dir).string();
    } else {
      auto ref = registry::Reference::parse(source);
      if (!ref) {
        std::fprintf(stderr, "cachefilesd-nydus: %s is neither a file nor an image reference: %s\n",
                     source.c_str(), ref.error().to_string().c_str());
        return 2;
      }
      if (!blob_dir.empty()) {
        std::fprintf(stderr, "cachefilesd-nydus: --blob-dir goes with a local bootstrap\n");
        return 2;
      }
      if (!mirrors.empty()) {
        reg["mirrors"] = json{{ref->host, mirrors}};
      }
      req["reference"] = source;
      req["registry"] = reg;
    }
    if (int rc = ensure_daemon(config, config_file); rc != 0) {
      return rc;
    }
    if (!frontend.empty()) {
      req["frontend"] = frontend;
    }
    if (!fsid.empty()) {
      req["fsid"] = fsid;
    }
    if (!domain_id.empty()) {
      req["domain_id"] = domain_id;
    }
    return call(config, req);
  }
  if (*umount) {
    return call(config, json{{"op", "unbind"},
                             {"mountpoint", std::filesystem::absolute(dir).string()},
                             {"force", force}});
  }
  if (*accessed) {
    json a;
    if (int rc = call(
            config,
            json{{"op", "accessed"}, {"mountpoint", std::filesystem::absolute(dir).string()}}, &a);
        rc != 0) {
      return rc;
    }
    for (const auto& f : a["files"]) {
      std::puts(f.get<std::string>().c_str());
    }
    return 0;
  }
  if (*list || *metrics) {
    json req{{"op", *list ? "list" : "metrics"}};
    if (prom) {
      req["format"] = "prometheus";
    }
    json a;
    if (int rc = call(config, req, &a); rc != 0) {
      return rc;
    }
    if (prom) {
      std::fputs(a["text"].get<std::string>().c_str(), stdout);
    } else {
      a.erase("ok");
      std::puts(a.dump(2).c_str());
    }
    return 0;
  }
  return run_daemon(config);
}
