#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""treecmp: compare two directory trees entry by entry, metadata included.

    treecmp.py [options] EXPECTED ACTUAL

Compared for every path (the root too, unless --skip-root-meta): file type, full mode
(setuid/setgid/sticky included), uid, gid, size (regular files, symlinks), content (regular
files), symlink target, rdev (device nodes), mtime in seconds and nanoseconds, xattrs (every
namespace the kernel lists, ACLs included), nlink, and hardlink identity: two paths share an
inode in EXPECTED exactly when they share one in ACTUAL.

Exit status 0 when equal, 1 with one line per difference otherwise. Used as a module by
the kernel tests: compare(expected, actual, **options) returns the list of differences.
"""

import argparse
import hashlib
import os
import stat
import sys


def _walk(root):
    """Relative paths of every entry under root ('' is the root), without following links."""
    out = [""]
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            for e in it:
                r = os.path.join(rel, e.name) if rel else e.name
                out.append(r)
                if e.is_dir(follow_symlinks=False):
                    stack.append(r)
    return out


def _digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _xattrs(path, ignore):
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for n in names:
        if any(n.startswith(p) for p in ignore):
            continue
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False)
        except OSError as e:
            out[n] = f"<getxattr error {e.errno}>"
    return out


_TYPES = {
    stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket",
}


def compare(expected, actual, *, content=True, mtime=True, mtime_ns=True, dir_mtime=True,
            owner=True, xattrs=True, nlink=True, dir_nlink=True, hardlinks=True,
            skip_root_meta=False, ignore_xattrs=(), ignore_paths=(), mode_mask=0o7777, max_diffs=200):
    diffs = []

    def d(msg):
        diffs.append(msg)

    ign = set(ignore_paths)
    ea = {p for p in _walk(expected) if p not in ign}
    aa = {p for p in _walk(actual) if p not in ign}
    for p in sorted(ea - aa):
        d(f"missing in actual: /{p}")
    for p in sorted(aa - ea):
        d(f"extra in actual: /{p}")

    ino_e, ino_a = {}, {}
    for p in sorted(ea & aa):
        if len(diffs) >= max_diffs:
            break
        pe = os.path.join(expected, p) if p else expected
        pa = os.path.join(actual, p) if p else actual
        se, sa = os.lstat(pe), os.lstat(pa)
        name = "/" + p
        te, ta = stat.S_IFMT(se.st_mode), stat.S_IFMT(sa.st_mode)
        if te != ta:
            d(f"{name}: type {_TYPES.get(te, te)} != {_TYPES.get(ta, ta)}")
            continue
        if te != stat.S_IFDIR:
            ino_e.setdefault(se.st_ino, []).append(p)
            ino_a.setdefault(sa.st_ino, []).append(p)
        meta = not (p == "" and skip_root_meta)
        if meta:
            me, ma = stat.S_IMODE(se.st_mode) & mode_mask, stat.S_IMODE(sa.st_mode) & mode_mask
            if me != ma and te != stat.S_IFLNK:
                d(f"{name}: mode {me:o} != {ma:o}")
            if owner and (se.st_uid, se.st_gid) != (sa.st_uid, sa.st_gid):
                d(f"{name}: owner {se.st_uid}:{se.st_gid} != {sa.st_uid}:{sa.st_gid}")
            if mtime and (te != stat.S_IFDIR or dir_mtime):
                if mtime_ns and se.st_mtime_ns != sa.st_mtime_ns:
                    d(f"{name}: mtime {se.st_mtime_ns} ns != {sa.st_mtime_ns} ns")
                elif not mtime_ns and se.st_mtime_ns // 10**9 != sa.st_mtime_ns // 10**9:
                    d(f"{name}: mtime {se.st_mtime_ns // 10**9} s != {sa.st_mtime_ns // 10**9} s")
            if nlink and (te != stat.S_IFDIR or dir_nlink) and se.st_nlink != sa.st_nlink:
                d(f"{name}: nlink {se.st_nlink} != {sa.st_nlink}")
            if xattrs:
                xe, xa = _xattrs(pe, ignore_xattrs), _xattrs(pa, ignore_xattrs)
                if xe != xa:
                    for k in sorted(set(xe) | set(xa)):
                        if xe.get(k) != xa.get(k):
                            d(f"{name}: xattr {k}: {xe.get(k)!r:.80} != {xa.get(k)!r:.80}")
        if te == stat.S_IFREG:
            if se.st_size != sa.st_size:
                d(f"{name}: size {se.st_size} != {sa.st_size}")
            elif content:
                try:
                    if _digest(pe) != _digest(pa):
                        d(f"{name}: content differs")
                except OSError as e:
                    d(f"{name}: read error {e}")
        elif te == stat.S_IFLNK:
            try:
                le, la = os.readlink(pe), os.readlink(pa)
            except OSError as e:
                d(f"{name}: readlink error {e}")
            else:
                if le != la:
                    d(f"{name}: symlink target {le[:80]!r} (len {len(le)}) != {la[:80]!r} (len {len(la)})")
        elif te in (stat.S_IFCHR, stat.S_IFBLK):
            if se.st_rdev != sa.st_rdev:
                d(f"{name}: rdev {os.major(se.st_rdev)}:{os.minor(se.st_rdev)} != "
                  f"{os.major(sa.st_rdev)}:{os.minor(sa.st_rdev)}")

    if hardlinks:
        groups_e = {frozenset(v) for v in ino_e.values()}
        groups_a = {frozenset(v) for v in ino_a.values()}
        for g in sorted(groups_e - groups_a, key=sorted):
            if len(g) > 1:
                d(f"hardlink group not kept: {sorted('/' + x for x in g)}")
        for g in sorted(groups_a - groups_e, key=sorted):
            if len(g) > 1:
                d(f"paths share an inode in actual only: {sorted('/' + x for x in g)}")
    return diffs


def rounded_mtime_diffs(expected, actual, ignore_paths=()):
    """Differences where actual's mtime is not expected's rounded to the whole second (an
    eStargz TOC keeps RFC 3339 seconds: ctr-remote rounds with Go's Time.Round), root
    excluded."""
    diffs = []
    ign = set(ignore_paths)
    for root, dirs, files in os.walk(expected):
        for rel in [os.path.relpath(os.path.join(root, n), expected) for n in dirs + files]:
            if rel in ign:
                continue
            ns = os.lstat(os.path.join(expected, rel)).st_mtime_ns
            got = os.lstat(os.path.join(actual, rel)).st_mtime_ns
            if got != (ns + 500_000_000) // 1_000_000_000 * 1_000_000_000:
                diffs.append(f"/{rel}: mtime {got} ns, want {ns} ns rounded to the second")
    return diffs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("expected")
    ap.add_argument("actual")
    ap.add_argument("--no-content", action="store_true")
    ap.add_argument("--no-mtime", action="store_true")
    ap.add_argument("--mtime-seconds", action="store_true", help="compare mtime seconds only")
    ap.add_argument("--no-dir-mtime", action="store_true")
    ap.add_argument("--no-owner", action="store_true")
    ap.add_argument("--no-xattrs", action="store_true")
    ap.add_argument("--no-nlink", action="store_true")
    ap.add_argument("--no-hardlinks", action="store_true")
    ap.add_argument("--skip-root-meta", action="store_true")
    ap.add_argument("--ignore-xattr", action="append", default=[], metavar="PREFIX")
    a = ap.parse_args()
    diffs = compare(a.expected, a.actual, content=not a.no_content, mtime=not a.no_mtime,
                    mtime_ns=not a.mtime_seconds, dir_mtime=not a.no_dir_mtime,
                    owner=not a.no_owner, xattrs=not a.no_xattrs, nlink=not a.no_nlink,
                    hardlinks=not a.no_hardlinks, skip_root_meta=a.skip_root_meta,
                    ignore_xattrs=tuple(a.ignore_xattr))
    for x in diffs:
        print(x)
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    main()
