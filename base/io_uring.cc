// SPDX-License-Identifier: Apache-2.0
#include "base/io_uring.h"

#include <liburing.h>

#include <utility>

namespace base {
namespace {

struct OpName {
  int op;
  const char* name;
};

// The ops the daemon's event loop and front ends use.
constexpr OpName kNeededOps[] = {
    {IORING_OP_NOP, "NOP"},
    {IORING_OP_READ, "READ"},
    {IORING_OP_WRITE, "WRITE"},
    {IORING_OP_READV, "READV"},
    {IORING_OP_WRITEV, "WRITEV"},
    {IORING_OP_POLL_ADD, "POLL_ADD"},
    {IORING_OP_POLL_REMOVE, "POLL_REMOVE"},
    {IORING_OP_TIMEOUT, "TIMEOUT"},
    {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"},
};

std::string missing_in(const io_uring_probe* probe, unsigned features) {
  std::string missing;
  auto add = [&](const char* what) {
    if (!missing.empty()) {
      missing += ", ";
    }
    missing += what;
  };
  for (const auto& op : kNeededOps) {
    if (probe == nullptr || io_uring_opcode_supported(probe, op.op) == 0) {
      add(op.name);
    }
  }
  // NODROP: a full completion queue never loses a completion (a lost one would leak
  // its request). SUBMIT_STABLE: timespecs and iovecs may go once submit() returns.
  if ((features & IORING_FEAT_NODROP) == 0) {
    add("FEAT_NODROP");
  }
  if ((features & IORING_FEAT_SUBMIT_STABLE) == 0) {
    add("FEAT_SUBMIT_STABLE");
  }
  return missing;
}

}  // namespace

Result<IoUring> IoUring::create(unsigned entries) {
  IoUring r;
  r.ring_ = new io_uring{};
  io_uring_params params{};
  const int rc = io_uring_queue_init_params(entries, r.ring_, &params);
  if (rc < 0) {
    delete r.ring_;
    r.ring_ = nullptr;
    return errno_error(-rc, "io_uring_queue_init");
  }
  io_uring_probe* probe = io_uring_get_probe_ring(r.ring_);
  std::string missing = missing_in(probe, params.features);
  if (probe != nullptr) {
    io_uring_free_probe(probe);
  }
  if (!missing.empty()) {
    return errorf(EOPNOTSUPP, "io_uring on this kernel lacks: {}", missing);
  }
  return r;
}

Result<std::string> IoUring::missing_features() {
  io_uring ring{};
  io_uring_params params{};
  const int rc = io_uring_queue_init_params(2, &ring, &params);
  if (rc < 0) {
    return errno_error(-rc, "io_uring_queue_init");
  }
  io_uring_probe* probe = io_uring_get_probe_ring(&ring);
  std::string missing = missing_in(probe, params.features);
  if (probe != nullptr) {
    io_uring_free_probe(probe);
  }
  io_uring_queue_exit(&ring);
  return missing;
}

IoUring::IoUring(IoUring&& o) noexcept : ring_(std::exchange(o.ring_, nullptr)) {}

IoUring& IoUring::operator=(IoUring&& o) noexcept {
  if (this != &o) {
    this->~IoUring();
    ring_ = std::exchange(o.ring_, nullptr);
  }
  return *this;
}

IoUring::~IoUring() {
  if (ring_ != nullptr) {
    io_uring_queue_exit(ring_);
    delete ring_;
    ring_ = nullptr;
  }
}

int IoUring::ring_fd() const {
  return ring_->ring_fd;
}

unsigned IoUring::sq_space() const {
  return io_uring_sq_space_left(ring_);
}

Result<io_uring_sqe*> IoUring::sqe() {
  io_uring_sqe* s = io_uring_get_sqe(ring_);
  if (s == nullptr) {
    CFN_TRY(submit());
    s = io_uring_get_sqe(ring_);
  }
  if (s == nullptr) {
    return make_error(EBUSY, "io_uring submission queue full");
  }
  return s;
}

Status IoUring::nop(void* user_data) {
  CFN_ASSIGN_OR_RETURN(io_uring_sqe * s, sqe());
  io_uring_prep_nop(s);
  io_uring_sqe_set_data(s, user_data);
  return {};
}

Status IoUring::read(int fd, MutableBytes buf, std::uint64_t off, void* user_data) {
  CFN_ASSIGN_OR_RETURN(io_uring_sqe * s, sqe());
  io_uring_prep_read(s, fd, buf.data(), static_cast<unsigned>(buf.size()), off);
  io_uring_sqe_set_data(s, user_data);
  return {};
}

Status IoUring::write(int fd, Bytes buf, std::uint64_t off, void* user_data) {
  CFN_ASSIGN_OR_RETURN(io_uring_sqe * s, sqe());
  io_uring_prep_write(s, fd, buf.data(), static_cast<unsigned>(buf.size()), off);
  io_uring_sqe_set_data(s, user_data);
  return {};
}

Status IoUring::readv(int fd, const iovec* iov, unsigned count, std::uint64_t off,
                      void* user_data) {
  CFN_ASSIGN_OR_RETURN(io_uring_sqe * s, sqe());
  io_uring_prep_readv(s, fd, iov, count, off);
  io_uring_sqe_set_data(s, user_data);
  return {};
}

Status IoUring::writev(int fd, const iovec* iov, unsigned count, std::uint64_t off,
                       void* user_data) {
  CFN_ASSIGN_OR_RETURN(io_uring_sqe * s, sqe());
  io_uring_prep_writev(s, fd, iov, count, off);
  io_uring_sqe_set_data(s, user_data);
  return {};
}

Status IoUring::poll_add(int fd, unsigned poll_mask, void* user_data) {
  CFN_ASSIGN_OR_RETURN(io_uring_sqe * s, sqe());
  io_uring_prep_poll_add(s, fd, poll_mask);
  io_uring_sqe_set_data(s, user_data);
  return {};
}

Status IoUring::poll_remove(void* target_user_data, void* user_data) {
  CFN_ASSIGN_OR_RETURN(io_uring_sqe * s, sqe());
  io_uring_prep_poll_remove(s, reinterpret_cast<std::uintptr_t>(target_user_data));
  io_uring_sqe_set_data(s, user_data);
  return {};
}

Status IoUring::timeout(const __kernel_timespec* ts, unsigned count, void* user_data) {
  CFN_ASSIGN_OR_RETURN(io_uring_sqe * s, sqe());
  // liburing takes a non-const pointer; the kernel only reads it (at submit, with
  // FEAT_SUBMIT_STABLE, which create() requires).
  io_uring_prep_timeout(s, const_cast<__kernel_timespec*>(ts), count, 0);
  io_uring_sqe_set_data(s, user_data);
  return {};
}

Status IoUring::cancel(void* target_user_data, void* user_data) {
  CFN_ASSIGN_OR_RETURN(io_uring_sqe * s, sqe());
  io_uring_prep_cancel(s, target_user_data, 0);
  io_uring_sqe_set_data(s, user_data);
  return {};
}

Result<unsigned> IoUring::submit() {
  for (;;) {
    const int rc = io_uring_submit(ring_);
    if (rc >= 0) {
      return static_cast<unsigned>(rc);
    }
    if (rc != -EINTR) {
      return errno_error(-rc, "io_uring_submit");
    }
  }
}

Status IoUring::wait_raw(unsigned min_complete, const __kernel_timespec* timeout) {
  if (min_complete == 0) {
    CFN_TRY(submit());
    return {};
  }
  io_uring_cqe* cqe = nullptr;
  const int rc = io_uring_submit_and_wait_timeout(ring_, &cqe, min_complete,
                                                  const_cast<__kernel_timespec*>(timeout), nullptr);
  // -ETIME: the timeout passed; -EINTR: a signal. Either way reap what is there.
  if (rc < 0 && rc != -ETIME && rc != -EINTR) {
    return errno_error(-rc, "io_uring wait");
  }
  return {};
}

bool IoUring::peek(IoCompletion* out) {
  io_uring_cqe* cqe = nullptr;
  if (io_uring_peek_cqe(ring_, &cqe) != 0 || cqe == nullptr) {
    return false;
  }
  out->user_data = io_uring_cqe_get_data(cqe);
  out->res = cqe->res;
  out->flags = cqe->flags;
  io_uring_cqe_seen(ring_, cqe);
  return true;
}

}  // namespace base
