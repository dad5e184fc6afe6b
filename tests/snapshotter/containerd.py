# SPDX-License-Identifier: Apache-2.0
"""Debian's containerd 1.6 for the snapshotter's end-to-end test: its own root, state, socket
and config under a test directory (no system service touched), our snapshotter as the proxy
plugin `nydus`, and `ctr` against its socket. Also a small two-layer busybox image written as
an OCI layout (tests/tools/ocilayout.py) for skopeo to push."""

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time

import lib
from lib import ktest

CONFIG = """version = 2
root = "{d}/root"
state = "{d}/state"
{disabled}
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = "{d}/debug.sock"
  level = "info"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[proxy_plugins]
  [proxy_plugins.nydus]
    type = "snapshot"
    address = "{snap_sock}"
"""

# The CRI plugin, when a test enables it: our snapshotter for images, CNI directories of the
# test (no network is set up: only the image service is used), plain HTTP to the test
# registries (one mirrors entry per host).
CRI_CONFIG = """[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "cfn.invalid/pause:none"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "nydus"
    disable_snapshot_annotations = {disable_annotations}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni/bin"
    conf_dir = "{d}/cni/conf"
{mirrors}"""

CRI_MIRROR = """  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{host}"]
    endpoint = ["http://{host}"]
"""


def require_tools():
    missing = [t for t in ("containerd", "ctr", "runc", "containerd-shim-runc-v2", "skopeo",
                           "ctr-remote")
               if shutil.which(t) is None]
    ktest.check(not missing, f"missing {', '.join(missing)}: run scripts/setup")


class Containerd:
    def __init__(self, d, snap_sock, cri_hosts=None, cri_annotations=False):
        """cri_hosts: None keeps the CRI plugin disabled; else the plain-HTTP registry hosts
        it pulls from, and cri_annotations is the negation of its
        disable_snapshot_annotations (containerd's default is true: no image reference)."""
        self.d = d
        os.makedirs(d, exist_ok=True)
        self.sock = os.path.join(d, "containerd.sock")
        self.config = os.path.join(d, "config.toml")
        self.log = os.path.join(d, "containerd.log")
        disabled = 'disabled_plugins = ["io.containerd.grpc.v1.cri"]'
        extra = ""
        if cri_hosts is not None:
            disabled = "disabled_plugins = []"
            for sub in ("cni/bin", "cni/conf"):
                os.makedirs(os.path.join(d, sub), exist_ok=True)
            extra = CRI_CONFIG.format(
                d=d, disable_annotations="false" if cri_annotations else "true",
                mirrors="".join(CRI_MIRROR.format(host=h) for h in cri_hosts))
        with open(self.config, "w") as fh:
            fh.write(CONFIG.format(d=d, snap_sock=snap_sock, disabled=disabled) + extra)
        self.proc = None

    def start(self):
        ktest.log(f"+ containerd --config {self.config}")
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(["containerd", "--config", self.config], stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        lib.wait_socket(self.sock, self.proc)
        self.ctr("version")
        return self

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=lib.STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def ctr(self, *args, ok=True, quiet=False):
        """ctr -a SOCK ARGS; returns CompletedProcess (stdout/stderr as text)."""
        return self.tool("ctr", *args, ok=ok, quiet=quiet)

    def tool(self, prog, *args, ok=True, quiet=False):
        """PROG -a SOCK ARGS (ctr, ctr-remote)."""
        cmd = [prog, "-a", self.sock] + [str(a) for a in args]
        if not quiet:
            ktest.log("+ " + " ".join(cmd[3:]))
        p = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, text=True)
        if ok and p.returncode != 0:
            ktest.fail(f"{prog} {' '.join(cmd[3:])}: exit {p.returncode}\n{p.stdout[-3000:]}\n"
                       f"{p.stderr[-3000:]}\ncontainerd log tail:\n{self.log_tail()}")
        return p

    def log_tail(self, n=3000):
        with open(self.log, "rb") as fh:
            return fh.read()[-n:].decode(errors="replace")

    def snapshots(self, snapshotter="nydus"):
        """`ctr snapshots ls`: {key: (parent, kind)}."""
        out = self.ctr("snapshots", "--snapshotter", snapshotter, "ls", quiet=True).stdout
        rows = {}
        for line in out.splitlines()[1:]:
            f = line.split()
            if len(f) == 2:  # no parent
                rows[f[0]] = ("", f[1])
            elif len(f) == 3:
                rows[f[0]] = (f[1], f[2])
            elif f:
                ktest.fail(f"ctr snapshots ls: unexpected line {line!r}")
        return rows

    def info(self, key, snapshotter="nydus"):
        return json.loads(self.ctr("snapshots", "--snapshotter", snapshotter, "info", key,
                                   quiet=True).stdout)

    def usage(self, key, snapshotter="nydus"):
        """`ctr snapshots usage -b KEY`: (size, inodes)."""
        out = self.ctr("snapshots", "--snapshotter", snapshotter, "usage", "-b", key,
                       quiet=True).stdout
        f = out.splitlines()[1].split()
        return int(f[1]), int(f[2])


