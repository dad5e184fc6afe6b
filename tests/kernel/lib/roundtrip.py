# SPDX-License-Identifier: Apache-2.0
"""Round trip: generated tree with every entry type -> nydus-convert build -> kernel mount
(file-backed EROFS, device= per blob) -> the mounted tree equals the source."""

import hashlib
import os

import gentree
import ktest
import treecmp

CHUNK = 64 * 1024


def _sha(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def run(compressor, digester=None):
    ktest.require_root()
    ktest.convert_bin()
    with ktest.workdir(f"rt-{compressor}-{digester or 'default'}") as d:
        src = os.path.join(d, "src")
        gentree.make_tree(src, chunk_size=CHUNK)
        out = os.path.join(d, "out")
        boot = ktest.build_image(src, out, compressor, digester, CHUNK)
        info, devs = ktest.devices_for(boot, out, compressor, d)
        ktest.log(f"inspect: {info}")
        ktest.check(info.get("chunk_size") == CHUNK, f"chunk_size {info.get('chunk_size')} != {CHUNK}")
        ktest.check(info.get("compressor") == compressor, f"compressor {info.get('compressor')} != {compressor}")
        if digester:
            ktest.check(info.get("digester") == digester, f"digester {info.get('digester')} != {digester}")
        ktest.check(len(devs) == 1, f"one source, so one blob expected; got {len(devs)}")

        # Dedup: the blob holds each distinct chunk once (multichunk.dup, the zero chunks of
        # zeros and sparse, the shared prefix of multichunk.prefix add nothing).
        chunks, seen = {}, set()
        for base, _, files in os.walk(src):
            for f in files:
                p = os.path.join(base, f)
                st = os.lstat(p)
                if not os.path.isfile(p) or os.path.islink(p) or st.st_ino in seen:
                    continue
                seen.add(st.st_ino)
                with open(p, "rb") as fh:
                    while True:
                        c = fh.read(CHUNK)
                        if not c:
                            break
                        chunks[hashlib.sha256(c).digest()] = len(c)
        data = sum(chunks.values())
        aligned = sum((n + 4095) // 4096 * 4096 for n in chunks.values())
        blob = info["blobs"][0]
        ktest.log(f"{len(chunks)} distinct chunks, {data} bytes ({aligned} block-aligned); blob: "
                  f"{blob.get('chunk_count')} chunks, uncompressed {blob.get('uncompressed_size')}, "
                  f"compressed {blob.get('compressed_size')}")
        ktest.check(blob["chunk_count"] == len(chunks),
                    f"blob has {blob['chunk_count']} chunks, the source {len(chunks)} distinct ones: "
                    "duplicate chunks were not deduplicated" if blob["chunk_count"] > len(chunks) else
                    f"blob has {blob['chunk_count']} chunks, fewer than the {len(chunks)} distinct ones")
        ktest.check(data <= blob["uncompressed_size"] <= aligned + 4096,
                    f"blob uncompressed size {blob['uncompressed_size']} outside [{data}, {aligned + 4096}]")
        if compressor != "none":
            ktest.check(blob["compressed_size"] < blob["uncompressed_size"],
                        "compressed blob is not smaller than its uncompressed layout")

        # erofs-utils' own checker on the bootstrap with its (uncompressed) device files.
        ktest.run(["fsck.erofs"] + [f"--device={x}" for x in devs] + [boot])
        ktest.run([ktest.convert_bin(), "check", boot, "--blob-dir", os.path.join(out, "blobs")])
        for rel in ("files/multichunk", "files/sparse", "files/empty", "links/hl2"):
            p = ktest.run([ktest.convert_bin(), "cat", boot, "/" + rel, "--blob-dir",
                           os.path.join(out, "blobs")], quiet=True)
            ktest.check(hashlib.sha256(p.stdout).hexdigest() == _sha(os.path.join(src, rel)),
                        f"nydus-convert cat /{rel} differs from the source")

        mnt = os.path.join(d, "mnt")
        with ktest.mounted(boot, mnt, devs):
            diffs = treecmp.compare(src, mnt)
            # Hardlink identity within the mount, spelled out.
            inos = {os.lstat(os.path.join(mnt, p)).st_ino for p in ("links/hl1", "links/hl2", "files/hl3")}
            if len(inos) != 1:
                diffs.append(f"hardlinks have {len(inos)} distinct st_ino in the mount")
        if diffs:
            ktest.fail(f"{len(diffs)} difference(s) between source and mount:\n  " + "\n  ".join(diffs[:80]))
        ktest.log("mounted tree equals the source")
