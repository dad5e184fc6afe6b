#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""ocilayout: write OCI image layouts from layer tars, and apply layers to a directory the way
a container runtime would (the expected merged tree of an image).

As a module:
    write_layout(dir, [(tar_bytes, "gzip"|"zstd"|None), ...]) -> manifest digest
    apply_layer(root, tar_bytes)   extract one uncompressed layer tar into root, honouring
                                   whiteouts (.wh.NAME) and opaque markers (.wh..wh..opq)
    sample_layers() -> [(tar_bytes, compression), ...]  a three-layer image with whiteouts,
                                   an opaque dir, hardlinks, pax xattrs and nanosecond mtimes
As a program:
    ocilayout.py OUTDIR [--expected DIR]   write the sample layout (and its merged tree)
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

WH_PREFIX = ".wh."
WH_OPAQUE = ".wh..wh..opq"

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = {None: "application/vnd.oci.image.layer.v1.tar",
            "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
            "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}


def _sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def _put_blob(layout, data):
    dg = _sha(data)
    path = os.path.join(layout, "blobs", "sha256", dg.split(":", 1)[1])
    with open(path, "wb") as fh:
        fh.write(data)
    return {"digest": dg, "size": len(data)}


def compress(data, how):
    if how is None:
        return data
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "zstd":
        return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, stdout=subprocess.PIPE,
                              check=True).stdout
    raise ValueError(how)


def write_layout(layout, layers, ref="latest"):
    """layers: list of (uncompressed tar bytes, compression). Returns the manifest digest."""
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(layout, "oci-layout"), "w") as fh:
        json.dump({"imageLayoutVersion": "1.0.0"}, fh)
    descs, diff_ids = [], []
    for data, how in layers:
        d = _put_blob(layout, compress(data, how))
        d["mediaType"] = MT_LAYER[how]
        descs.append(d)
        diff_ids.append(_sha(data))
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"layer {i}"} for i in range(len(layers))],
    }, sort_keys=True).encode()
    cd = _put_blob(layout, config)
    cd["mediaType"] = MT_CONFIG
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": cd,
                           "layers": descs}, sort_keys=True).encode()
    md = _put_blob(layout, manifest)
    md["mediaType"] = MT_MANIFEST
    md["annotations"] = {"org.opencontainers.image.ref.name": ref}
    with open(os.path.join(layout, "index.json"), "w") as fh:
        json.dump({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [md]}, fh)
    return md["digest"]


# --- applying layers -----------------------------------------------------------------------

def _norm(name):
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ValueError(f"unsafe path {name!r}")
    return "/".join(parts)


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _set_meta(path, m):
    if m.issym():
        os.lchown(path, m.uid, m.gid)
    else:
        os.chown(path, m.uid, m.gid)
        os.chmod(path, m.mode & 0o7777)
    for k, v in m.pax_headers.items():
        if k.startswith("SCHILY.xattr."):
            os.setxattr(path, k[len("SCHILY.xattr."):], v.encode("utf-8", "surrogateescape"),
                        follow_symlinks=False)


def _mtime_ns(m):
    s = m.pax_headers.get("mtime")
    if s is None:
        return int(m.mtime) * 10**9
    whole, _, frac = s.partition(".")
    return int(whole) * 10**9 + int((frac + "000000000")[:9])


def apply_layer(root, data):
    """Extract one uncompressed layer tar into root with OCI whiteout semantics: whiteouts and
    opaque markers act on the layers below, so they are applied before this layer's entries."""
    tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
    members = tf.getmembers()
    for m in members:
        rel = _norm(m.name)
        parent, base = os.path.split(rel)
        if base == WH_OPAQUE:
            d = os.path.join(root, parent)
            if os.path.isdir(d):
                for e in os.listdir(d):
                    _remove(os.path.join(d, e))
        elif base.startswith(WH_PREFIX):
            _remove(os.path.join(root, parent, base[len(WH_PREFIX):]))
    dir_meta = {}
    for m in members:
        rel = _norm(m.name)
        base = os.path.basename(rel)
        if base.startswith(WH_PREFIX):
            continue
        path = os.path.join(root, rel) if rel else root
        if m.isdir():
            if os.path.lexists(path) and not os.path.isdir(path):
                _remove(path)
            os.makedirs(path, exist_ok=True)
            _set_meta(path, m)
            dir_meta[path] = _mtime_ns(m)
            continue
        _remove(path)
        if m.isreg():
            with open(path, "wb") as fh:
                fh.write(tf.extractfile(m).read())
        elif m.issym():
            os.symlink(m.linkname, path)
        elif m.islnk():
            os.link(os.path.join(root, _norm(m.linkname)), path)
            continue  # a hard link shares the target's inode and metadata
        elif m.ischr() or m.isblk():
            kind = 0o020000 if m.ischr() else 0o060000
            os.mknod(path, kind | (m.mode & 0o777), os.makedev(m.devmajor, m.devminor))
        elif m.isfifo():
            os.mkfifo(path)
        else:
            raise ValueError(f"unsupported member type {m.type!r} for {m.name}")
        _set_meta(path, m)
        ns = _mtime_ns(m)
        os.utime(path, ns=(ns, ns), follow_symlinks=False)
    for path in sorted(dir_meta, key=lambda p: p.count("/"), reverse=True):
        os.utime(path, ns=(dir_meta[path], dir_meta[path]))
    # A directory changed by this layer without an entry of its own would keep its old mtime
    # in an image but not here: sample_layers() lists every parent directory it changes, as
    # real layers do (the root excepted; its metadata is not compared).


# --- the sample image ----------------------------------------------------------------------

