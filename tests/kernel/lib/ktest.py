# SPDX-License-Identifier: Apache-2.0
"""Shared helpers for the kernel tests: finding the built programs, running them, mounting
images with the kernel's file-backed EROFS, and cleaning up whatever a test made.

A test exits 0 (pass), 1 (fail) or 77 (skip). Skip is reserved for "not root" and "this
kernel cannot mount EROFS from a regular file"; anything else that goes wrong is a failure.
"""

import contextlib
import errno
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile

PASS, FAIL, SKIP = 0, 1, 77

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("CFN_ROOT") or os.path.abspath(os.path.join(HERE, "..", "..", ".."))
_build = os.environ.get("CFN_BUILD_DIR") or os.environ.get("BUILD_DIR") or "build"
BUILD = _build if os.path.isabs(_build) else os.path.join(ROOT, _build)
TOOLS = os.path.join(ROOT, "tests", "tools")
SHARED = os.path.abspath(os.path.join(ROOT, "..", "shared"))

sys.path.insert(0, TOOLS)


class TestFailure(Exception):
    pass


class TestSkip(Exception):
    pass


def log(msg):
    print(msg, flush=True)


def fail(msg):
    raise TestFailure(msg)


def skip(msg):
    raise TestSkip(msg)


def require_fixture(path):
    """The upstream fixture at path: skip where it is absent, fail under CI (CI=true),
    where an absent fixture is a broken checkout."""
    if os.path.exists(path):
        return
    if os.environ.get("CI") == "true":
        fail(f"{path} is missing: under CI (CI=true) the fixture is required")
    skip(f"{path} absent")


def check(cond, msg):
    if not cond:
        fail(msg)


def main(body):
    """Run body() and turn its outcome into the 0/1/77 exit status."""
    try:
        body()
    except TestSkip as e:
        log(f"SKIP: {e}")
        sys.exit(SKIP)
    except TestFailure as e:
        log(f"FAIL: {e}")
        sys.exit(FAIL)
    except Exception:  # an unexpected error is a failure, with its traceback
        import traceback

        traceback.print_exc()
        log("FAIL: unexpected exception")
        sys.exit(FAIL)
    log("PASS")
    sys.exit(PASS)


def kernel_config():
    """(path, {option: value}) of the running kernel's build config (/proc/config.gz, else
    /boot/config-RELEASE), read independently of the daemon; (None, None) when neither is
    readable."""
    for path in ("/proc/config.gz", "/boot/config-" + os.uname().release):
        try:
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rt", errors="replace") as fh:
                return path, {n: v for n, eq, v in (ln.strip().partition("=") for ln in fh)
                              if eq and n.startswith("CONFIG_")}
        except OSError:
            continue
    return None, None


def require_root():
    if os.geteuid() != 0:
        skip("kernel tests need root (mount(2), mknod, trusted.* xattrs, chown)")


def convert_bin():
    for cand in (os.path.join(BUILD, "nydus-convert"), os.path.join(BUILD, "convert", "nydus-convert")):
        if os.access(cand, os.X_OK):
            return cand
    fail(f"nydus-convert not built under {BUILD}: run scripts/setup")


def rawmount_bin():
    path = os.path.join(BUILD, "tests", "tools", "rawmount")
    check(os.access(path, os.X_OK), f"{path} missing: run scripts/setup")
    return path


def run(cmd, check_rc=True, capture=True, input_bytes=None, quiet=False):
    """Run cmd (a list). Returns CompletedProcess; fails the test on a non-zero exit when
    check_rc. Output is captured and shown on failure."""
    if not quiet:
        log("+ " + " ".join(str(c) for c in cmd))
    p = subprocess.run(
        [str(c) for c in cmd],
        input=input_bytes,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
        stdin=None if input_bytes is not None else subprocess.DEVNULL,
    )
    if check_rc and p.returncode != 0:
        out = (p.stdout or b"").decode(errors="replace")[-4000:]
        err = (p.stderr or b"").decode(errors="replace")[-4000:]
        fail(f"command failed (exit {p.returncode}): {' '.join(str(c) for c in cmd)}\n"
             f"stdout:\n{out}\nstderr:\n{err}")
    return p


@contextlib.contextmanager
def workdir(tag):
    """A fresh temporary directory, removed afterwards (after any mounts in it are gone)."""
    d = tempfile.mkdtemp(prefix=f"cfn-ktest-{tag}-")
    try:
        yield d
    finally:
        _umount_under(d)
        shutil.rmtree(d, ignore_errors=True)


def _mounts():
    out = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            mp = line.split()[4]
            out.append(mp.encode().decode("unicode_escape"))
    return out


def _umount_under(d):
    d = os.path.realpath(d)
    for mp in sorted((m for m in _mounts() if m == d or m.startswith(d + "/")), key=len, reverse=True):
        if subprocess.run(["umount", mp], stderr=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["umount", "-l", mp], stderr=subprocess.DEVNULL)


