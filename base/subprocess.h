// SPDX-License-Identifier: Apache-2.0
// Starting other programs: one way for the whole project. The child always starts with
// an empty signal mask and every signal at its default disposition, whatever the
// calling thread blocks or ignores (the daemon blocks SIGTERM/SIGINT for its signalfd
// and ignores SIGPIPE: a child that inherited that could not be ended by SIGTERM).
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"

namespace base {

struct SpawnOptions {
  std::vector<std::string> argv;  // argv[0] names the program
  bool search_path = false;       // argv[0] without '/' is looked up in $PATH
  // The child's fds 0, 1 and 2: a fd of ours (dup'd there), or -1 for /dev/null. When
  // log_path is set, it is opened for appending (0600, created) as both 1 and 2.
  int stdin_fd = -1;
  int stdout_fd = -1;
  int stderr_fd = -1;
  std::string log_path;
  bool new_session = false;  // setsid(): signals to our process group do not reach it
};

// Start the program. Errors: the spawn's errno (ENOENT: no such program).
[[nodiscard]] Result<pid_t> spawn(const SpawnOptions& o);

// Reap the child, EINTR retried: its exit status, or 128 + the signal that ended it.
[[nodiscard]] Result<int> wait_child(pid_t pid);

// Wait for `ready` (called now and then again after each `poll_every`) to answer true,
// waking at once when the child exits. Errors: ECHILD when the child exited first (it is
// reaped; `ready` is asked once more), ETIMEDOUT after the deadline.
[[nodiscard]] Status wait_ready(
    pid_t pid, const std::function<bool()>& ready, std::chrono::steady_clock::time_point deadline,
    std::chrono::milliseconds poll_every = std::chrono::milliseconds(50));

struct RunOutput {
  int status = -1;  // exit status, or 128 + signal
  std::string out;
  std::string err;
};

// Run a program to its end: `input` on its stdin, stdout and stderr collected (each at
// most max_output bytes). The child is killed (SIGKILL) and reaped when the deadline
// passes (ETIMEDOUT) or an output grows too large (EMSGSIZE). SIGPIPE from a child that
// does not read its input is never raised in this process.
[[nodiscard]] Result<RunOutput> run_capture(const SpawnOptions& o, std::string_view input,
                                            std::chrono::steady_clock::time_point deadline,
                                            std::size_t max_output);

// A program's own side of that: block SIGTERM and SIGINT in the calling thread (every
// thread started after inherits the mask, so only the program's signalfd or sigwait
// takes them) and ignore SIGPIPE. Call before any thread exists. Returns the blocked set.
sigset_t block_stop_signals();

}  // namespace base
