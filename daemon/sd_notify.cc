// SPDX-License-Identifier: Apache-2.0
#include "daemon/sd_notify.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <systemd/sd-daemon.h>

#include "base/log.h"

namespace cfnd::sd {
namespace {

// libsystemd returns 0 when NOTIFY_SOCKET is unset, > 0 when sent, -errno on failure.
bool checked(int r, std::string_view state) {
  if (r < 0) {
    // First line only: enough to tell which message failed.
    auto first = state.substr(0, state.find('\n'));
    spdlog::warn("sd_notify {}: {}", first, std::strerror(-r));
    return false;
  }
  return r > 0;
}

// STATUS= is one line: newlines in a message would start new assignments.
std::string one_line(std::string_view text) {
  std::string s(text);
  for (char& c : s) {
    if (c == '\n') {
      c = ' ';
    }
  }
  return s;
}

}  // namespace

bool enabled() {
  const char* e = std::getenv("NOTIFY_SOCKET");
  return e != nullptr && *e != '\0';
}

bool notify(std::string_view state) {
  if (!enabled()) {
    return false;
  }
  std::string s(state);
  // unset_environment = 0: the variable stays for later calls (STATUS, STOPPING).
  return checked(::sd_notify(0, s.c_str()), state);
}

bool ready(std::string_view status) {
  return notify("READY=1\nSTATUS=" + one_line(status));
}

bool status(std::string_view text) {
  return notify("STATUS=" + one_line(text));
}

bool stopping(std::string_view status) {
  return notify("STOPPING=1\nSTATUS=" + one_line(status));
}

bool failed(int err, std::string_view status) {
  return notify("STATUS=" + one_line(status) + "\nERRNO=" + std::to_string(err));
}

bool store_fds(std::string_view name, std::span<const int> fds) {
  if (!enabled() || fds.empty()) {
    return false;
  }
  std::string s = "FDSTORE=1\nFDPOLL=0\nFDNAME=" + one_line(name);
  // sd_pid_notify_with_fds takes a non-const array; it does not write to it.
  std::vector<int> copy(fds.begin(), fds.end());
  return checked(
      ::sd_pid_notify_with_fds(0, 0, s.c_str(), copy.data(), static_cast<unsigned>(copy.size())),
      s);
}

bool remove_fds(std::string_view name) {
  return notify("FDSTOREREMOVE=1\nFDNAME=" + one_line(name));
}

std::vector<std::pair<std::string, base::UniqueFd>> take_listen_fds() {
  std::vector<std::pair<std::string, base::UniqueFd>> out;
  char** names = nullptr;
  // unset_environment = 1: LISTEN_* describe this process only.
  const int n = ::sd_listen_fds_with_names(1, &names);
  if (n < 0) {
    spdlog::warn("sd_listen_fds_with_names: {}", std::strerror(-n));
  }
  for (int i = 0; i < n; ++i) {
    const int fd = SD_LISTEN_FDS_START + i;
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    std::string name = names != nullptr && names[i] != nullptr ? names[i] : "unknown";
    out.emplace_back(std::move(name), base::UniqueFd(fd));
  }
  if (names != nullptr) {
    for (char** p = names; *p != nullptr; ++p) {
      std::free(*p);  // NOLINT(cppcoreguidelines-no-malloc): libsystemd's strv
    }
    std::free(names);  // NOLINT(cppcoreguidelines-no-malloc)
  }
  return out;
}

}  // namespace cfnd::sd
