// SPDX-License-Identifier: Apache-2.0
// IoUring: a small move-only owner of one io_uring (liburing 2.3).
//
// Requests are caller objects: every prep call takes a user_data pointer to the
// request, and a completion hands that pointer back. The request (and every buffer,
// iovec or timespec it names) must live until ITS OWN completion is reaped, even
// after a cancel: the kernel may still be using them. Completions carry the kernel's
// answer: res >= 0, or -errno. Short transfers and -EAGAIN are normal; the caller
// requeues the rest. Not thread-safe: one ring per event-loop thread.
//
//   auto ring = base::IoUring::create(256);            // probes the ops it needs
//   CFN_TRY(ring->read(fd, buf, off, &req));
//   CFN_TRY(ring->submit());
//   ring->wait(1, nullptr, [](const base::IoCompletion& c) { ... });
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <optional>
#include <string>

#include "base/bytes.h"
#include "base/result.h"

struct io_uring;
struct io_uring_sqe;
struct __kernel_timespec;

namespace base {

struct IoCompletion {
  void* user_data = nullptr;  // as given to the prep call
  int res = 0;                // the kernel's answer: >= 0, or -errno
  std::uint32_t flags = 0;    // IORING_CQE_F_*
};

class IoUring {
 public:
  // entries: submission queue size (rounded up to a power of two by the kernel).
  // Fails with the errno of io_uring_queue_init (ENOSYS / EPERM where io_uring is
  // off), or EOPNOTSUPP naming every op and feature this kernel lacks: READ, WRITE,
  // READV, WRITEV, POLL_ADD, POLL_REMOVE, TIMEOUT, ASYNC_CANCEL, NOP; FEAT_NODROP,
  // FEAT_SUBMIT_STABLE.
  [[nodiscard]] static Result<IoUring> create(unsigned entries);
  // What create() checks, for a start-up message; empty when all is there.
  [[nodiscard]] static Result<std::string> missing_features();

  IoUring(IoUring&& o) noexcept;
  IoUring& operator=(IoUring&& o) noexcept;
  IoUring(const IoUring&) = delete;
  IoUring& operator=(const IoUring&) = delete;
  ~IoUring();

  // Prep calls queue one SQE. When the submission queue is full they submit what is
  // queued first; EBUSY if still no room (completion queue backed up: reap first).
  [[nodiscard]] Status nop(void* user_data);
  [[nodiscard]] Status read(int fd, MutableBytes buf, std::uint64_t off, void* user_data);
  [[nodiscard]] Status write(int fd, Bytes buf, std::uint64_t off, void* user_data);
  [[nodiscard]] Status readv(int fd, const iovec* iov, unsigned count, std::uint64_t off,
                             void* user_data);
  [[nodiscard]] Status writev(int fd, const iovec* iov, unsigned count, std::uint64_t off,
                              void* user_data);
  // One-shot poll; res is the returned event mask (POLLIN ...) or -errno.
  [[nodiscard]] Status poll_add(int fd, unsigned poll_mask, void* user_data);
  // res 0 when the poll was removed, -ENOENT when not found.
  [[nodiscard]] Status poll_remove(void* target_user_data, void* user_data);
  // A timer: completes with -ETIME when ts elapses, or 0 after `count` other
  // completions (0: time only). *ts must live until submit() returns.
  [[nodiscard]] Status timeout(const __kernel_timespec* ts, unsigned count, void* user_data);
  // Cancel the request whose user_data is target. Its own completion still comes
  // (usually -ECANCELED); this one's res is 0, -ENOENT (not found) or -EALREADY.
  [[nodiscard]] Status cancel(void* target_user_data, void* user_data);

  // Submit queued SQEs; returns how many the kernel took. EINTR is retried.
  [[nodiscard]] Result<unsigned> submit();

  // Submit, then wait for at least min_complete completions (0: do not wait) or until
  // timeout (nullptr: no limit), then hand every ready completion to fn and mark it
  // seen. Returns the number reaped; 0 on timeout. Errors: the errno of the wait.
  template <typename F>
  Result<unsigned> wait(unsigned min_complete, const __kernel_timespec* timeout, F&& fn) {
    CFN_TRY(wait_raw(min_complete, timeout));
    unsigned n = 0;
    IoCompletion c;
    while (peek(&c)) {
      fn(c);
      ++n;
    }
    return n;
  }

  [[nodiscard]] int ring_fd() const;  // for epoll or a parent ring, when needed
  [[nodiscard]] unsigned sq_space() const;

 private:
  IoUring() = default;
  Result<io_uring_sqe*> sqe();
  Status wait_raw(unsigned min_complete, const __kernel_timespec* timeout);
  bool peek(IoCompletion* out);  // the next ready completion, consumed

  io_uring* ring_ = nullptr;  // owned; heap-allocated so moves keep its address
};

}  // namespace base
