// SPDX-License-Identifier: Apache-2.0
#include "snapshotter/daemon_link.h"

#include <sys/wait.h>

#include <algorithm>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "base/subprocess.h"

namespace snapshotter {

std::string default_daemon_program() {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) {
    return "cachefilesd-nydus";
  }
  return (self.parent_path() / "cachefilesd-nydus").string();
}

DaemonLink::DaemonLink(DaemonStart start)
    : start_(std::move(start)), client_(start_.socket, std::chrono::seconds(120)) {}

base::Status DaemonLink::ensure() {
  const control::Client probe(start_.socket, std::chrono::milliseconds(2000));
  if (probe.ping()) {
    return {};
  }
  std::lock_guard lk(start_mu_);
  if (probe.ping()) {
    return {};
  }
  if (child_ > 0) {
    int status = 0;
    if (::waitpid(child_, &status, WNOHANG) == child_) {
      spdlog::warn("the daemon {} we started (pid {}) is gone ({})", start_.program, child_,
                   WIFSIGNALED(status) ? fmt::format("signal {}", WTERMSIG(status))
                                       : fmt::format("exit {}", WEXITSTATUS(status)));
      child_ = -1;
    }
  }
  if (!start_.log_path.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(start_.log_path).parent_path(), ec);
  }
  base::SpawnOptions o;
  o.argv = {start_.program, "--socket", start_.socket};
  if (!start_.frontend.empty()) {
    o.argv.insert(o.argv.end(), {"--frontend", start_.frontend});
  }
  o.argv.insert(o.argv.end(), start_.args.begin(), start_.args.end());
  // Failover: a daemon that dies keeps its /dev/cachefiles and fanotify group in the fd
  // holder, and the one we start next takes them back (the fanotify front end refuses
  // to run without a holder anyway).
  if (std::find(start_.args.begin(), start_.args.end(), "--fd-holder") == start_.args.end()) {
    o.argv.emplace_back("--fd-holder");
  }
  o.log_path = start_.log_path;
  o.new_session = true;
  spdlog::info("no daemon answers on {}: starting {} (log {})", start_.socket, start_.program,
               start_.log_path);
  CFN_ASSIGN_OR_RETURN(pid_t pid, base::spawn(o));
  auto st = base::wait_ready(
      pid, [&] { return probe.ping().has_value(); },
      std::chrono::steady_clock::now() + std::chrono::seconds(15));
  if (!st && st.error().code == ECHILD) {
    return base::errorf(EIO, "the daemon {} exited at start; see {}", start_.program,
                        start_.log_path);
  }
  if (!st) {
    return base::errorf(ETIMEDOUT, "the daemon {} did not answer on {}; see {}", start_.program,
                        start_.socket, start_.log_path);
  }
  // The daemon runs in its own session and outlives us (init reaps it then). One that
  // dies while we live is reaped here, when the next one is started.
  child_ = pid;
  return {};
}

bool DaemonLink::answers() {
  const control::Client probe(start_.socket, std::chrono::milliseconds(2000));
  return probe.ping().has_value();
}

base::Result<control::ImageInfo> DaemonLink::bind(const control::BindRequest& r) {
  return client_.bind(r);
}

base::Status DaemonLink::unbind(const control::UnbindRequest& r) {
  return client_.unbind(r);
}

base::Result<std::vector<control::ImageInfo>> DaemonLink::list() {
  return client_.list();
}

base::Result<control::PrefetchAnswer> DaemonLink::prefetch(const control::PrefetchRequest& r) {
  // Shorter than a bind's wait: the answer only says the list is queued (the daemon goes on
  // without us), and the thread that waits for it is joined at shutdown.
  const control::Client c(start_.socket, kPrefetchTimeout);
  return c.prefetch(r);
}

}  // namespace snapshotter
