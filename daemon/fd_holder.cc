// SPDX-License-Identifier: Apache-2.0
#include "daemon/fd_holder.h"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <map>

#include "base/log.h"
#include "base/subprocess.h"
#include "base/unix_socket.h"

namespace cfnd {
namespace {

constexpr std::pair<HolderVerb, std::string_view> kVerbs[] = {
    {HolderVerb::kPut, "PUT"},  {HolderVerb::kGet, "GET"},   {HolderVerb::kRelease, "RELEASE"},
    {HolderVerb::kOk, "OK"},    {HolderVerb::kFd, "FD"},     {HolderVerb::kNone, "NONE"},
    {HolderVerb::kErr, "ERR"},  {HolderVerb::kDrop, "DROP"}, {HolderVerb::kNext, "NEXT"},
    {HolderVerb::kName, "NAME"}};

bool named(HolderVerb v) {
  return v == HolderVerb::kPut || v == HolderVerb::kGet || v == HolderVerb::kFd ||
         v == HolderVerb::kNone || v == HolderVerb::kDrop || v == HolderVerb::kNext ||
         v == HolderVerb::kName;
}

bool good_name(std::string_view name) {
  if (name.empty() || name.size() > 64) {
    return false;
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return false;
    }
  }
  return true;
}

base::Result<base::UniqueFd> connect_to(const std::string& path) {
  auto s = base::connect_unix(path, SOCK_SEQPACKET);
  if (!s) {
    return base::Unexpected(std::move(s).error().wrap("the fd holder"));
  }
  // A holder that stops answering must not stall the daemon's start for ever.
  timeval tv{10, 0};
  ::setsockopt(s->get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(s->get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return s;
}

}  // namespace

std::size_t holder_fd_count(HolderVerb verb) {
  return verb == HolderVerb::kPut || verb == HolderVerb::kFd ? 1 : 0;
}

base::Result<std::string> format_holder_message(const HolderMessage& m) {
  std::string_view verb;
  for (const auto& [v, text] : kVerbs) {
    if (v == m.verb) {
      verb = text;
    }
  }
  if (verb.empty()) {
    return base::make_error(EINVAL, "fd holder: unknown verb");
  }
  std::string out(verb);
  if (named(m.verb)) {
    if (!good_name(m.arg)) {
      return base::errorf(EINVAL, "fd holder: bad fd name '{}' (1..64 of A-Z a-z 0-9 . _ -)",
                          m.arg);
    }
    out += " " + m.arg;
  } else if (m.verb == HolderVerb::kErr) {
    if (m.arg.empty() || m.arg.find_first_of(std::string_view("\n\0", 2)) != std::string::npos) {
      return base::make_error(EINVAL, "fd holder: an ERR text must be one non-empty line");
    }
    out += " " + m.arg;
  } else if (!m.arg.empty()) {
    return base::errorf(EINVAL, "fd holder: {} takes no argument", verb);
  }
  if (out.size() > kHolderMaxMessage) {
    return base::errorf(EINVAL, "fd holder: message of {} bytes (at most {})", out.size(),
                        kHolderMaxMessage);
  }
  return out;
}

base::Result<HolderMessage> parse_holder_message(std::string_view text, std::size_t fds) {
  if (text.empty() || text.size() > kHolderMaxMessage) {
    return base::errorf(EBADMSG, "fd holder: message of {} bytes (1..{})", text.size(),
                        kHolderMaxMessage);
  }
  if (text.find_first_of(std::string_view("\n\0", 2)) != std::string_view::npos) {
    return base::make_error(EBADMSG, "fd holder: message holds a newline or NUL");
  }
  const auto space = text.find(' ');
  const std::string_view verb_text = text.substr(0, space);
  const bool has_arg = space != std::string_view::npos;
  const std::string_view arg = has_arg ? text.substr(space + 1) : std::string_view();
  HolderMessage m;
  bool known = false;
  for (const auto& [v, t] : kVerbs) {
    if (t == verb_text) {
      m.verb = v;
      known = true;
    }
  }
  if (!known) {
    return base::errorf(EBADMSG, "fd holder: unknown verb '{}'", verb_text.substr(0, 16));
  }
  if (named(m.verb)) {
    if (!good_name(arg)) {
      return base::errorf(EBADMSG, "fd holder: {} needs a name (1..64 of A-Z a-z 0-9 . _ -)",
                          verb_text);
    }
  } else if (m.verb == HolderVerb::kErr) {
    if (arg.empty()) {
      return base::make_error(EBADMSG, "fd holder: ERR without a text");
    }
  } else if (has_arg) {
    return base::errorf(EBADMSG, "fd holder: {} takes no argument", verb_text);
  }
  if (fds != holder_fd_count(m.verb)) {
    return base::errorf(EBADMSG, "fd holder: {} came with {} fd(s), expected {}", verb_text, fds,
                        holder_fd_count(m.verb));
  }
  m.arg = std::string(arg);
  return m;
}

base::Status holder_send(int sock, const HolderMessage& m, const std::vector<int>& fds) {
  CFN_ASSIGN_OR_RETURN(auto text, format_holder_message(m));
  if (fds.size() != holder_fd_count(m.verb)) {
    return base::errorf(EINVAL, "fd holder: '{}' needs {} fd(s)", text, holder_fd_count(m.verb));
  }
  iovec iov{text.data(), text.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kHolderMaxFds)] = {};
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    const ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return base::errno_error("fd holder: send '" + text + "'");
    }
    return {};
  }
}

