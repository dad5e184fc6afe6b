#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Fail when a folder includes a project header it may not use (DESIGN.md layout).

Run by meson at configure time: `check-layers.py SOURCE_ROOT`.
"""
import pathlib
import re
import sys

# folder -> project folders it may include (itself always allowed)
ALLOWED = {
    "base": set(),
    "erofs": {"base"},
    "fscache": {"base"},
    "registry": {"base"},
    "estargz": {"base", "erofs"},
    "daemon": {"base", "erofs", "estargz", "fscache", "registry", "control"},
    "control": {"base"},
    "snapshotter": {"base", "erofs", "estargz", "registry", "control", "proto"},
    "convert": {"base", "erofs", "estargz", "registry"},
    "proto": set(),
}
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')


def main() -> int:
    root = pathlib.Path(sys.argv[1])
    folders = set(ALLOWED)
    bad = []
    for folder, allowed in ALLOWED.items():
        for path in sorted((root / folder).rglob("*")):
            if path.suffix not in (".h", ".cc", ".hpp", ".cpp"):
                continue
            for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                m = INCLUDE.match(line)
                if not m:
                    continue
                top = m.group(1).split("/", 1)[0]
                if top in folders and top != folder and top not in allowed:
                    bad.append(f"{path.relative_to(root)}:{lineno}: {folder}/ may not include {m.group(1)}")
    for b in bad:
        print(b, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
