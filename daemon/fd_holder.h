// SPDX-License-Identifier: Apache-2.0
// The fd holder: failover without systemd. A small process (`cachefilesd-nydus
// fd-holder`) keeps duplicates of the daemon's kernel session fds (/dev/cachefiles) so
// that the kernel does not tear the cache down when the daemon dies; the next daemon
// takes them back and writes "restore". The holder never reads /dev/cachefiles nor
// does anything else with the fds: it only keeps them open.
//
// Transport: a unix SOCK_SEQPACKET socket (mode 0600, in a directory we own); one
// message per packet, fds as SCM_RIGHTS. Only peers of the holder's own uid are served.
// Messages are short ASCII texts "VERB" or "VERB NAME":
//   PUT <name>  + 1 fd   keep a dup of the fd under name (replacing an older one)  -> OK
//   GET <name>           -> FD <name> + 1 fd (the holder keeps its own), or NONE <name>
//   DROP <name>          close the fd of that name, if held (its mount is gone)   -> OK
//   NEXT <name>          the first held name after <name> in byte order -> NAME <n>, or
//                        NONE <name> (a restarted daemon lists what it cannot resume)
//   RELEASE              close every fd and exit (the daemon shut down cleanly)   -> OK
//   ERR <text>           the holder's answer to a malformed request
//
// Lifetime: the daemon (with fd_holder on) starts a holder when none answers and keeps
// one connection to it for its whole life. The holder exits on RELEASE (sent by a daemon
// that unmounted everything on SIGTERM), on SIGTERM/SIGINT, or when `grace` seconds pass
// with fds held and no daemon connected (a daemon that died and was not restarted: the
// kernel then fails the pending reads with EIO instead of letting them wait for ever).
// grace 0 waits for ever.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"

namespace cfnd {

inline constexpr std::size_t kHolderMaxMessage = 256;
inline constexpr std::size_t kHolderMaxFds = 16;  // fds in one message
// Distinct names held at once: a FUSE mount each, plus cachefiles and fanotify (under the
// usual 1024 open files of a process).
inline constexpr std::size_t kHolderMaxHeld = 512;

enum class HolderVerb { kPut, kGet, kRelease, kOk, kFd, kNone, kErr, kDrop, kNext, kName };

struct HolderMessage {
  HolderVerb verb = HolderVerb::kOk;
  // The fd name (PUT, GET, DROP, NEXT, NAME, FD, NONE), the text (ERR), else empty.
  std::string arg;

  bool operator==(const HolderMessage&) const = default;
};

// How many fds travel with a message of this verb (PUT and FD: 1, others 0).
[[nodiscard]] std::size_t holder_fd_count(HolderVerb verb);

// Pure. The message text. EINVAL for a bad name (1..64 of [A-Za-z0-9._-]) or an ERR text
// with a newline or NUL, or a text over kHolderMaxMessage.
[[nodiscard]] base::Result<std::string> format_holder_message(const HolderMessage& m);

// Pure. Parse one packet's bytes with the number of fds that came with it. EBADMSG:
// empty, too long, NUL or newline, unknown verb, missing/extra argument, a bad name, or
// a fd count that does not match the verb.
[[nodiscard]] base::Result<HolderMessage> parse_holder_message(std::string_view text,
                                                               std::size_t fds);

// One packet with its fds (SCM_RIGHTS); EPIPE/ECONNRESET when the peer is gone.
[[nodiscard]] base::Status holder_send(int sock, const HolderMessage& m,
                                       const std::vector<int>& fds = {});
// Receive one packet and parse it; received fds are returned in `fds` (O_CLOEXEC).
// ECONNRESET on end of stream; EBADMSG (and every received fd closed) on a bad packet.
[[nodiscard]] base::Result<HolderMessage> holder_recv(int sock, std::vector<base::UniqueFd>& fds);

// The daemon's end: one connection for the daemon's life.
class FdHolderClient {
 public:
  // Connect to the holder at path. ENOENT / ECONNREFUSED when none listens.
  [[nodiscard]] static base::Result<FdHolderClient> connect(const std::string& path);
  // Connect, or start `exe fd-holder --socket path --grace S` (its own session, output
  // to log_path) and connect to it once it listens (up to 10 s).
  [[nodiscard]] static base::Result<FdHolderClient> connect_or_start(const std::string& path,
                                                                     const std::string& exe,
                                                                     const std::string& log_path,
                                                                     std::chrono::seconds grace);

  // Hand a fd to the holder (it keeps a dup).
  [[nodiscard]] base::Status put(std::string_view name, int fd);
  // The holder's fd of that name, or an invalid UniqueFd when it has none.
  [[nodiscard]] base::Result<base::UniqueFd> get(std::string_view name);
  // Have the holder close the fd of that name (nothing when it holds none).
  [[nodiscard]] base::Status drop(std::string_view name);
  // The names held that start with prefix (a good name itself), in byte order.
  [[nodiscard]] base::Result<std::vector<std::string>> names(std::string_view prefix);
  // Ask the holder to close everything and exit.
  [[nodiscard]] base::Status release();

 private:
  explicit FdHolderClient(base::UniqueFd sock) : sock_(std::move(sock)) {}
  [[nodiscard]] base::Result<HolderMessage> call(const HolderMessage& m,
                                                 const std::vector<int>& fds,
                                                 std::vector<base::UniqueFd>& got);
  base::UniqueFd sock_;
};

// The holder process: listen on path (a stale socket is replaced, a live one is
// EADDRINUSE) and serve until RELEASE, SIGTERM/SIGINT or the grace period (see above).
// Returns 0 on a normal exit, 1 when it could not start (logged).
// on_listening (tests) is called once the socket listens.
[[nodiscard]] int run_fd_holder(const std::string& path, std::chrono::seconds grace,
                                const std::function<void()>& on_listening = {});

}  // namespace cfnd
