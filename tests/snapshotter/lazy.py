# SPDX-License-Identifier: Apache-2.0
"""The lazy path end to end, shared by tests/kernel/83-86 and bench/containerd: a nydus image
made by `nydus-convert image` from a plain OCI image in docker-registry, the fault proxy in
front of the registry (its request log tells which blobs were fetched), our daemon started by
the test, our snapshotter bound to it (--daemon-socket, --fs-driver), and containerd."""

import json
import os
import subprocess
import time
import urllib.request

import containerd
import lib
from lib import ktest

NYDUS_BLOB = "containerd.io/snapshot/nydus-blob"
NYDUS_BOOTSTRAP = "containerd.io/snapshot/nydus-bootstrap"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

# --fs-driver of the snapshotter for a front end of regimage.front_ends().
FS_DRIVER = {"fanotify": "fanotify", "fuse": "fusedev"}


def convert_bin():
    path = os.path.join(ktest.BUILD, "nydus-convert")
    ktest.check(os.access(path, os.X_OK), f"{path} missing: build the project first")
    return path


class Image:
    """A plain two-layer busybox image (containerd.busybox_image) pushed to reg as
    cfn/NAME:plain, converted by `nydus-convert image` to cfn/NAME:nydus. src is the merged
    source tree (the layers extracted with GNU tar), the reference tree of every treecmp."""

    def __init__(self, d, reg, name, some_file, prefetch_files=()):
        """prefetch_files: paths written as the image's prefetch table (--prefetch-files)."""
        self.name = name
        self.some_file = some_file
        layout = os.path.join(d, f"{name}-oci")
        self.diff_ids, self.chain = containerd.busybox_image(layout, some_file)
        self.plain = f"{reg.host}/cfn/{name}:plain"
        self.nydus = f"{reg.host}/cfn/{name}:nydus"
        ktest.run(["skopeo", "copy", "--quiet", f"oci:{layout}:latest", f"docker://{self.plain}",
                   "--dest-tls-verify=false"])
        self.src = os.path.join(d, f"{name}-src")
        os.makedirs(self.src)
        with open(os.path.join(layout, "index.json")) as fh:
            mdigest = json.load(fh)["manifests"][0]["digest"]
        with open(os.path.join(layout, "blobs", *mdigest.split(":", 1))) as fh:
            for layer in json.load(fh)["layers"]:
                ktest.run(["tar", "-x", "-z", "--numeric-owner", "-p", "-C", self.src, "-f",
                           os.path.join(layout, "blobs", *layer["digest"].split(":", 1))],
                          quiet=True)
        extra = []
        if prefetch_files:
            listed = os.path.join(d, f"{name}-prefetch.list")
            with open(listed, "w") as fh:
                fh.write("".join(f"{p}\n" for p in prefetch_files))
            extra = ["--prefetch-files", listed]
        ktest.run([convert_bin(), "--log-level", "warn", "image", "--plain-http",
                   "--chunk-size", "64K", *extra, self.plain, self.nydus])
        self.manifest = registry_manifest(reg, f"cfn/{name}", "nydus")
        layers = self.manifest["layers"]
        self.data_digests = [l["digest"] for l in layers
                             if (l.get("annotations") or {}).get(NYDUS_BLOB) == "true"]
        self.bootstrap_digest = [l["digest"] for l in layers
                                 if (l.get("annotations") or {}).get(NYDUS_BOOTSTRAP) == "true"]
        ktest.check(len(self.data_digests) >= 1 and len(self.bootstrap_digest) == 1 and
                    layers[-1]["digest"] == self.bootstrap_digest[0],
                    f"nydus-convert image wrote an unexpected manifest: {self.manifest}")
        self.blob_bytes = sum(l["size"] for l in layers if l["digest"] in self.data_digests)

    def ref(self, host):
        """The nydus image's reference through another host (the fault proxy)."""
        return f"{host}/cfn/{self.name}:nydus"


def registry_manifest(reg, repo, tag):
    req = urllib.request.Request(f"{reg.url}/v2/{repo}/manifests/{tag}",
                                 headers={"Accept": OCI_MANIFEST})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


# --- the fault proxy's request log --------------------------------------------------------

def proxy_log(proxy):
    with urllib.request.urlopen(f"{proxy.url}/__fault/log", timeout=30) as r:
        return json.loads(r.read())