base::Result<HolderMessage> holder_recv(int sock, std::vector<base::UniqueFd>& fds) {
  fds.clear();
  char buf[kHolderMaxMessage + 1];
  iovec iov{buf, sizeof buf};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kHolderMaxFds)];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n = -1;
  do {
    n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    return base::errno_error("fd holder: receive");
  }
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < count; ++i) {
        int fd = -1;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        fds.emplace_back(fd);
      }
    }
  }
  if (n == 0) {
    fds.clear();
    return base::make_error(ECONNRESET, "fd holder: the peer closed the connection");
  }
  if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
    fds.clear();
    return base::make_error(EBADMSG, "fd holder: message or fd list truncated");
  }
  auto m = parse_holder_message(std::string_view(buf, static_cast<std::size_t>(n)), fds.size());
  if (!m) {
    fds.clear();
  }
  return m;
}

// ---- the daemon's end ----

base::Result<FdHolderClient> FdHolderClient::connect(const std::string& path) {
  CFN_ASSIGN_OR_RETURN(auto s, connect_to(path));
  return FdHolderClient(std::move(s));
}

base::Result<FdHolderClient> FdHolderClient::connect_or_start(const std::string& path,
                                                              const std::string& exe,
                                                              const std::string& log_path,
                                                              std::chrono::seconds grace) {
  auto c = connect(path);
  if (c || (c.error().code != ENOENT && c.error().code != ECONNREFUSED)) {
    return c;
  }
  base::SpawnOptions o;
  o.argv = {exe,           "fd-holder", "--socket", path, "--grace", std::to_string(grace.count()),
            "--log-level", "info"};
  o.log_path = log_path;
  // Its own session: a signal to the daemon's process group must not reach it (and
  // spawn() clears the daemon's blocked SIGTERM and ignored SIGPIPE).
  o.new_session = true;
  auto pid = base::spawn(o);
  if (!pid) {
    return base::Unexpected(pid.error().wrap("start the fd holder"));
  }
  spdlog::info("started the fd holder (pid {}) on {}; its log: {}", *pid, path, log_path);
  auto st = base::wait_ready(
      *pid,
      [&] {
        c = connect(path);
        return c.has_value();
      },
      std::chrono::steady_clock::now() + std::chrono::seconds(10));
  if (st) {
    return c;
  }
  if (st.error().code == ECHILD) {
    // Lost a race with another daemon's holder? Then that one answered (wait_ready asks
    // once more after the exit).
    return base::errorf(EIO, "the fd holder exited at start ({}); see {}", st.error().message,
                        log_path);
  }
  return base::errorf(ETIMEDOUT, "the fd holder never listened on {}; see {}", path, log_path);
}

base::Result<HolderMessage> FdHolderClient::call(const HolderMessage& m,
                                                 const std::vector<int>& fds,
                                                 std::vector<base::UniqueFd>& got) {
  CFN_TRY(holder_send(sock_.get(), m, fds));
  CFN_ASSIGN_OR_RETURN(auto answer, holder_recv(sock_.get(), got));
  if (answer.verb == HolderVerb::kErr) {
    return base::errorf(EPROTO, "fd holder: {}", answer.arg);
  }
  return answer;
}

