// SPDX-License-Identifier: Apache-2.0
#include "base/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

extern char** environ;

namespace base {
namespace {

using Clock = std::chrono::steady_clock;

int ms_left(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() <= 0 ? 0 : static_cast<int>(std::min<long long>(left.count(), 1 << 30));
}

Result<std::pair<UniqueFd, UniqueFd>> make_pipe() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) {
    return errno_error("pipe");
  }
  return std::pair{UniqueFd(p[0]), UniqueFd(p[1])};
}

// Write all of input unless the reader goes away; SIGPIPE is blocked for this thread
// meanwhile and a pending one consumed, so it cannot end the process.
void write_input(int fd, std::string_view input) {
  sigset_t pipe_set;
  sigset_t old;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
  while (!input.empty()) {
    const ssize_t w = ::write(fd, input.data(), input.size());
    if (w < 0 && errno == EINTR) {
      continue;
    }
    if (w <= 0) {
      break;
    }
    input.remove_prefix(static_cast<std::size_t>(w));
  }
  const timespec zero = {0, 0};
  while (sigtimedwait(&pipe_set, nullptr, &zero) == SIGPIPE) {
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

}  // namespace

Result<pid_t> spawn(const SpawnOptions& o) {
  if (o.argv.empty()) {
    return make_error(EINVAL, "spawn: no program");
  }
  std::vector<std::string> args = o.argv;
  std::vector<char*> argv;
  for (auto& a : args) {
    argv.push_back(a.data());
  }
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  auto std_fd = [&](int target, int ours, int flags) {
    if (ours >= 0) {
      posix_spawn_file_actions_adddup2(&fa, ours, target);
    } else {
      posix_spawn_file_actions_addopen(&fa, target, "/dev/null", flags, 0);
    }
  };
  std_fd(0, o.stdin_fd, O_RDONLY);
  if (!o.log_path.empty()) {
    posix_spawn_file_actions_addopen(&fa, 1, o.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                     0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
  } else {
    std_fd(1, o.stdout_fd, O_WRONLY);
    std_fd(2, o.stderr_fd, O_WRONLY);
  }
  sigset_t none;
  sigset_t all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  if (o.new_session) {
    flags |= POSIX_SPAWN_SETSID;
  }
  posix_spawnattr_setflags(&attr, flags);
  pid_t pid = -1;
  const int rc = o.search_path ? ::posix_spawnp(&pid, argv[0], &fa, &attr, argv.data(), environ)
                               : ::posix_spawn(&pid, argv[0], &fa, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    return errno_error(rc, "start " + o.argv[0]);
  }
  return pid;
}

Result<int> wait_child(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      return errno_error("waitpid");
    }
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

Status wait_ready(pid_t pid, const std::function<bool()>& ready, Clock::time_point deadline,
                  std::chrono::milliseconds poll_every) {
  // A pidfd turns readable when the child exits: the wait between two questions ends
  // at once then.
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  for (;;) {
    if (ready()) {
      return {};
    }
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      if (ready()) {
        return {};
      }
      return errorf(ECHILD, "the child {} exited (status {}) before it was ready", pid,
                    WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    }
    const int left = ms_left(deadline);
    if (left == 0) {
      return make_error(ETIMEDOUT, "the child was not ready by the deadline");
    }
    const int wait_ms = std::min(left, static_cast<int>(poll_every.count()));
    if (pidfd) {
      pollfd p{pidfd.get(), POLLIN, 0};
      (void)::poll(&p, 1, wait_ms);
    } else {
      (void)::poll(nullptr, 0, wait_ms);  // no pidfd (old kernel): a plain wait
    }
  }
}

Result<RunOutput> run_capture(const SpawnOptions& opts, std::string_view input,
                              Clock::time_point deadline, std::size_t max_output) {
  CFN_ASSIGN_OR_RETURN(auto in, make_pipe());
  CFN_ASSIGN_OR_RETURN(auto out, make_pipe());
  CFN_ASSIGN_OR_RETURN(auto err, make_pipe());
  SpawnOptions o = opts;
  o.stdin_fd = in.first.get();
  o.stdout_fd = out.second.get();
  o.stderr_fd = err.second.get();
  o.log_path.clear();
  CFN_ASSIGN_OR_RETURN(const pid_t pid, spawn(o));
  in.first.reset();
  out.second.reset();
  err.second.reset();
  write_input(in.second.get(), input);  // fits the pipe buffer (small inputs): never blocks
  in.second.reset();

  RunOutput result;
  UniqueFd& out_r = out.first;
  UniqueFd& err_r = err.first;
  bool timed_out = false;
  bool overflow = false;
  while ((out_r || err_r) && !overflow) {
    pollfd fds[2];
    nfds_t n = 0;
    int idx_out = -1;
    int idx_err = -1;
    if (out_r) {
      idx_out = static_cast<int>(n);
      fds[n++] = {out_r.get(), POLLIN, 0};
    }
    if (err_r) {
      idx_err = static_cast<int>(n);
      fds[n++] = {err_r.get(), POLLIN, 0};
    }
    const int left = ms_left(deadline);
    if (left == 0) {
      timed_out = true;
      break;
    }
    const int pr = ::poll(fds, n, left);
    if (pr < 0) {
      if (errno == EINTR) {
        continue;
      }
      break;
    }
    auto drain = [&](int idx, UniqueFd& fd, std::string& into) {
      if (idx < 0 || fds[idx].revents == 0) {
        return;
      }
      char buf[4096];
      const ssize_t r = ::read(fd.get(), buf, sizeof(buf));
      if (r < 0 && errno == EINTR) {
        return;
      }
      if (r <= 0) {
        fd.reset();
        return;
      }
      if (into.size() + static_cast<std::size_t>(r) > max_output) {
        overflow = true;
        return;
      }
      into.append(buf, static_cast<std::size_t>(r));
    };
    drain(idx_out, out_r, result.out);
    drain(idx_err, err_r, result.err);
  }
  if (timed_out || overflow) {
    ::kill(pid, SIGKILL);
  }
  CFN_ASSIGN_OR_RETURN(result.status, wait_child(pid));
  if (timed_out) {
    return errorf(ETIMEDOUT, "{} did not finish by its deadline", o.argv[0]);
  }
  if (overflow) {
    return errorf(EMSGSIZE, "{} wrote more than {} bytes", o.argv[0], max_output);
  }
  return result;
}

sigset_t block_stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  return set;
}

}  // namespace base
