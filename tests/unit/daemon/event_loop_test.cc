// SPDX-License-Identifier: Apache-2.0
#include "daemon/event_loop.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <thread>

namespace cfnd {
namespace {

TEST(EventLoop, RunsHandlersUntilStopped) {
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop) << loop.error().to_string();
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
  int calls = 0;
  ASSERT_TRUE((*loop)->add(p[0], [&] {
    char b[16];
    while (::read(p[0], b, sizeof b) > 0) {
      ++calls;
    }
    if (calls == 3) {
      (*loop)->remove(p[0]);
      (*loop)->stop();
    }
  }));
  std::thread writer([&] {
    for (int i = 0; i < 3; ++i) {
      ASSERT_EQ(::write(p[1], "x", 1), 1);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  ASSERT_TRUE((*loop)->run());
  writer.join();
  EXPECT_EQ(calls, 3);
  ::close(p[0]);
  ::close(p[1]);
}

TEST(EventLoop, StopFromAnotherThread) {
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop);
  std::thread t([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    (*loop)->stop();
  });
  ASSERT_TRUE((*loop)->run());
  t.join();
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