_probe_cache = {}


def file_backed_erofs_supported():
    """Mount a tiny mkfs.erofs image from a regular file. Returns (ok, errno)."""
    if "r" in _probe_cache:
        return _probe_cache["r"]
    with workdir("probe") as d:
        src = os.path.join(d, "src")
        os.mkdir(src)
        with open(os.path.join(src, "f"), "w") as fh:
            fh.write("probe\n")
        img = os.path.join(d, "probe.erofs")
        mnt = os.path.join(d, "mnt")
        os.mkdir(mnt)
        if shutil.which("mkfs.erofs") is None:
            fail("mkfs.erofs not installed: run scripts/setup")
        run(["mkfs.erofs", "--quiet", img, src], quiet=True)
        p = subprocess.run([rawmount_bin(), img, mnt, "erofs"], stderr=subprocess.PIPE)
        if p.returncode == 0:
            subprocess.run(["umount", mnt])
            res = (True, 0)
        else:
            res = (False, p.returncode)
    _probe_cache["r"] = res
    return res


def mount_erofs(primary, target, devices=()):
    """mount(2) `primary` (a regular file) read-only on `target` with device=DEV per extra
    device. Skips the test only when this kernel cannot mount EROFS from a regular file."""
    data = ",".join(f"device={os.path.abspath(d)}" for d in devices)
    cmd = [rawmount_bin(), os.path.abspath(primary), target, "erofs"] + ([data] if data else [])
    p = run(cmd, check_rc=False)
    if p.returncode == 0:
        return
    err = p.stderr.decode(errors="replace")
    if p.returncode in (errno.ENOTBLK, errno.EINVAL, errno.ENODEV):
        ok, perr = file_backed_erofs_supported()
        if not ok and perr in (errno.ENOTBLK, errno.EINVAL, errno.ENODEV):
            skip(f"kernel cannot mount EROFS from a regular file (errno {perr}): {err.strip()}")
    dmesg = subprocess.run(["dmesg"], stdout=subprocess.PIPE).stdout.decode(errors="replace")
    tail = "\n".join(l for l in dmesg.splitlines()[-20:] if "erofs" in l.lower())
    fail(f"mount failed: {err.strip()}\nkernel log (erofs lines):\n{tail}")


def umount(target):
    run(["umount", target], quiet=True)


@contextlib.contextmanager
def mounted(primary, target, devices=()):
    os.makedirs(target, exist_ok=True)
    mount_erofs(primary, target, devices)
    try:
        yield target
    finally:
        if subprocess.run(["umount", target]).returncode != 0:
            subprocess.run(["umount", "-l", target])


# --- the converter -------------------------------------------------------------------------

def build_image(source, outdir, compressor=None, digester=None, chunk_size=None):
    cmd = [convert_bin(), "build"]
    if compressor:
        cmd += ["--compressor", compressor]
    if digester:
        cmd += ["--digester", digester]
    if chunk_size:
        cmd += ["--chunk-size", str(chunk_size)]
    cmd += [source, outdir]
    run(cmd)
    boot = os.path.join(outdir, "image.boot")
    check(os.path.isfile(boot), f"{boot} not written")
    return boot


def inspect(boot):
    p = run([convert_bin(), "inspect", boot])
    try:
        info = json.loads(p.stdout)
    except ValueError as e:
        fail(f"inspect printed no JSON ({e}): {p.stdout[:500]!r}")
    check(info.get("rafs") is True, f"inspect: not RAFS: {info}")
    return info


def blob_ids(info):
    blobs = sorted(info.get("blobs", []), key=lambda b: b["index"])
    check([b["index"] for b in blobs] == list(range(len(blobs))), f"blob indexes not 0..n-1: {blobs}")
    return [b["id"] for b in blobs]


def devices_for(boot, outdir, compressor, workroot):
    """The device= files of an image in blob-index order: the blob files themselves for
    --compressor none, else the uncompressed layouts from `nydus-convert unpack`."""
    info = inspect(boot)
    ids = blob_ids(info)
    blob_dir = os.path.join(outdir, "blobs")
    if compressor == "none":
        devs = [os.path.join(blob_dir, i) for i in ids]
    else:
        unpacked = os.path.join(workroot, "unpacked")
        os.makedirs(unpacked, exist_ok=True)
        run([convert_bin(), "unpack", boot, "--blob-dir", blob_dir, "--out", unpacked])
        devs = [os.path.join(unpacked, i) for i in ids]
    for d in devs:
        check(os.path.isfile(d), f"device file {d} missing")
    return info, devs


def run_in(cwd, cmd):
    """Run cmd in cwd without checking its exit status; output captured."""
    log(f"+ (cd {cwd} && " + " ".join(str(c) for c in cmd) + ")")
    return subprocess.run([str(c) for c in cmd], cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