def proxy_post(proxy, what, body=b"[]"):
    req = urllib.request.Request(f"{proxy.url}/__fault/{what}", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()


def proxy_clear(proxy):
    proxy_post(proxy, "clear")


def proxy_rules(proxy, rules):
    proxy_post(proxy, "rules", json.dumps(rules).encode())


def blob_gets(log, digests):
    """The GETs of the log whose path names one of digests: [(digest, Range header or "")]."""
    out = []
    for e in log:
        if e.get("method") != "GET":
            continue
        for dg in digests:
            if e.get("path", "").split("?")[0].endswith(f"/blobs/{dg}"):
                hdrs = {k.lower(): v for k, v in (e.get("headers") or {}).items()}
                out.append((dg, hdrs.get("range", "")))
    return out


# --- mounts and the daemon ----------------------------------------------------------------

def image_mounts(snap_root):
    """[(target, fstype)] of the mounts under the snapshotter's root (its per-image EROFS or
    FUSE mounts: containers' overlays are mounted by containerd elsewhere)."""
    p = subprocess.run(["findmnt", "-rn", "-o", "TARGET,FSTYPE"], capture_output=True, text=True)
    out = []
    for line in p.stdout.splitlines():
        f = line.split(" ")
        if len(f) >= 2 and f[0].startswith(snap_root.rstrip("/") + "/"):
            out.append((f[0].replace("\\x20", " "), f[1]))
    return sorted(out)


def snapshotter_argv(daemon_socket, fs_driver, extra=()):
    """Our snapshotter bound to the test's daemon (lib.ours_argv() plus the lazy options)."""
    return lib.ours_argv() + ["--daemon-socket", daemon_socket, "--fs-driver", fs_driver] + \
        list(extra)


def wait_released(snap_root, dm, what):
    """Remove of the image's bootstrap snapshot unmounts and unbinds asynchronously: poll
    until no mount is
    left under the snapshotter's root and the daemon lists no image."""
    def done():
        m, imgs = image_mounts(snap_root), dm.list()
        if m or imgs:
            ktest.log(f"  (not yet: mounts {m}, daemon images {len(imgs)})")
            return False
        return True
    containerd.retry(what, done, timeout=30.0)


def copy_out(out, name, what):
    path = os.path.join(out, name)
    ktest.check(os.path.exists(path), f"{what}: the container wrote no /out/{name}")
    with open(path, "rb") as fh:
        return fh.read()


class Stack:
    """Our daemon (own cache and socket, daemon_config as its --config), our snapshotter bound
    to it with --fs-driver, containerd with the snapshotter as `nydus` (CRI options as
    containerd.Containerd takes them), all under d. Stop with close(): containers named in
    self.ids and the image are removed first, leftover mounts under d unmounted."""

    def __init__(self, d, fe, daemon_config=None, snap_extra=(), **containerd_kw):
        import daemonctl
        self.d, self.fe = d, fe
        os.makedirs(d, exist_ok=True)
        self.out = os.path.join(d, "out")
        os.makedirs(self.out, exist_ok=True)
        self.bind = ["--mount", f"type=bind,src={self.out},dst=/out,options=rbind:rw"]
        self.snap_root = os.path.join(d, "snap", "root")
        self.snap_sock = os.path.join(d, "snap", "snap.sock")
        os.makedirs(os.path.dirname(self.snap_sock), exist_ok=True)
        self.dm = daemonctl.Daemon(d, cache_dir=os.path.join(d, "cache"), tag="daemon",
                                   config=daemon_config)
        self.snap = None
        self.c = None
        self.ids = []
        self.refs = []
        self.snap_extra = list(snap_extra)
        self.containerd_kw = containerd_kw

    def start(self):
        self.dm.start()
        self.snap = lib.Server(snapshotter_argv(self.dm.socket, FS_DRIVER[self.fe],
                                                self.snap_extra),
                               self.snap_root, self.snap_sock, os.path.join(self.d, "snap", "log"))
        self.c = containerd.Containerd(os.path.join(self.d, "containerd"), self.snap_sock,
                                       **self.containerd_kw)
        self.snap.start()
        self.c.start()
        return self

    def dump_logs(self):
        if self.snap is not None:
            ktest.log("snapshotter log tail:\n" + self.snap.log_tail())
        if self.c is not None:
            ktest.log("containerd log tail:\n" + self.c.log_tail())
        ktest.log("daemon log tail:\n" + self.dm.log())

    def close(self):
        if self.c is not None and self.c.proc is not None:
            for cid in self.ids:
                self.c.ctr("task", "rm", "-f", cid, ok=False, quiet=True)
                self.c.ctr("container", "rm", cid, ok=False, quiet=True)
            for ref in self.refs:
                self.c.ctr("image", "rm", "--sync", ref, ok=False, quiet=True)
            self.c.stop()
        if self.snap is not None:
            self.snap.stop(check=False)
        for mnt, _ in reversed(image_mounts(self.d)):
            subprocess.run(["umount", "-l", mnt], capture_output=True)
        if self.dm.proc is not None and self.dm.proc.poll() is None:
            self.dm.stop()


def read_watched(c, cid, exec_id, script, watchdog):
    """`ctr task exec` of sh -c SCRIPT in container cid under a hard watchdog (a hang guard,
    not a timing check); returns (CompletedProcess, seconds)."""
    t0 = time.monotonic()
    try:
        p = subprocess.run(["ctr", "-a", c.sock, "task", "exec", "--exec-id", exec_id, cid, "sh",
                            "-c", script], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=watchdog)
    except subprocess.TimeoutExpired:
        ktest.fail(f"{cid}: `{script}` still blocked after {watchdog} s: the read hangs")
    return p, time.monotonic() - t0
