// SPDX-License-Identifier: Apache-2.0
#include "daemon/event_loop.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <thread>

namespace cfnd {
namespace {

TEST(EventLoop, RunsHandlersUntilStopped) {
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop) << loop.error().to_string();
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
  // The writer sends its next byte only once the handler took the last one, so each
  // byte is one wakeup of the loop.
  std::mutex mu;
  std::condition_variable cv;
  int calls = 0;
  int bytes = 0;
  ASSERT_TRUE((*loop)->add(p[0], [&] {
    char b[16];
    ssize_t n = 0;
    std::lock_guard lk(mu);
    ++calls;
    while ((n = ::read(p[0], b, sizeof b)) > 0) {
      bytes += static_cast<int>(n);
    }
    cv.notify_all();
    if (bytes == 3) {
      (*loop)->remove(p[0]);
      (*loop)->stop();
    }
  }));
  std::thread writer([&] {
    for (int i = 0; i < 3; ++i) {
      {
        std::unique_lock lk(mu);
        cv.wait(lk, [&] { return bytes == i; });
      }
      ASSERT_EQ(::write(p[1], "x", 1), 1);
    }
  });
  ASSERT_TRUE((*loop)->run());
  writer.join();
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(bytes, 3);
  ::close(p[0]);
  ::close(p[1]);
}

TEST(EventLoop, StopFromAnotherThread) {
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop);
  // The other thread stops the loop once a handler ran: run() is running then.
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
  std::mutex mu;
  std::condition_variable cv;
  bool running = false;
  ASSERT_TRUE((*loop)->add(p[0], [&] {
    char b[16];
    while (::read(p[0], b, sizeof b) > 0) {
    }
    std::lock_guard lk(mu);
    running = true;
    cv.notify_all();
  }));
  std::thread t([&] {
    ASSERT_EQ(::write(p[1], "x", 1), 1);
    std::unique_lock lk(mu);
    cv.wait(lk, [&] { return running; });
    (*loop)->stop();
  });
  ASSERT_TRUE((*loop)->run());
  t.join();
  (*loop)->remove(p[0]);
  ::close(p[0]);
  ::close(p[1]);
}

TEST(EventLoop, DuplicateFdIsRefused) {
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  ASSERT_TRUE((*loop)->add(p[0], [] {}));
  auto st = (*loop)->add(p[0], [] {});
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EEXIST);
  (*loop)->remove(p[0]);
  ::close(p[0]);
  ::close(p[1]);
}

}  // namespace
}  // namespace cfnd
