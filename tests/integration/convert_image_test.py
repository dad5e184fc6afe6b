#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""End to end: `nydus-convert image` from a real registry to a real registry.

An image is made offline (busybox-static and a few files in two layers, gzip and zstd,
one whiteout, a hard link; an OCI index with amd64 and arm64 entries, and a Docker
schema 2 image), pushed to a local docker-registry, converted with `nydus-convert
image`, and the result is pulled back: media types and nydusify's annotations, the
index's os.features, `nydus-convert check` over the downloaded bootstrap and blobs, and
a kernel mount (file-backed EROFS, device= per blob) compared with the merged source
layers. A second conversion, through a recording proxy, must upload no blob.

Exit 0 pass, 1 fail, 77 skip (not root for the mount, tools missing).
Environment: CFN_BUILD_DIR (the meson build root).
"""

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "registry"))
sys.path.insert(0, os.path.join(ROOT, "tests", "kernel", "lib"))
import harness  # noqa: E402
import ktest  # noqa: E402  (also puts tests/tools on sys.path)
import ocilayout  # noqa: E402
import treecmp  # noqa: E402

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER_MT = {"gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
            "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
            None: "application/vnd.oci.image.layer.v1.tar"}
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
NYDUS_BLOB = "application/vnd.oci.image.layer.nydus.blob.v1"
MTIME = 1700000000


# --- making the source image offline ----------------------------------------------------------
def tar_layer(entries):
    """entries: (name, kind, payload, mode) with kind file|dir|symlink|hardlink|whiteout."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, payload, mode in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = MTIME
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            ti.mode = mode
            data = None
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
            elif kind == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, payload
            elif kind == "hardlink":
                ti.type, ti.linkname = tarfile.LNKTYPE, payload
            else:  # file or whiteout (an empty file named .wh.X)
                data = payload or b""
                ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def source_layers():
    with open("/bin/busybox", "rb") as fh:
        busybox = fh.read()
    big = harness.pseudo_random(3 * 1024 * 1024 + 123, "cfn-e2e-big")
    l1 = [("bin", "dir", None, 0o755), ("bin/busybox", "file", busybox, 0o755),
          ("bin/sh", "symlink", "busybox", 0o777), ("bin/ls", "symlink", "busybox", 0o777),
          ("etc", "dir", None, 0o755), ("etc/hostname", "file", b"source\n", 0o644),
          ("etc/passwd", "file", b"root:x:0:0:root:/root:/bin/sh\n", 0o644),
          ("tmp", "dir", None, 0o1777), ("usr", "dir", None, 0o755),
          ("usr/share", "dir", None, 0o755), ("usr/share/big.bin", "file", big, 0o644),
          ("var", "dir", None, 0o755), ("var/lib", "dir", None, 0o755),
          ("var/lib/gone.txt", "file", b"removed by layer 2\n", 0o600)]
    l2 = [("etc", "dir", None, 0o755), ("etc/hostname", "file", b"converted\n", 0o644),
          ("var", "dir", None, 0o755), ("var/lib", "dir", None, 0o755),
          ("var/lib/.wh.gone.txt", "whiteout", None, 0o644),
          ("usr", "dir", None, 0o755), ("usr/share", "dir", None, 0o755),
          ("usr/share/new.txt", "file", b"layer two\n" * 1000, 0o644),
          ("usr/share/new-link", "hardlink", "usr/share/new.txt", 0o644)]
    return [(tar_layer(l1), "gzip"), (tar_layer(l2), "zstd")]