# --- the image ----------------------------------------------------------------------------

def _tar(entries):
    """entries: (name, kind, data-or-target, mode); kind in file, dir, symlink, hardlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, data, mode in entries:
            ti = tarfile.TarInfo(name)
            ti.mode, ti.mtime, ti.uid, ti.gid = mode, 1700000000, 0, 0
            if kind == "file":
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
                continue
            ti.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                       "hardlink": tarfile.LNKTYPE}[kind]
            if kind in ("symlink", "hardlink"):
                ti.linkname = data
            tf.addfile(ti)
    return buf.getvalue()


def busybox_image(layout, some_file):
    """A two-layer image: busybox with a few applets, then /etc/some-file (content
    some_file), a hard-linked pair and a 256 KiB file. Returns (diff_ids, chain_ids)."""
    import ocilayout
    with open("/bin/busybox", "rb") as fh:
        busybox = fh.read()
    l1 = [("bin", "dir", None, 0o755), ("bin/busybox", "file", busybox, 0o755)]
    l1 += [(f"bin/{a}", "symlink", "busybox", 0o777) for a in ("sh", "cat", "sleep", "ls", "true")]
    l1 += [(d, "dir", None, 0o755) for d in ("etc", "proc", "sys", "dev", "root")]
    l1 += [("tmp", "dir", None, 0o1777), ("etc/passwd", "file", b"root:x:0:0:root:/root:/bin/sh\n", 0o644),
           ("etc/group", "file", b"root:x:0:\n", 0o644)]
    l2 = [("etc", "dir", None, 0o755), ("etc/some-file", "file", some_file, 0o644),
          ("data", "dir", None, 0o755), ("data/a", "file", b"x" * 10000, 0o644),
          ("data/b", "hardlink", "data/a", 0o644),
          ("data/big", "file", hashlib.sha256(b"cfn").digest() * 8192, 0o644)]
    layers = [(_tar(l1), "gzip"), (_tar(l2), "gzip")]
    ocilayout.write_layout(layout, layers)
    diff_ids = ["sha256:" + hashlib.sha256(t).hexdigest() for t, _ in layers]
    chain = [diff_ids[0]]
    for dg in diff_ids[1:]:
        chain.append("sha256:" + hashlib.sha256(f"{chain[-1]} {dg}".encode()).hexdigest())
    return diff_ids, chain


def tree_usage(path):
    """(apparent bytes, allocated bytes, inodes) of a tree, hard links counted once, the
    top directory included (as containerd's fs.DiskUsage counts)."""
    seen = set()
    apparent = blocks = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [None] + dirnames + filenames:
            p = dirpath if name is None else os.path.join(dirpath, name)
            if name is not None and name in dirnames:
                continue  # counted when walked as dirpath
            st = os.lstat(p)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            apparent += st.st_size
            blocks += st.st_blocks * 512
    return apparent, blocks, len(seen)


def retry(what, fn, timeout=15.0):
    """Call fn() until it returns a true value; containerd's client to a restarted proxy
    snapshotter backs off for up to a few seconds before it dials again."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            ktest.fail(f"{what}: still failing after {timeout} s")
        time.sleep(delay)  # polling back-off, not a wait for a fixed time
        delay = min(delay * 2, 1.0)