base::Status FdHolderClient::put(std::string_view name, int fd) {
  std::vector<base::UniqueFd> got;
  CFN_ASSIGN_OR_RETURN(auto a, call({HolderVerb::kPut, std::string(name)}, {fd}, got));
  if (a.verb != HolderVerb::kOk) {
    return base::make_error(EPROTO, "fd holder: unexpected answer to PUT");
  }
  return {};
}

base::Result<base::UniqueFd> FdHolderClient::get(std::string_view name) {
  std::vector<base::UniqueFd> got;
  CFN_ASSIGN_OR_RETURN(auto a, call({HolderVerb::kGet, std::string(name)}, {}, got));
  if (a.verb == HolderVerb::kNone && a.arg == name) {
    return base::UniqueFd();
  }
  if (a.verb != HolderVerb::kFd || a.arg != name || got.size() != 1) {
    return base::make_error(EPROTO, "fd holder: unexpected answer to GET");
  }
  return std::move(got[0]);
}

base::Status FdHolderClient::drop(std::string_view name) {
  std::vector<base::UniqueFd> got;
  CFN_ASSIGN_OR_RETURN(auto a, call({HolderVerb::kDrop, std::string(name)}, {}, got));
  if (a.verb != HolderVerb::kOk) {
    return base::make_error(EPROTO, "fd holder: unexpected answer to DROP");
  }
  return {};
}

base::Result<std::vector<std::string>> FdHolderClient::names(std::string_view prefix) {
  std::vector<std::string> out;
  std::string after(prefix);
  // Bounded: the holder holds at most kHolderMaxHeld names, each answer is a greater one.
  for (std::size_t i = 0; i <= kHolderMaxHeld; ++i) {
    std::vector<base::UniqueFd> got;
    CFN_ASSIGN_OR_RETURN(auto a, call({HolderVerb::kNext, after}, {}, got));
    if (a.verb == HolderVerb::kNone) {
      return out;
    }
    if (a.verb != HolderVerb::kName || a.arg <= after) {
      return base::make_error(EPROTO, "fd holder: unexpected answer to NEXT");
    }
    if (!a.arg.starts_with(prefix)) {
      return out;
    }
    out.push_back(a.arg);
    after = a.arg;
  }
  return base::make_error(EPROTO, "fd holder: more names than it may hold");
}

base::Status FdHolderClient::release() {
  std::vector<base::UniqueFd> got;
  CFN_ASSIGN_OR_RETURN(auto a, call({HolderVerb::kRelease, ""}, {}, got));
  if (a.verb != HolderVerb::kOk) {
    return base::make_error(EPROTO, "fd holder: unexpected answer to RELEASE");
  }
  return {};
}

// ---- the holder ----

namespace {

base::Result<base::UniqueFd> listen_holder(const std::string& path) {
  CFN_TRY(base::unix_address(path));  // a bad path fails before the probe and the unlink
  if (auto live = connect_to(path); live) {
    return base::errorf(EADDRINUSE, "an fd holder already listens on {}", path);
  }
  ::unlink(path.c_str());  // stale
  return base::listen_private(path, SOCK_SEQPACKET, 8);
}

constexpr std::size_t kMaxConnections = 8;

}  // namespace