def canonical(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def push_oci_index(client, repo, tag, layers):
    """Push layers as an OCI image with an index (amd64 + arm64). Returns the index digest."""
    descs, diff_ids = [], []
    for data, how in layers:
        blob = ocilayout.compress(data, how)
        client.push_blob(repo, blob)
        descs.append({"mediaType": LAYER_MT[how], "digest": sha(blob), "size": len(blob)})
        diff_ids.append(sha(data))
    entries = []
    for arch in ("arm64", "amd64"):
        config = canonical({"architecture": arch, "os": "linux",
                            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
                            "rootfs": {"type": "layers", "diff_ids": diff_ids}})
        client.push_blob(repo, config)
        manifest = canonical({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                              "config": {"mediaType": OCI_CONFIG, "digest": sha(config),
                                         "size": len(config)}, "layers": descs})
        client.push_manifest(repo, sha(manifest), OCI_MANIFEST, manifest)
        entries.append({"mediaType": OCI_MANIFEST, "digest": sha(manifest), "size": len(manifest),
                        "platform": {"os": "linux", "architecture": arch}})
    index = canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    return client.push_manifest(repo, tag, OCI_INDEX, index)


def push_docker_image(client, repo, tag, layer):
    blob = gzip.compress(layer, mtime=0)
    client.push_blob(repo, blob)
    config = canonical({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                        "rootfs": {"type": "layers", "diff_ids": [sha(layer)]}})
    client.push_blob(repo, config)
    manifest = canonical({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                          "config": {"mediaType": DOCKER_CONFIG, "digest": sha(config),
                                     "size": len(config)},
                          "layers": [{"mediaType": DOCKER_LAYER, "digest": sha(blob),
                                      "size": len(blob)}]})
    return client.push_manifest(repo, tag, DOCKER_MANIFEST, manifest)


# --- checking the result ----------------------------------------------------------------------
def convert(conv, src, dst, *extra):
    t0 = time.monotonic()
    p = ktest.run([conv, "image", *extra, src, dst])
    took = time.monotonic() - t0
    err = p.stderr.decode(errors="replace")
    ktest.log(f"nydus-convert image took {took:.2f} s\n{err.strip()}")
    m = re.search(r"(\d+) blob\(s\) uploaded .*?, (\d+) already there", err)
    ktest.check(m is not None, "no push summary in the log")
    return p.stdout.decode().strip(), int(m.group(1)), int(m.group(2))


def check_manifest(client, repo, manifest_digest, want_arch):
    mt, body = client.get_manifest(repo, manifest_digest)
    ktest.check(mt == OCI_MANIFEST, f"manifest served as {mt}")
    ktest.check(sha(body) == manifest_digest, "manifest digest mismatch")
    m = json.loads(body)
    ktest.check(m.get("mediaType") == OCI_MANIFEST, f"manifest mediaType {m.get('mediaType')}")
    ktest.check(m["config"]["mediaType"] == OCI_CONFIG, f"config type {m['config']['mediaType']}")
    layers = m["layers"]
    ktest.check(len(layers) >= 2, f"{len(layers)} layers")
    for l in layers[:-1]:
        ktest.check(l["mediaType"] == NYDUS_BLOB, f"data layer type {l['mediaType']}")
        ann = l.get("annotations", {})
        ktest.check(ann.get("containerd.io/snapshot/nydus-blob") == "true",
                    f"data layer annotations {ann}")
    boot = layers[-1]
    ktest.check(boot["mediaType"] == LAYER_MT["gzip"], f"bootstrap layer type {boot['mediaType']}")
    ann = boot.get("annotations", {})
    ktest.check(ann.get("containerd.io/snapshot/nydus-bootstrap") == "true", f"bootstrap {ann}")
    ktest.check(ann.get("containerd.io/snapshot/nydus-fs-version") == "6", f"bootstrap {ann}")
    config = json.loads(client.get_blob(repo, m["config"]["digest"]))
    ktest.check(config.get("architecture") == want_arch, f"config architecture {config}")
    ktest.check(len(config["rootfs"]["diff_ids"]) == len(layers), "diff_ids do not match layers")
    ktest.check(config.get("config", {}).get("Cmd") == ["/bin/sh"], "config.Cmd not carried over")
    return m


def download(client, repo, manifest, outdir):
    """blobs/<hex> for each data blob and image.boot from the bootstrap layer."""
    blobs = os.path.join(outdir, "blobs")
    os.makedirs(blobs)
    for l in manifest["layers"][:-1]:
        data = client.get_blob(repo, l["digest"])
        ktest.check(sha(data) == l["digest"], f"blob {l['digest']} digest mismatch")
        with open(os.path.join(blobs, l["digest"].split(":")[1]), "wb") as fh:
            fh.write(data)
    tgz = client.get_blob(repo, manifest["layers"][-1]["digest"])
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(tgz))) as tf:
        member = tf.getmember("image/image.boot")
        boot = tf.extractfile(member).read()
    path = os.path.join(outdir, "image.boot")
    with open(path, "wb") as fh:
        fh.write(boot)
    return path


def check_and_mount(conv, boot, outdir, expected, work):
    ktest.run([conv, "check", boot, "--blob-dir", os.path.join(outdir, "blobs")])
    if os.geteuid() != 0:
        ktest.log("not root: kernel mount skipped")
        return False
    _, devs = ktest.devices_for(boot, outdir, "zstd", work)
    mnt = os.path.join(work, "mnt")
    with ktest.mounted(boot, mnt, devs):
        diffs = treecmp.compare(expected, mnt, skip_root_meta=True)
        with open(os.path.join(mnt, "etc", "hostname"), "rb") as fh:
            hostname = fh.read()
    if diffs:
        ktest.fail(f"{len(diffs)} difference(s) between the source layers and the mount:\n  " +
                   "\n  ".join(diffs[:60]))
    ktest.check(hostname == b"converted\n", f"etc/hostname reads {hostname!r}")
    ktest.log("kernel mount of the converted image equals the merged source layers")
    return True


