// SPDX-License-Identifier: Apache-2.0
// The daemon's side of systemd's service notification protocol (Type=notify): state
// lines such as READY=1, STATUS=..., STOPPING=1 sent as one datagram to $NOTIFY_SOCKET,
// and file descriptors handed to the service manager's fd store (FDSTORE=1, kept across
// a restart of the service; FileDescriptorStoreMax= in the unit bounds how many).
//
// Every call is a no-op when NOTIFY_SOCKET is unset (started by hand, by a test, or by
// `cachefilesd-nydus mount`). A failure to notify is logged once per call and never
// stops the daemon: the service manager then times the start out, which is its to judge.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/unique_fd.h"

namespace cfnd::sd {

// Send newline-separated state assignments ("READY=1\nSTATUS=serving"). Returns true
// when a service manager took the message, false when there is none or sending failed.
bool notify(std::string_view state);

// READY=1 with a STATUS= line: call once the control socket listens and the front end is up.
bool ready(std::string_view status);

// STATUS=<text> alone.
bool status(std::string_view text);

// STOPPING=1 with a STATUS= line: call when a shutdown begins.
bool stopping(std::string_view status);

// STATUS= and ERRNO= (positive errno) before exiting on a start-up failure.
bool failed(int err, std::string_view status);

// FDSTORE=1 with FDNAME=name (and FDPOLL=0: the manager must not drop an fd because it
// polls readable or with an error): hand fds to the service manager's fd store. The fds
// stay ours; the manager holds duplicates.
bool store_fds(std::string_view name, std::span<const int> fds);

// FDSTOREREMOVE=1 with FDNAME=name: the manager closes its duplicates of that name.
bool remove_fds(std::string_view name);

// The fds the manager passed at start (LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES, from the fd
// store or socket units), with their names ("unknown" when unnamed), made close-on-exec;
// the variables are unset so children do not see them. Empty when none were passed.
std::vector<std::pair<std::string, base::UniqueFd>> take_listen_fds();

// True when $NOTIFY_SOCKET is set (a service manager listens).
bool enabled();

}  // namespace cfnd::sd
