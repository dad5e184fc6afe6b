# SPDX-License-Identifier: Apache-2.0
"""Images in a real registry for the daemon's registry tests (75-, 76-): start Debian's
docker-registry and the fault proxy through tests/registry/harness.py, build an image with
nydus-convert and push its OCI layout with skopeo."""

import os
import shutil
import sys

import ktest

sys.path.insert(0, os.path.join(ktest.ROOT, "tests", "registry"))
import harness  # noqa: E402


def require_tools():
    missing = harness.require_tools() + [t for t in ("skopeo",) if shutil.which(t) is None]
    ktest.check(not missing, f"missing {', '.join(missing)}: run scripts/setup")


def push(outdir, ref):
    """Push nydus-convert's OUTDIR/oci (tag latest) to ref (host:port/repo:tag, plain HTTP)."""
    ktest.run(["skopeo", "copy", "--quiet", f"oci:{os.path.join(outdir, 'oci')}:latest",
               f"docker://{ref}", "--dest-tls-verify=false"])


def random_files(src, count, size, seed):
    """count incompressible files of size bytes under src/data; returns {rel: bytes}."""
    import random
    rnd = random.Random(seed)
    os.makedirs(os.path.join(src, "data"), exist_ok=True)
    out = {}
    for i in range(count):
        rel = f"data/r{i:03d}.bin"
        data = rnd.randbytes(size)
        with open(os.path.join(src, rel), "wb") as fh:
            fh.write(data)
        out[rel] = data
    return out


def front_ends(workdir):
    """["fanotify", "fuse"] when the kernel has fanotify pre-content, else ["fuse"]."""
    import daemonctl
    fronts = ["fuse"]
    with daemonctl.running(workdir, tag="probe") as dm:
        if daemonctl.fanotify_available(dm):
            fronts.insert(0, "fanotify")
        else:
            ktest.log("no fanotify pre-content on this kernel: FUSE only")
        dm.stop()
    return fronts