int run_fd_holder(const std::string& path, std::chrono::seconds grace,
                  const std::function<void()>& on_listening) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  base::UniqueFd sigfd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!sigfd) {
    spdlog::error("fd holder: signalfd: {}", std::strerror(errno));
    return 1;
  }
  auto listener = listen_holder(path);
  if (!listener) {
    spdlog::error("fd holder: {}", listener.error().to_string());
    return 1;
  }
  spdlog::info("fd holder: listening on {} (grace {} s)", path, grace.count());
  if (on_listening) {
    on_listening();
  }
  std::map<std::string, base::UniqueFd> held;
  std::vector<base::UniqueFd> conns;
  auto alone_since = std::chrono::steady_clock::now();
  bool done = false;
  while (!done) {
    std::vector<pollfd> pfds;
    pfds.push_back({sigfd.get(), POLLIN, 0});
    pfds.push_back({listener->get(), POLLIN, 0});
    for (const auto& c : conns) {
      pfds.push_back({c.get(), POLLIN, 0});
    }
    int timeout_ms = -1;
    if (grace.count() > 0 && conns.empty()) {
      const auto left = grace - (std::chrono::steady_clock::now() - alone_since);
      if (left <= std::chrono::steady_clock::duration::zero()) {
        spdlog::warn("fd holder: no daemon for {} s: closing {} fd(s) and exiting", grace.count(),
                     held.size());
        break;
      }
      timeout_ms =
          static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(left).count() + 1);
    }
    if (::poll(pfds.data(), pfds.size(), timeout_ms) < 0) {
      if (errno == EINTR) {
        continue;
      }
      spdlog::error("fd holder: poll: {}", std::strerror(errno));
      break;
    }
    if ((pfds[0].revents & POLLIN) != 0) {
      signalfd_siginfo si{};
      if (::read(sigfd.get(), &si, sizeof si) == sizeof si) {
        spdlog::info("fd holder: signal {}: closing {} fd(s) and exiting", si.ssi_signo,
                     held.size());
      }
      break;
    }
    std::vector<std::size_t> gone;
    for (std::size_t i = 0; i < conns.size() && !done; ++i) {
      const short rev = pfds[i + 2].revents;
      if (rev == 0) {
        continue;
      }
      int sock = conns[i].get();
      std::vector<base::UniqueFd> fds;
      auto m = holder_recv(sock, fds);
      if (!m) {
        if (m.error().code != ECONNRESET) {
          spdlog::warn("fd holder: {}", m.error().to_string());
          (void)holder_send(sock, {HolderVerb::kErr, m.error().message});
        }
        gone.push_back(i);
        continue;
      }
      HolderMessage answer{HolderVerb::kOk, ""};
      std::vector<int> out;
      switch (m->verb) {
        case HolderVerb::kPut:
          if (!held.contains(m->arg) && held.size() >= kHolderMaxHeld) {
            answer = {HolderVerb::kErr, "too many fds held"};
          } else {
            held[m->arg] = std::move(fds[0]);
            spdlog::info("fd holder: holding '{}'", m->arg);
          }
          break;
        case HolderVerb::kGet:
          if (auto it = held.find(m->arg); it != held.end()) {
            answer = {HolderVerb::kFd, m->arg};
            out.push_back(it->second.get());
            spdlog::info("fd holder: handed '{}' over", m->arg);
          } else {
            answer = {HolderVerb::kNone, m->arg};
          }
          break;
        case HolderVerb::kDrop:
          if (held.erase(m->arg) > 0) {
            spdlog::info("fd holder: dropped '{}'", m->arg);
          }
          break;
        case HolderVerb::kNext:
          if (auto it = held.upper_bound(m->arg); it != held.end()) {
            answer = {HolderVerb::kName, it->first};
          } else {
            answer = {HolderVerb::kNone, m->arg};
          }
          break;
        case HolderVerb::kRelease:
          spdlog::info("fd holder: released: closing {} fd(s) and exiting", held.size());
          done = true;
          break;
        default:
          answer = {HolderVerb::kErr, "not a request"};
          break;
      }
      if (auto st = holder_send(sock, answer, out); !st) {
        spdlog::warn("fd holder: {}", st.error().to_string());
        gone.push_back(i);
      }
    }
    for (auto it = gone.rbegin(); it != gone.rend(); ++it) {
      conns.erase(conns.begin() + static_cast<std::ptrdiff_t>(*it));
    }
    if (!gone.empty() && conns.empty()) {
      alone_since = std::chrono::steady_clock::now();
      if (!held.empty()) {
        spdlog::warn("fd holder: the daemon went away; holding {} fd(s) for the next one",
                     held.size());
      }
    }
    if ((pfds[1].revents & POLLIN) != 0 && !done) {
      base::UniqueFd c(::accept4(listener->get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (c) {
        ucred cred{};
        socklen_t len = sizeof cred;
        if (::getsockopt(c.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
            cred.uid != ::geteuid()) {
          spdlog::warn("fd holder: refused a peer of uid {}", cred.uid);
        } else if (conns.size() >= kMaxConnections) {
          spdlog::warn("fd holder: too many connections; refused one");
        } else {
          timeval tv{5, 0};
          ::setsockopt(c.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
          conns.push_back(std::move(c));
        }
      }
    }
  }
  ::unlink(path.c_str());
  return 0;
}

}  // namespace cfnd
