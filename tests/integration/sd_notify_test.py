#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""cachefilesd-nydus speaks systemd's notify protocol (Type=notify).

The test plays the service manager: it binds a datagram socket with SO_PASSCRED, starts
the daemon binary with NOTIFY_SOCKET pointing at it (a temporary cache dir and control
socket), and checks:
  - READY=1 arrives, with a STATUS= line, sent by the daemon's own pid (NotifyAccess=main);
  - when READY=1 arrives the control socket already answers a ping;
  - SIGTERM gives STOPPING=1 and the daemon exits 0;
  - an abstract-namespace NOTIFY_SOCKET ("@name") works too;
  - a daemon that cannot start sends ERRNO= instead of READY=1 and exits non-zero;
  - an fd passed as LISTEN_FDNAMES=cachefiles that is not /dev/cachefiles (a pipe) is
    closed, not adopted, and the daemon starts as usual (failover hand-over check).

Exit 0 pass, 1 fail, 77 skip (the daemon cannot start here, for the reason printed).
Environment: CFN_BUILD_DIR (the meson build root).
"""

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

BUILD = os.environ.get("CFN_BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
DAEMON = os.path.join(BUILD, "cachefilesd-nydus")
SCM_CREDENTIALS = 2  # linux/socket.h; Python has no name for it


def fail(msg, log=""):
    print(f"FAIL: {msg}")
    if log:
        print("daemon log:\n" + log[-4000:])
    sys.exit(1)


def skip(msg):
    print(f"SKIP: {msg}")
    sys.exit(77)


class Manager:
    """The service manager's end: a datagram socket that records who sent what."""

    def __init__(self, address):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)
        self.env_value = address if not address.startswith("\0") else "@" + address[1:]

    def recv(self, timeout):
        """One message as (dict of assignments, sender pid), or None on timeout."""
        self.sock.settimeout(timeout)
        try:
            data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except socket.timeout:
            return None
        pid = None
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == SCM_CREDENTIALS and len(payload) >= 12:
                pid, _, _ = struct.unpack("iII", payload[:12])
        fields = {}
        for line in data.decode(errors="replace").split("\n"):
            if "=" in line:
                k, v = line.split("=", 1)
                fields[k] = v
        return fields, pid

    def wait_for(self, key, deadline, proc):
        """Messages until one sets `key`; returns (that message, every message seen)."""
        seen = []
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return None, seen
            m = self.recv(0.2)
            if m is None:
                continue
            seen.append(m)
            if key in m[0]:
                return m, seen
        return None, seen


