// SPDX-License-Identifier: Apache-2.0
// base/io_uring.h, tested here beside its only user (the daemon's event loop).
#include "base/io_uring.h"

#include <gtest/gtest.h>
#include <linux/time_types.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "base/file.h"
#include "base/unique_fd.h"

namespace base {
namespace {

struct Req {
  int res = 1;
  bool done = false;
};

Result<IoUring> ring_or_skip() {
  return IoUring::create(16);
}

#define CFN_RING_OR_SKIP(var)                                                          \
  auto var##_r = ring_or_skip();                                                       \
  if (!var##_r && (var##_r.error().code == ENOSYS || var##_r.error().code == EPERM)) { \
    GTEST_SKIP() << "io_uring unavailable: " << var##_r.error().to_string();           \
  }                                                                                    \
  ASSERT_TRUE(var##_r) << var##_r.error().to_string();                                 \
  IoUring& var = *var##_r

// Reap until every request in reqs is done (each wait call blocks for one).
void reap_all(IoUring& ring, std::vector<Req*> reqs) {
  auto pending = [&] {
    for (Req* r : reqs) {
      if (!r->done) {
        return true;
      }
    }
    return false;
  };
  while (pending()) {
    auto n = ring.wait(1, nullptr, [](const IoCompletion& c) {
      auto* r = static_cast<Req*>(c.user_data);
      r->res = c.res;
      r->done = true;
    });
    ASSERT_TRUE(n) << n.error().to_string();
  }
}

TEST(IoUring, ProbeNamesNothingMissingHere) {
  auto m = IoUring::missing_features();
  if (!m) {
    GTEST_SKIP() << m.error().to_string();
  }
  EXPECT_EQ(*m, "");
}

TEST(IoUring, Nop) {
  CFN_RING_OR_SKIP(ring);
  Req a;
  Req b;
  ASSERT_TRUE(ring.nop(&a));
  ASSERT_TRUE(ring.nop(&b));
  reap_all(ring, {&a, &b});
  EXPECT_EQ(a.res, 0);
  EXPECT_EQ(b.res, 0);
}

TEST(IoUring, MoveKeepsTheRing) {
  CFN_RING_OR_SKIP(ring);
  IoUring moved = std::move(ring);
  Req a;
  ASSERT_TRUE(moved.nop(&a));
  reap_all(moved, {&a});
  EXPECT_EQ(a.res, 0);
}

TEST(IoUring, ReadAndWriteATempFile) {
  CFN_RING_OR_SKIP(ring);
  std::string path =
      (std::string(::getenv("TMPDIR") ? ::getenv("TMPDIR") : "/tmp")) + "/cfnd-uring-XXXXXX";
  const int raw = ::mkstemp(path.data());
  ASSERT_GE(raw, 0);
  UniqueFd fd(raw);
  ::unlink(path.c_str());
  const std::string text = "hello, ring";
  Req w;
  ASSERT_TRUE(ring.write(fd.get(), as_bytes(text), 100, &w));
  reap_all(ring, {&w});
  ASSERT_EQ(w.res, static_cast<int>(text.size()));
  std::vector<std::byte> buf(64);
  Req r;
  ASSERT_TRUE(ring.read(fd.get(), buf, 100, &r));
  reap_all(ring, {&r});
  ASSERT_EQ(r.res, static_cast<int>(text.size()));  // short: end of file
  EXPECT_EQ(std::memcmp(buf.data(), text.data(), text.size()), 0);
  // readv into two pieces.
  char a[5];
  char b[6];
  iovec iov[2] = {{a, sizeof a}, {b, sizeof b}};
  Req v;
  ASSERT_TRUE(ring.readv(fd.get(), iov, 2, 100, &v));
  reap_all(ring, {&v});
  ASSERT_EQ(v.res, 11);
  EXPECT_EQ(std::string(a, 5) + std::string(b, 6), text);
  // A bad fd comes back as -EBADF in the completion, not as a prep error.
  Req bad;
  ASSERT_TRUE(ring.read(-1, buf, 0, &bad));
  reap_all(ring, {&bad});
  EXPECT_EQ(bad.res, -EBADF);
}

TEST(IoUring, PollOnAPipe) {
  CFN_RING_OR_SKIP(ring);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd rd(p[0]);
  UniqueFd wr(p[1]);
  Req poll;
  ASSERT_TRUE(ring.poll_add(rd.get(), POLLIN, &poll));
  ASSERT_TRUE(ring.submit());
  // Nothing readable yet: a zero-wait reap finds nothing.
  auto n = ring.wait(0, nullptr, [](const IoCompletion&) {});
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 0U);
  ASSERT_EQ(::write(wr.get(), "x", 1), 1);
  reap_all(ring, {&poll});
  EXPECT_TRUE((poll.res & POLLIN) != 0);
}

TEST(IoUring, Timeout) {
  CFN_RING_OR_SKIP(ring);
  __kernel_timespec ts{0, 1000000};  // 1 ms
  Req t;
  ASSERT_TRUE(ring.timeout(&ts, 0, &t));
  reap_all(ring, {&t});
  EXPECT_EQ(t.res, -ETIME);
  // wait() with a timeout and nothing pending returns 0 completions.
  __kernel_timespec wt{0, 1000000};
  auto n = ring.wait(1, &wt, [](const IoCompletion&) {});
  ASSERT_TRUE(n) << n.error().to_string();
  EXPECT_EQ(*n, 0U);
}

TEST(IoUring, CancelAPendingPoll) {
  CFN_RING_OR_SKIP(ring);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd rd(p[0]);
  UniqueFd wr(p[1]);
  Req poll;
  Req cancel;
  ASSERT_TRUE(ring.poll_add(rd.get(), POLLIN, &poll));
  ASSERT_TRUE(ring.submit());
  ASSERT_TRUE(ring.cancel(&poll, &cancel));
  reap_all(ring, {&poll, &cancel});
  EXPECT_EQ(poll.res, -ECANCELED);
  EXPECT_EQ(cancel.res, 0);
  // Cancelling what is not there: -ENOENT.
  Req again;
  ASSERT_TRUE(ring.cancel(&poll, &again));
  reap_all(ring, {&again});
  EXPECT_EQ(again.res, -ENOENT);
  // poll_remove works the same way.
  Req poll2;
  Req rm;
  ASSERT_TRUE(ring.poll_add(rd.get(), POLLIN, &poll2));
  ASSERT_TRUE(ring.submit());
  ASSERT_TRUE(ring.poll_remove(&poll2, &rm));
  reap_all(ring, {&poll2, &rm});
  EXPECT_EQ(poll2.res, -ECANCELED);
  EXPECT_EQ(rm.res, 0);
}

TEST(IoUring, FullSubmissionQueueSubmitsFirst) {
  CFN_RING_OR_SKIP(ring);
  std::vector<Req> reqs(40);  // more than the 16 SQ entries
  std::vector<Req*> ptrs;
  for (auto& r : reqs) {
    ASSERT_TRUE(ring.nop(&r));
    ptrs.push_back(&r);
  }
  reap_all(ring, ptrs);
  for (const auto& r : reqs) {
    EXPECT_EQ(r.res, 0);
  }
}

}  // namespace
}  // namespace base
