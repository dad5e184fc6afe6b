// SPDX-License-Identifier: Apache-2.0
// VM test: the kernel's answers to the /dev/cachefiles session commands that fscache/
// formats, in the orders a daemon can get wrong.
//
//   cachefiles_session EXT4_DIR TMPFS_DIR
//
// Checks: bind before dir is EINVAL; a cache dir on tmpfs cannot be bound (no sync_fs);
// a second tag is EEXIST; a second bind is EBUSY; malformed or unknown commands fail without
// harm; with nothing pending read() returns 0 and poll() reports no POLLIN; "restore" on an
// idle cache is accepted where the kernel has it.
// Exit: 0 passed, 1 failed, 77 skipped (no /dev/cachefiles).
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "base/unique_fd.h"
#include "fscache/protocol.h"

namespace {

int g_failures = 0;

// One write() per command; 0 or -errno.
int command(int devfd, const std::string& cmd) {
  const ssize_t n = ::write(devfd, cmd.data(), cmd.size());
  return n < 0 ? -errno : 0;
}

std::string errname(int rc) {
  return rc == 0 ? "ok" : fmt::format("{} ({})", std::strerror(-rc), -rc);
}

// Sends cmd and checks the answer is `want` (0 or -errno).
void expect(int devfd, const std::string& cmd, int want) {
  const int rc = command(devfd, cmd);
  const bool ok = rc == want;
  std::printf("cachefiles_session: %-4s '%s' -> %s (want %s)\n", ok ? "ok" : "FAIL", cmd.c_str(),
              errname(rc).c_str(), errname(want).c_str());
  if (!ok) {
    ++g_failures;
  }
}

base::UniqueFd open_dev() {
  auto fd = base::UniqueFd::open("/dev/cachefiles", O_RDWR);
  if (!fd) {
    std::printf("cachefiles_session: FAIL %s\n", fd.error().to_string().c_str());
    std::exit(1);
  }
  return std::move(*fd);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s EXT4_DIR TMPFS_DIR\n", argv[0]);
    return 2;
  }
  const std::string ext4_dir = argv[1];
  const std::string tmpfs_dir = argv[2];
  if (::access("/dev/cachefiles", F_OK) != 0) {
    std::printf("cachefiles_session: SKIP: no /dev/cachefiles\n");
    return 77;
  }
  std::error_code ec;
  std::filesystem::create_directories(ext4_dir, ec);
  std::filesystem::create_directories(tmpfs_dir, ec);

  {
    base::UniqueFd dev = open_dev();
    expect(dev.get(), fscache::format_bind_ondemand(), -EINVAL);  // no dir yet
  }
  {
    base::UniqueFd dev = open_dev();
    expect(dev.get(), *fscache::format_dir(tmpfs_dir), 0);
    expect(dev.get(), *fscache::format_tag("tmpfs"), 0);
    // tmpfs has no sync_fs: the kernel refuses to bind a cache there.
    const int rc = command(dev.get(), fscache::format_bind_ondemand());
    std::printf("cachefiles_session: %-4s bind on tmpfs -> %s (want an error)\n",
                rc != 0 ? "ok" : "FAIL", errname(rc).c_str());
    if (rc == 0) {
      ++g_failures;
    }
  }
  {
    base::UniqueFd dev = open_dev();
    const int devfd = dev.get();
    expect(devfd, *fscache::format_dir(ext4_dir), 0);
    expect(devfd, *fscache::format_tag("one"), 0);
    expect(devfd, *fscache::format_tag("two"), -EEXIST);
    expect(devfd, fscache::format_bind_ondemand(), 0);
    expect(devfd, fscache::format_bind_ondemand(), -EBUSY);
    expect(devfd, "copen 1", -EINVAL);                        // no size
    expect(devfd, "copen x,1", -EINVAL);                      // not a number
    expect(devfd, *fscache::format_copen(7, 4096), -EINVAL);  // no such OPEN
    expect(devfd, "nosuchcommand arg", -EOPNOTSUPP);

    std::vector<std::byte> buf(fscache::kMsgMaxSize);
    pollfd p{devfd, POLLIN, 0};
    const int n = ::poll(&p, 1, 100);
    const ssize_t r = ::read(devfd, buf.data(), buf.size());
    const bool idle_ok = n == 0 && r == 0;
    std::printf("cachefiles_session: %-4s idle: poll -> %d, read -> %zd (want 0, 0)\n",
                idle_ok ? "ok" : "FAIL", n, r);
    if (!idle_ok) {
      ++g_failures;
    }
    const int rc = command(devfd, fscache::format_restore());
    if (rc == -EOPNOTSUPP) {
      std::printf("cachefiles_session: note: no 'restore' in this kernel\n");
    } else {
      expect(devfd, fscache::format_restore(), 0);
    }
  }
  if (g_failures != 0) {
    std::printf("cachefiles_session: %d failure(s)\n", g_failures);
    return 1;
  }
  std::printf("cachefiles_session: PASS\n");
  return 0;
}