def ping(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(path)
        s.sendall(b'{"op":"ping"}\n')
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        return json.loads(buf)
    finally:
        s.close()


def start(work, manager, tag, extra=()):
    cache = os.path.join(work, f"cache-{tag}")
    sock = os.path.join(work, f"{tag}.sock")
    log_path = os.path.join(work, f"{tag}.log")
    env = dict(os.environ, NOTIFY_SOCKET=manager.env_value)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [DAEMON, "--cache-dir", cache, "--socket", sock, "--log-level", "info", *extra],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
    return proc, sock, log_path


def read(path):
    try:
        with open(path, errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def stop(proc):
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def lifecycle(work, manager, tag):
    proc, sock, log_path = start(work, manager, tag)
    try:
        ready, seen = manager.wait_for("READY", time.monotonic() + 30, proc)
        if ready is None:
            log = read(log_path)
            if proc.poll() is not None and not any("READY" in m[0] for m in seen):
                # The daemon could not start at all: name the reason it gave.
                last = [ln for ln in log.splitlines() if "error" in ln.lower()]
                if proc.returncode != 0 and last and os.geteuid() != 0:
                    skip(f"the daemon cannot start here (not root): {last[-1]}")
            fail(f"[{tag}] no READY=1 (exit {proc.poll()}; messages {seen})", log)
        fields, pid = ready
        if fields["READY"] != "1":
            fail(f"[{tag}] READY={fields['READY']}")
        if pid != proc.pid:
            fail(f"[{tag}] READY=1 sent by pid {pid}, not the daemon's {proc.pid}")
        if not fields.get("STATUS"):
            fail(f"[{tag}] READY=1 without STATUS=: {fields}")
        # READY=1 promises a listening control socket.
        answer = ping(sock)
        if answer.get("ok") is not True or answer.get("pid") != proc.pid:
            fail(f"[{tag}] ping after READY=1: {answer}", read(log_path))
        print(f"[{tag}] READY=1 from pid {pid}, STATUS={fields['STATUS']!r}; ping ok")

        proc.send_signal(signal.SIGTERM)
        stopping, seen = manager.wait_for("STOPPING", time.monotonic() + 30, proc)
        if stopping is None:
            fail(f"[{tag}] no STOPPING=1 after SIGTERM (messages {seen})", read(log_path))
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            fail(f"[{tag}] daemon still running 30 s after SIGTERM", read(log_path))
        if rc != 0:
            fail(f"[{tag}] daemon exited {rc} after SIGTERM", read(log_path))
        print(f"[{tag}] STOPPING=1, STATUS={stopping[0].get('STATUS')!r}; exit 0")
    finally:
        stop(proc)


def start_failure(work, manager):
    # A cache dir that is a regular file: the blob cache cannot be made.
    blocker = os.path.join(work, "not-a-dir")
    with open(blocker, "w") as fh:
        fh.write("x")
    env = dict(os.environ, NOTIFY_SOCKET=manager.env_value)
    proc = subprocess.Popen(
        [DAEMON, "--cache-dir", blocker, "--socket", os.path.join(work, "bad.sock")],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out, _ = proc.communicate(timeout=30)
    if proc.returncode == 0:
        fail("the daemon started on a cache dir that is a file")
    msgs = []
    while (m := manager.recv(0.5)) is not None:
        msgs.append(m[0])
    if any("READY" in m for m in msgs):
        fail(f"READY=1 from a daemon that failed to start: {msgs}")
    if not any(m.get("ERRNO", "").isdigit() and int(m["ERRNO"]) > 0 for m in msgs):
        fail(f"no ERRNO= from a daemon that failed to start: {msgs}", out.decode(errors="replace"))
    print(f"[failure] exit {proc.returncode}, ERRNO={msgs[-1].get('ERRNO')}, "
          f"STATUS={msgs[-1].get('STATUS')!r}")


def bogus_handover(work, manager):
    """A pipe's write end passed as the fd store's 'cachefiles': the daemon must close it."""
    r, w = os.pipe()
    cache = os.path.join(work, "cache-bogus")
    sock = os.path.join(work, "bogus.sock")
    log_path = os.path.join(work, "bogus.log")
    env = dict(os.environ, NOTIFY_SOCKET=manager.env_value, LISTEN_FDS="1",
               LISTEN_FDNAMES="cachefiles")

    def place():
        os.dup2(w, 3)

    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["sh", "-c", 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"', "sh", DAEMON,
             "--cache-dir", cache, "--socket", sock, "--log-level", "info"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, pass_fds=(3,),
            preexec_fn=place)
    os.close(w)
    try:
        ready, seen = manager.wait_for("READY", time.monotonic() + 30, proc)
        if ready is None:
            fail(f"[bogus] no READY=1 with a bogus handed-over fd (messages {seen})",
                 read(log_path))
        # Every write end is closed (ours, and the daemon's fd 3): end of file.
        os.set_blocking(r, False)
        try:
            eof = os.read(r, 1) == b""
        except BlockingIOError:
            eof = False
        if not eof:
            fail("[bogus] the daemon kept the bogus 'cachefiles' fd open", read(log_path))
        if "closing an fd named 'cachefiles'" not in read(log_path):
            fail("[bogus] no log line about the refused fd", read(log_path))
        print("[bogus] a handed-over 'cachefiles' fd that is a pipe was closed, not adopted")
        proc.send_signal(signal.SIGTERM)
        if proc.wait(timeout=30) != 0:
            fail(f"[bogus] exit {proc.returncode} after SIGTERM", read(log_path))
    finally:
        os.close(r)
        stop(proc)


def main():
    if not os.access(DAEMON, os.X_OK):
        fail(f"{DAEMON} missing: build first")
    with tempfile.TemporaryDirectory(prefix="cfn-sdnotify-") as work:
        manager = Manager(os.path.join(work, "notify.sock"))
        lifecycle(work, manager, "path")
        abstract = Manager(f"\0cfn-sdnotify-{os.getpid()}")
        lifecycle(work, abstract, "abstract")
        start_failure(work, manager)
        bogus_handover(work, manager)
    print("PASS")


if __name__ == "__main__":
    main()