def body():
    missing = harness.require_tools()
    if missing:
        ktest.skip(f"not installed: {', '.join(missing)}")
    if not os.path.exists("/bin/busybox"):
        ktest.skip("/bin/busybox missing (busybox-static)")
    conv = ktest.convert_bin()
    if b"image" not in subprocess.run([conv, "--help"], capture_output=True).stdout:
        ktest.fail("nydus-convert has no image subcommand")
    t0 = time.monotonic()
    with harness.Harness(prefix="cfn-convimg-") as h, ktest.workdir("convimg") as work:
        reg = h.registry("registry")
        client = harness.MiniClient(h, reg)
        layers = source_layers()
        expected = os.path.join(work, "expected")
        os.mkdir(expected)
        for data, _ in layers:
            ocilayout.apply_layer(expected, data)

        # 1. An OCI index: the amd64 entry is converted; the result is an index too.
        push_oci_index(client, "src/busybox", "multi", layers)
        out, pushed, skipped = convert(conv, f"{reg.host}/src/busybox:multi",
                                       f"{reg.host}/dst/busybox:nydus", "--chunk-size", "64K",
                                       "--platform", "linux/amd64")
        mt, body = client.get_manifest("dst/busybox", "nydus")
        ktest.check(mt == OCI_INDEX, f"target of an index source served as {mt}")
        ktest.check(sha(body) == out, f"printed digest {out} is not the index's {sha(body)}")
        index = json.loads(body)
        ktest.check(len(index["manifests"]) == 1, f"index entries: {index['manifests']}")
        entry = index["manifests"][0]
        plat = entry.get("platform", {})
        ktest.check(plat.get("os") == "linux" and plat.get("architecture") == "amd64",
                    f"platform {plat}")
        ktest.check(plat.get("os.features") == ["nydus.remoteimage.v1"], f"platform {plat}")
        manifest = check_manifest(client, "dst/busybox", entry["digest"], "amd64")
        ktest.check(pushed == len(manifest["layers"]) + 1 and skipped == 0,
                    f"first run: {pushed} pushed, {skipped} skipped")
        outdir = os.path.join(work, "pulled")
        boot = download(client, "dst/busybox", manifest, outdir)
        check_and_mount(conv, boot, outdir, expected, os.path.join(work, "m1"))

        # 2. The same again, through a recording proxy: nothing is uploaded.
        fp = h.fault_proxy(reg)
        out2, pushed2, skipped2 = convert(conv, f"{fp.host}/src/busybox:multi",
                                          f"{fp.host}/dst/busybox:nydus", "--chunk-size", "64K")
        conn = h.connection("http", fp.host)
        conn.request("GET", "/__fault/log")
        log = json.loads(conn.getresponse().read())
        conn.close()
        uploads = [e for e in log if e["method"] in ("POST", "PATCH") or
                   (e["method"] == "PUT" and "/blobs/" in e["path"])]
        ktest.check(not uploads, f"second run uploaded: {[u['path'] for u in uploads][:5]}")
        ktest.check(pushed2 == 0 and skipped2 == pushed, f"second run: {pushed2} pushed, "
                    f"{skipped2} skipped")
        ktest.check(out2 == out, f"second run produced {out2}, first {out}")
        ktest.log("second run: no blob uploaded, same index digest")

        # 3. A Docker schema 2 image with one gzip layer: the target is a plain manifest.
        push_docker_image(client, "src/docker", "v1", layers[0][0])
        out3, _, _ = convert(conv, f"{reg.host}/src/docker:v1", f"{reg.host}/dst/docker:v1",
                             "--compressor", "zstd")
        mt, body = client.get_manifest("dst/docker", "v1")
        ktest.check(mt == OCI_MANIFEST and sha(body) == out3, f"docker source: target {mt}")
        m3 = check_manifest(client, "dst/docker", out3, "amd64")
        outdir3 = os.path.join(work, "pulled3")
        boot3 = download(client, "dst/docker", m3, outdir3)
        ktest.run([conv, "check", boot3, "--blob-dir", os.path.join(outdir3, "blobs")])
    ktest.log(f"end-to-end conversion checks passed in {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    ktest.main(body)
