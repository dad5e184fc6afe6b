#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Build-time copy of containerd's snapshots API protos, then protoc + grpc_cpp_plugin.

Usage: gen.py PROTOC GRPC_PLUGIN OUTDIR SNAPSHOTS_PROTO MOUNT_PROTO GOGO_PROTO

The copies are flat (snapshots.proto, mount.proto, gogo.proto in OUTDIR/src) because meson
outputs cannot live in sub-directories. Two rewrites, neither changes the wire format:
  - `import weak` becomes `import`: protoc's C++ generator refuses weak imports with the
    open-source runtime (it aborts);
  - the import paths of mount.proto and gogoproto/gogo.proto become the flat names.
gogo.proto's options are annotations for Go code generation only; it is compiled once,
under one name, so its descriptors are defined once.
"""
import pathlib
import re
import subprocess
import sys


def main() -> int:
    protoc, plugin, outdir, snapshots, mount, gogo = sys.argv[1:7]
    out = pathlib.Path(outdir)
    src = out / "src"
    src.mkdir(parents=True, exist_ok=True)
    renames = {
        "gogoproto/gogo.proto": "gogo.proto",
        "github.com/containerd/containerd/api/types/mount.proto": "mount.proto",
    }
    for path, name in ((snapshots, "snapshots.proto"), (mount, "mount.proto"), (gogo, "gogo.proto")):
        text = pathlib.Path(path).read_text()
        text = re.sub(r'^(\s*)import\s+weak\s+', r'\1import ', text, flags=re.M)
        for old, new in renames.items():
            text = text.replace(f'"{old}"', f'"{new}"')
        dest = src / name
        if not dest.exists() or dest.read_text() != text:
            dest.write_text(text)
    cmd = [protoc, f"-I{src}", "-I/usr/include", f"--cpp_out={out}", f"--grpc_out={out}",
           f"--plugin=protoc-gen-grpc={plugin}", "snapshots.proto", "mount.proto", "gogo.proto"]
    return subprocess.call(cmd, cwd=src)


if __name__ == "__main__":
    sys.exit(main())
