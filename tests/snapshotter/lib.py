# SPDX-License-Identifier: Apache-2.0
"""Shared by the snapshotter tests (tests/snapshotter/*, tests/kernel/8x-snapshotter-*): where
the built programs are, starting a snapshots.v1 server on a socket, and snapctl calls.

Our snapshotter is BUILD/containerd-nydus-grpc unless CFN_SNAPSERVER names another command
line (for example BUILD/tests/snapshotter/refsnap, to try a test against containerd's own
snapshotter)."""

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "kernel", "lib"))
import ktest  # noqa: E402

GO_DIR = os.path.join(ktest.BUILD, "tests", "snapshotter")
REFSNAP = os.path.join(GO_DIR, "refsnap")
SNAPCTL = os.path.join(GO_DIR, "snapctl")
CRIPULL = os.path.join(GO_DIR, "cripull")
SNAPTEST = os.path.join(GO_DIR, "snaptest.test")
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


def daemon_pid(sock):
    """The pid listening on the unix socket sock (ss -xlp), or None: the daemon a snapshotter
    started itself (--daemon-socket), for a test to stop it."""
    p = subprocess.run(["ss", "-xlpn"], capture_output=True, text=True)
    for line in p.stdout.splitlines():
        if f" {sock} " in f" {line} " and "pid=" in line:
            return int(line.split("pid=", 1)[1].split(",", 1)[0])
    return None


def require_go_programs(*paths):
    for p in paths:
        ktest.check(os.access(p, os.X_OK), f"{p} not built: run scripts/setup (needs golang-go, "
                    "golang-github-containerd-containerd-dev)")


def ours_argv():
    """Our snapshotter's command line (without --root/--address). Skips the test while the
    snapshotter is not in the tree at all; a tree with snapshotter/ but no binary fails."""
    env = os.environ.get("CFN_SNAPSERVER", "")
    if env:
        return shlex.split(env)
    path = os.path.join(ktest.BUILD, "containerd-nydus-grpc")
    if not os.access(path, os.X_OK):
        if not os.path.isdir(os.path.join(ktest.ROOT, "snapshotter")):
            ktest.skip("containerd-nydus-grpc is not in this tree yet (no snapshotter/)")
        ktest.fail(f"{path} not built: run scripts/setup")
    return [path, "--log-to-stdout", "--log-level", "debug"]


def overlay_available():
    def listed():
        with open("/proc/filesystems") as fh:
            return any(line.split()[-1] == "overlay" for line in fh if line.strip())
    if listed():
        return True
    subprocess.run(["modprobe", "overlay"], capture_output=True)
    return listed()


def wait_socket(path, proc, timeout=READY_TIMEOUT):
    """Poll (with back-off) until path accepts a connection; fail if proc exits first."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        if os.path.exists(path):
            with socket.socket(socket.AF_UNIX) as s:
                try:
                    s.connect(path)
                    return
                except OSError:
                    pass
        if proc is not None and proc.poll() is not None:
            ktest.fail(f"server exited {proc.returncode} before {path} accepted a connection")
        if time.monotonic() > deadline:
            ktest.fail(f"{path} not ready after {timeout} s")
        time.sleep(delay)  # polling back-off, not a wait for a fixed time
        delay = min(delay * 2, 0.2)


class Server:
    """A snapshots.v1 server process: argv + --root ROOT --address SOCK, output to LOG."""

    def __init__(self, argv, root, sock, log, env=None):
        self.argv = list(argv) + ["--root", root, "--address", sock]
        self.root, self.sock, self.log = root, sock, log
        self.env = env
        self.proc = None

    def start(self, wait=True):
        ktest.log("+ " + " ".join(self.argv) +
                  "".join(f" [{k}={v}]" for k, v in (self.env or {}).items()))
        env = dict(os.environ)
        env.update(self.env or {})
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True)
        if wait:
            wait_socket(self.sock, self.proc)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, check=True):
        """SIGTERM; must exit 0 within STOP_TIMEOUT (when check)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                if check:
                    ktest.fail(f"{self.argv[0]} did not exit within {STOP_TIMEOUT} s of SIGTERM")
        rc = self.proc.returncode
        self.proc = None
        if check and rc != 0:
            ktest.fail(f"{self.argv[0]} exited {rc} after SIGTERM; log tail:\n{self.log_tail()}")
        return rc

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log_tail(self, n=4000):
        try:
            with open(self.log, "rb") as fh:
                return fh.read()[-n:].decode(errors="replace")
        except OSError as e:
            return str(e)


def snapctl(sock, *args, ns="default", ok=True):
    """Run snapctl; returns its JSON. With ok, a failed RPC fails the test; otherwise the
    error object {"error", "code"} is returned."""
    p = subprocess.run([SNAPCTL, "-a", sock, "-n", ns] + [str(a) for a in args],
                       capture_output=True, stdin=subprocess.DEVNULL)
    out = p.stdout.decode(errors="replace").strip()
    if p.returncode not in (0, 3):
        ktest.fail(f"snapctl {' '.join(map(str, args))}: exit {p.returncode}\n{out}\n"
                   f"{p.stderr.decode(errors='replace')}")
    try:
        val = json.loads(out) if out else None
    except json.JSONDecodeError:
        ktest.fail(f"snapctl {' '.join(map(str, args))}: not JSON: {out}")
    if ok and p.returncode != 0:
        ktest.fail(f"snapctl {' '.join(map(str, args))}: {val}")
    return val


def cripull(containerd_sock, verb, ref, ok=True):
    """cripull -a SOCK VERB REF (containerd's CRI image service, runtime.v1): its JSON; with ok,
    a failed RPC fails the test, otherwise {"error", "code"} is returned."""
    p = subprocess.run([CRIPULL, "-a", containerd_sock, verb, ref], capture_output=True,
                       stdin=subprocess.DEVNULL)
    out = p.stdout.decode(errors="replace").strip()
    if p.returncode not in (0, 3):
        ktest.fail(f"cripull {verb} {ref}: exit {p.returncode}\n{out}\n"
                   f"{p.stderr.decode(errors='replace')}")
    try:
        val = json.loads(out)
    except json.JSONDecodeError:
        ktest.fail(f"cripull {verb} {ref}: not JSON: {out}")
    if ok and p.returncode != 0:
        ktest.fail(f"cripull {verb} {ref}: {val}")
    return val
