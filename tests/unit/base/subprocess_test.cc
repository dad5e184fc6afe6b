// SPDX-License-Identifier: Apache-2.0
// base/subprocess: children start with a clean signal mask and default dispositions, output
// is collected under a deadline and a size cap, and wait_ready wakes on the child's exit.
#include "base/subprocess.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <cstdint>
#include <string>

namespace base {
namespace {

const auto kLong = std::chrono::seconds(60);

SpawnOptions sh(const std::string& script) {
  SpawnOptions o;
  o.argv = {"/bin/sh", "-c", script};
  return o;
}

// What the daemon does before anything else: SIGTERM/SIGINT blocked, SIGPIPE ignored.
class DaemonSignals {
 public:
  DaemonSignals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, &old_mask_);
    old_pipe_ = ::signal(SIGPIPE, SIG_IGN);
  }
  ~DaemonSignals() {
    ::signal(SIGPIPE, old_pipe_);
    pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
  }

 private:
  sigset_t old_mask_{};
  sighandler_t old_pipe_ = SIG_DFL;
};

// The bits of signal numbers 1..31 in a /proc/PID/status mask line ("SigBlk:\t<hex>");
// glibc's internal real-time signals (32, 33) are left out.
std::uint64_t classic_signals(const std::string& status, const std::string& key) {
  const auto at = status.find(key + ":\t");
  if (at == std::string::npos) {
    return ~std::uint64_t{0};
  }
  return std::stoull(status.substr(at + key.size() + 2, 16), nullptr, 16) & 0x7fffffffULL;
}

TEST(Spawn, ChildHasACleanSignalMaskAndDefaultDispositions) {
  DaemonSignals daemon;
  auto r = run_capture(sh("exec cat /proc/self/status"), "",
                       std::chrono::steady_clock::now() + kLong, 1 << 16);
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->status, 0);
  EXPECT_EQ(classic_signals(r->out, "SigBlk"), 0U) << r->out;
  EXPECT_EQ(classic_signals(r->out, "SigIgn"), 0U) << r->out;
}

TEST(Spawn, SigtermEndsAChildOfABlockingThread) {
  DaemonSignals daemon;
  SpawnOptions o;
  o.argv = {"sleep", "1000"};
  o.search_path = true;
  auto pid = spawn(o);
  ASSERT_TRUE(pid) << pid.error().to_string();
  ASSERT_EQ(::kill(*pid, SIGTERM), 0);
  auto st = wait_child(*pid);
  ASSERT_TRUE(st);
  EXPECT_EQ(*st, 128 + SIGTERM);
}

TEST(Spawn, RunCaptureFeedsInputAndCollectsBothOutputs) {
  auto r = run_capture(sh("cat; echo oops >&2; exit 3"), "hello\n",
                       std::chrono::steady_clock::now() + kLong, 4096);
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->status, 3);
  EXPECT_EQ(r->out, "hello\n");
  EXPECT_EQ(r->err, "oops\n");
}

TEST(Spawn, RunCaptureKillsAtTheDeadlineAndTheCap) {
  auto late = run_capture(sh("exec sleep 1000"), "", std::chrono::steady_clock::now(), 4096);
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code, ETIMEDOUT);
  auto big = run_capture(sh("exec yes"), "", std::chrono::steady_clock::now() + kLong, 4096);
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code, EMSGSIZE);
  // A child that never reads its input: no SIGPIPE ends this process.
  auto deaf = run_capture(sh("exec true"), std::string(1000, 'x'),
                          std::chrono::steady_clock::now() + kLong, 4096);
  ASSERT_TRUE(deaf) << deaf.error().to_string();
  EXPECT_EQ(deaf->status, 0);
}

TEST(Spawn, MissingProgram) {
  SpawnOptions o;
  o.argv = {"/nonexistent/program"};
  auto pid = spawn(o);
  ASSERT_FALSE(pid);
  EXPECT_EQ(pid.error().code, ENOENT);
}

TEST(Spawn, WaitReady) {
  auto pid = spawn(sh("exec sleep 1000"));
  ASSERT_TRUE(pid);
  int asked = 0;
  auto st = wait_ready(
      *pid, [&] { return ++asked == 3; }, std::chrono::steady_clock::now() + kLong,
      std::chrono::milliseconds(1));
  EXPECT_TRUE(st);
  EXPECT_EQ(asked, 3);
  ::kill(*pid, SIGKILL);
  EXPECT_EQ(*wait_child(*pid), 128 + SIGKILL);

  auto quitter = spawn(sh("exit 0"));
  ASSERT_TRUE(quitter);
  auto gone = wait_ready(
      *quitter, [] { return false; }, std::chrono::steady_clock::now() + kLong,
      std::chrono::seconds(60));
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, ECHILD);
}

}  // namespace
}  // namespace base
