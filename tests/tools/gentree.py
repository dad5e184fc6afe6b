#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""gentree: make a source tree with every entry type an image must carry (needs root).

    gentree.py DIR [--chunk-size N] [--seed N]

Regular files (empty, 1 byte, 4095/4096/4097 bytes, several chunks long with a tail, duplicate
content for dedup, mostly zeros with holes, compressible text, random), directories (one with
400 entries, nested, sticky 1777), symlinks (short, 4095 bytes, relative, absolute, dangling),
a file with three hard links, char and block devices with large major/minor, a fifo, a unix
socket, user.* trusted.* security.* xattrs (a long value and an empty one), POSIX ACLs when
setfacl exists, uid/gid above 65535, modes 4755/2755/7777/0000, mtimes with nanoseconds
(directory mtimes are set last, deepest first, so creating children does not change them).
"""

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys


def _write(path, data):
    with open(path, "wb") as fh:
        fh.write(data)


def make_tree(dst, chunk_size=65536, seed=1234, name255=True):
    rnd = random.Random(seed)
    os.makedirs(dst, exist_ok=True)
    os.chmod(dst, 0o755)
    j = lambda *p: os.path.join(dst, *p)  # noqa: E731
    mtimes = {}  # rel path -> (ns); applied at the end

    def mt(rel, sec, nsec):
        mtimes[rel] = sec * 10**9 + nsec

    # Regular files.
    os.mkdir(j("files"))
    sizes = {"empty": 0, "one": 1, "b4095": 4095, "b4096": 4096, "b4097": 4097,
             "b8192": 8192, "b100k": 100_000}
    for name, size in sizes.items():
        _write(j("files", name), rnd.randbytes(size))
    multi = rnd.randbytes(chunk_size * 4 + 1234)  # several chunks and a partial tail
    _write(j("files", "multichunk"), multi)
    _write(j("files", "multichunk.dup"), multi)  # same chunks: dedup
    _write(j("files", "chunk.exact"), rnd.randbytes(chunk_size * 2))  # chunk-aligned size
    # Shares its first two chunks with multichunk, then differs.
    _write(j("files", "multichunk.prefix"), multi[: chunk_size * 2] + rnd.randbytes(5000))
    text = b"".join(b"line %06d: the quick brown fox jumps over the lazy dog\n" % i for i in range(40000))
    _write(j("files", "text"), text)
    # Mostly zeros: a hole, a few bytes, another hole, with a tail.
    with open(j("files", "sparse"), "wb") as fh:
        fh.truncate(3 * chunk_size + 777)
        fh.seek(chunk_size + 5)
        fh.write(b"data in the middle")
    _write(j("files", "zeros"), bytes(2 * chunk_size))
    for rel, mode in (("setuid", 0o4755), ("setgid", 0o2755), ("allbits", 0o7777), ("nobits", 0o000),
                      ("private", 0o600)):
        _write(j("files", rel), rel.encode() + b"\n")
        os.chmod(j("files", rel), mode)
    # Owners above 16 bits.
    _write(j("files", "bigids"), b"owned by 100000:200000\n")
    os.chown(j("files", "bigids"), 100000, 200000)
    _write(j("files", "id65536"), b"owned by 65536:65535\n")
    os.chown(j("files", "id65536"), 65536, 65535)
    _write(j("files", "user1000"), b"owned by 1000:1000\n")
    os.chown(j("files", "user1000"), 1000, 1000)
    for i, rel in enumerate(sorted(os.listdir(j("files")))):
        mt("files/" + rel, 1_600_000_000 + i * 3600, (123_456_789 * (i + 1)) % 10**9)
    mt("files/empty", 0, 0)                    # the epoch
    mt("files/one", 5_000_000_000, 999_999_999)  # beyond 32-bit seconds (year 2128)

    # Hard links: three names for one inode, across directories.
    os.mkdir(j("links"))
    _write(j("links", "hl1"), b"hard linked content\n" * 100)
    os.link(j("links", "hl1"), j("links", "hl2"))
    os.link(j("links", "hl1"), j("files", "hl3"))
    mt("links/hl1", 1_650_000_000, 1)

    # Symlinks.
    os.mkdir(j("sym"))
    os.symlink("../files/text", j("sym", "rel"))
    os.symlink("/etc/hostname", j("sym", "abs"))
    os.symlink("does/not/exist", j("sym", "dangling"))
    os.symlink("x", j("sym", "short"))
    os.symlink("d" * 4095, j("sym", "long4095"))
    long_rel = "/".join(["..", "sym"] * 300)[:4000] + "/end"
    os.symlink(long_rel, j("sym", "longrel"))
    os.symlink(".", j("sym", "self"))
    for i, rel in enumerate(sorted(os.listdir(j("sym")))):
        mt("sym/" + rel, 1_700_000_000 + i, 500_000_000 + i)
    os.chown(j("sym", "short"), 4242, 4343, follow_symlinks=False)

    # Special files.
    os.mkdir(j("special"))
    os.mknod(j("special", "chr"), 0o620 | 0o020000, os.makedev(300, 70000))
    os.mknod(j("special", "blk"), 0o660 | 0o060000, os.makedev(4095, 1048575))
    os.mknod(j("special", "chr00"), 0o666 | 0o020000, os.makedev(1, 3))
    os.mkfifo(j("special", "fifo"), 0o644)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        cwd = os.getcwd()
        os.chdir(j("special"))  # a short socket path, whatever DIR is
        try:
            s.bind("sock")
        finally:
            os.chdir(cwd)
    finally:
        s.close()
    os.chmod(j("special", "sock"), 0o755)
    for i, rel in enumerate(sorted(os.listdir(j("special")))):
        mt("special/" + rel, 1_690_000_000 + i, 42 + i)

    # Directories.
    os.makedirs(j("dirs", "a", "b", "c", "d"))
    _write(j("dirs", "a", "b", "c", "d", "deep"), b"deep\n")
    os.mkdir(j("dirs", "sticky"))
    os.chmod(j("dirs", "sticky"), 0o1777)
    os.mkdir(j("dirs", "empty"))
    os.mkdir(j("dirs", "restricted"))
    os.chmod(j("dirs", "restricted"), 0o700)
    os.chown(j("dirs", "restricted"), 70000, 70001)
    os.mkdir(j("dirs", "many"))
    for i in range(400):
        name = f"entry-{i:04d}-" + "n" * (i % 60)
        if i % 7 == 0:
            os.mkdir(j("dirs", "many", name))
        elif i % 11 == 0:
            os.symlink(f"target-{i}", j("dirs", "many", name))
        else:
            _write(j("dirs", "many", name), f"{i}\n".encode())
    # Names with odd bytes.
    odd = os.path.join(dst, "dirs").encode() + b"/odd \xe2\x98\x83 name\twith\nnewline"
    with open(odd, "wb") as fh:
        fh.write(b"odd name\n")
    if name255:  # mkfs.erofs 1.5 cannot take a 255-byte name; the baseline test leaves it out
        _write(j("dirs", "x" * 255), b"255-byte name\n")

    # Xattrs.
    os.mkdir(j("xattr"))
    _write(j("xattr", "f"), b"with xattrs\n")
    os.setxattr(j("xattr", "f"), "user.short", b"v")
    os.setxattr(j("xattr", "f"), "user.empty", b"")
    os.setxattr(j("xattr", "f"), "user.long", bytes(range(256)) * 8)
    os.setxattr(j("xattr", "f"), "trusted.overlay.custom", b"trusted value")
    os.setxattr(j("xattr", "f"), "security.cfn-test", b"security value")
    os.setxattr(j("xattr"), "user.on-dir", b"dir value")
    _write(j("xattr", "same1"), b"a\n")
    _write(j("xattr", "same2"), b"b\n")
    for n in ("same1", "same2"):  # identical xattr sets: a shared-xattr candidate
        os.setxattr(j("xattr", n), "user.shared", b"shared value " * 10)
        os.setxattr(j("xattr", n), "trusted.shared", b"t")
    acl = shutil.which("setfacl")
    if acl:
        _write(j("xattr", "acl"), b"acl\n")
        subprocess.run([acl, "-m", "u:1234:rx,g:5678:r,m::rwx", j("xattr", "acl")], check=True)
        os.mkdir(j("xattr", "acldir"))
        subprocess.run([acl, "-d", "-m", "u:1234:rwx", j("xattr", "acldir")], check=True)
        subprocess.run([acl, "-m", "u:99999:rwx", j("xattr", "acldir")], check=True)
    for i, rel in enumerate(sorted(os.listdir(j("xattr")))):
        mt("xattr/" + rel, 1_710_000_000 + i, 7 * i)

    # Apply mtimes: files first, then directories deepest first.
    for rel, ns in mtimes.items():
        os.utime(j(rel), ns=(ns, ns), follow_symlinks=False)
    dirs = []
    for base, dnames, _ in os.walk(dst):
        for dn in dnames:
            dirs.append(os.path.join(base, dn))
    for n, path in enumerate(sorted(dirs, key=lambda p: p.count("/"), reverse=True)):
        ns = (1_620_000_000 + n) * 10**9 + 111_111_111 * (n % 9)
        os.utime(path, ns=(ns, ns), follow_symlinks=False)
    os.utime(dst, ns=(1_600_000_000_987_654_321, 1_600_000_000_987_654_321))
    return dst


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--chunk-size", type=int, default=65536)
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("gentree: needs root (mknod, chown, trusted.* xattrs)")
    make_tree(a.dir, a.chunk_size, a.seed)


if __name__ == "__main__":
    main()
