# SPDX-License-Identifier: Apache-2.0
"""Helpers for the daemon kernel tests (7x-*): start cachefilesd-nydus in the foreground
with a private cache dir and control socket, mount and unmount through its CLI, read its
metrics, and stop it (SIGTERM, then SIGKILL) so no daemon or mount outlives a test."""

import contextlib
import json
import os
import signal
import subprocess
import time

import ktest


def daemon_bin():
    path = os.path.join(ktest.BUILD, "cachefilesd-nydus")
    ktest.check(os.access(path, os.X_OK), f"{path} missing: build the project first")
    return path


class Daemon:
    def __init__(self, workdir, frontend="auto", cache_dir=None, tag="d", config=None,
                 extra_args=(), fd_holder=False):
        """config: a dict written as the daemon's --config file (e.g. prefetch_bandwidth);
        extra_args: more daemon options (e.g. ["--fd-holder"]). fd_holder: run with
        --fd-holder (failover); without it (here or in extra_args) --allow-fail-open is
        passed, since the fanotify front end refuses to run without a holder otherwise."""
        self.workdir = workdir
        self.config = config
        self.tag = tag
        self.cache_dir = cache_dir or os.path.join(workdir, "cache")
        self.socket = os.path.join(workdir, f"{tag}.sock")
        self.log_path = os.path.join(workdir, f"{tag}.log")
        self.frontend = frontend
        self.extra_args = list(extra_args)
        if fd_holder and "--fd-holder" not in self.extra_args:
            self.extra_args.append("--fd-holder")
        if "--fd-holder" not in self.extra_args:
            self.extra_args.append("--allow-fail-open")
        self.proc = None

    def start(self):
        os.makedirs(self.cache_dir, exist_ok=True)
        log = open(self.log_path, "ab")
        cmd = [daemon_bin(), "--frontend", self.frontend, "--cache-dir", self.cache_dir,
               "--socket", self.socket, "--log-level", "info"] + self.extra_args
        if self.config is not None:
            path = os.path.join(self.workdir, f"{self.tag}.config.json")
            with open(path, "w") as fh:
                json.dump(self.config, fh)
            cmd += ["--config", path]
        ktest.log("+ " + " ".join(cmd) + " &")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                ktest.fail(f"daemon exited at start ({self.proc.returncode}):\n{self.log()}")
            p = self.cli(["list"], check_rc=False, quiet=True)
            if p.returncode == 0:
                return self
            time.sleep(0.1)
        ktest.fail(f"daemon did not answer on {self.socket}:\n{self.log()}")

    def log(self):
        try:
            with open(self.log_path, errors="replace") as fh:
                return fh.read()[-6000:]
        except OSError:
            return ""

    def cli(self, args, check_rc=True, quiet=False):
        return ktest.run([daemon_bin(), "--socket", self.socket] + args, check_rc=check_rc,
                         quiet=quiet)

    def ping_frontend(self):
        p = subprocess.run([daemon_bin(), "--socket", self.socket, "list"], capture_output=True)
        ktest.check(p.returncode == 0, "daemon does not answer")
        # the default front end is logged at start
        for line in self.log().splitlines():
            if "default front end" in line:
                return line.rsplit(" ", 1)[-1]
        return "?"

    def mount(self, boot, blob_dir, mnt, frontend=None):
        os.makedirs(mnt, exist_ok=True)
        args = ["mount", boot, mnt, "--blob-dir", blob_dir]
        if frontend:
            args += ["--frontend", frontend]
        p = self.cli(args, check_rc=False)
        if p.returncode != 0:
            ktest.fail(f"mount failed: {p.stderr.decode(errors='replace')}\n{self.log()}")

    def mount_ref(self, ref, mnt, frontend=None, options=(), check_rc=True):
        """Mount an image by reference; options are registry options of the CLI
        (e.g. ["--stall-timeout", "2"]). Returns the CompletedProcess."""
        os.makedirs(mnt, exist_ok=True)
        args = ["mount", ref, mnt] + list(options)
        if frontend:
            args += ["--frontend", frontend]
        p = self.cli(args, check_rc=False)
        if check_rc and p.returncode != 0:
            ktest.fail(f"mount {ref} failed: {p.stderr.decode(errors='replace')}\n{self.log()}")
        return p

    def list(self):
        return json.loads(self.cli(["list"], quiet=True).stdout)["images"]

    def umount(self, mnt):
        self.cli(["umount", mnt])

    def metrics(self):
        p = self.cli(["metrics"], quiet=True)
        return json.loads(p.stdout)["metrics"]

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            ktest.log("daemon ignored SIGTERM for 30 s: SIGKILL")
            self.proc.kill()
            self.proc.wait()
        ktest.check(self.proc.returncode == 0,
                    f"daemon exit status {self.proc.returncode}:\n{self.log()}")


@contextlib.contextmanager
def running(workdir, **kw):
    d = Daemon(workdir, **kw)
    try:
        yield d.start()
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.send_signal(signal.SIGTERM)
            try:
                d.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                d.proc.kill()
                d.proc.wait()


def fanotify_available(d):
    """True when the daemon picked fanotify for --frontend auto (the kernel has pre-content
    hooks); the log says why not otherwise."""
    return d.ping_frontend() == "fanotify"