class _Tar:
    def __init__(self):
        self.buf = io.BytesIO()
        self.tf = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)

    def _info(self, name, kind, mode, mtime, uid=0, gid=0, pax=None):
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mode = mode
        ti.uid, ti.gid = uid, gid
        ti.uname = ti.gname = ""
        if isinstance(mtime, str):  # "SECONDS.NANOS": a pax mtime with nanoseconds
            ti.mtime = int(mtime.split(".")[0])
            ti.pax_headers = {"mtime": mtime}
        else:
            ti.mtime = mtime
        if pax:
            ti.pax_headers = dict(ti.pax_headers, **pax)
        return ti

    def dir(self, name, mode=0o755, mtime=1_600_000_000, **kw):
        self.tf.addfile(self._info(name, tarfile.DIRTYPE, mode, mtime, **kw))

    def file(self, name, data, mode=0o644, mtime=1_600_000_000, **kw):
        ti = self._info(name, tarfile.REGTYPE, mode, mtime, **kw)
        ti.size = len(data)
        self.tf.addfile(ti, io.BytesIO(data))

    def symlink(self, name, target, mtime=1_600_000_000, **kw):
        ti = self._info(name, tarfile.SYMTYPE, 0o777, mtime, **kw)
        ti.linkname = target
        self.tf.addfile(ti)

    def hardlink(self, name, target, **kw):
        ti = self._info(name, tarfile.LNKTYPE, 0o644, 1_600_000_000, **kw)
        ti.linkname = target
        self.tf.addfile(ti)

    def dev(self, name, char, major, minor, mode=0o600, **kw):
        ti = self._info(name, tarfile.CHRTYPE if char else tarfile.BLKTYPE, mode, 1_600_000_000, **kw)
        ti.devmajor, ti.devminor = major, minor
        self.tf.addfile(ti)

    def fifo(self, name, mode=0o644, **kw):
        self.tf.addfile(self._info(name, tarfile.FIFOTYPE, mode, 1_600_000_000, **kw))

    def whiteout(self, name):
        parent, base = os.path.split(name)
        self.file(os.path.join(parent, WH_PREFIX + base), b"", mode=0o600)

    def opaque(self, dirname):
        self.file(os.path.join(dirname, WH_OPAQUE), b"", mode=0o600)

    def bytes(self):
        self.tf.close()
        return self.buf.getvalue()


def sample_layers():
    big = bytes(range(256)) * 1200  # 300 KiB, several 64 KiB chunks
    l1 = _Tar()
    l1.dir("etc", mtime=1_600_000_100)
    l1.file("etc/config", b"version=1\n", mtime="1600000001.123456789")
    l1.file("etc/remove-me", b"gone in layer 2\n")
    l1.file("etc/keep", b"kept\n", mode=0o644)
    l1.dir("opaque", mtime=1_600_000_200)
    l1.file("opaque/old1", b"hidden by the opaque marker\n")
    l1.dir("opaque/sub")
    l1.file("opaque/sub/old2", b"hidden too\n")
    l1.dir("gone")
    l1.file("gone/a", b"whole dir whited out\n")
    l1.dir("bin")
    l1.file("bin/tool", big, mode=0o4755, uid=100000, gid=100001)
    l1.hardlink("bin/tool-hl", "bin/tool")
    l1.hardlink("bin/tool-hl2", "bin/tool")
    l1.symlink("link", "etc/config")
    l1.dir("dev")
    l1.dev("dev/null", True, 1, 3, mode=0o666)
    l1.dev("dev/bigblk", False, 4095, 1048575)
    l1.fifo("dev/fifo")
    l1.file("xattrs", b"x\n", pax={"SCHILY.xattr.user.layer": "one",
                                  "SCHILY.xattr.trusted.t": "tv"})
    l1.dir("d" * 90)
    l1.file("d" * 90 + "/" + "f" * 120, b"long path via pax\n")

    l2 = _Tar()  # plain tar, names with a ./ prefix
    l2.dir("./etc", mtime=1_600_000_300)
    l2.whiteout("./etc/remove-me")
    l2.file("./etc/config", b"version=2\n", mtime="1600000002.000000001")
    l2.dir("./opaque", mode=0o750, mtime=1_600_000_400)
    l2.opaque("./opaque")
    l2.file("./opaque/new", b"only this survives in opaque/ (and new2)\n")
    l2.whiteout("./gone")
    l2.dir("./new", mtime=1_600_000_500)
    l2.dir("./new/dir", mtime=1_600_000_501)
    l2.file("./new/dir/file", big[:70000] + b"different tail", mtime="1600000003.999999999")
    l2.file("./new/dir/dup", big)  # same content as bin/tool: dedup across layers

    l3 = _Tar()
    l3.file("link", b"was a symlink\n", mtime=1_600_000_600)
    l3.dir("etc", mtime=1_600_000_700)
    l3.file("etc/keep", b"kept, new mode\n", mode=0o600, uid=7, gid=8)
    l3.dir("opaque", mode=0o750, mtime=1_600_000_800)
    l3.file("opaque/new2", b"added on top of the opaque dir\n")
    l3.dir("bin", mtime=1_600_000_900)
    l3.whiteout("bin/tool-hl2")
    return [(l1.bytes(), "gzip"), (l2.bytes(), None), (l3.bytes(), "zstd")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--expected", help="also write the merged tree here (needs root)")
    a = ap.parse_args()
    layers = sample_layers()
    print(write_layout(a.outdir, layers))
    if a.expected:
        os.makedirs(a.expected, exist_ok=True)
        for data, _ in layers:
            apply_layer(a.expected, data)


if __name__ == "__main__":
    sys.exit(main())
