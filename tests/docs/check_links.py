#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""README.md and docs/*.md hold together.

  - README.md stays under 150 lines and links every docs/*.md;
  - every relative link in README.md and docs/*.md names a file that exists and, with
    '#anchor', a heading of that file (GitHub's anchor rule: lower case, punctuation
    dropped, spaces to hyphens);
  - every docs/*.md starts with a '# ' title.

Usage: check_links.py SOURCE_ROOT
"""
import re
import sys
from pathlib import Path

MAX_README_LINES = 150
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def strip_code(text):
    """The text without fenced blocks and inline code spans (links there are not links)."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            out.append("")
            continue
        out.append("" if fenced else re.sub(r"`[^`]*`", "", line))
    return "\n".join(out)


def anchor(heading):
    h = heading.strip().lower()
    h = re.sub(r"[^\w\- ]", "", h)
    return h.replace(" ", "-")


def anchors(path):
    seen, out = {}, set()
    fenced = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if fenced or not re.match(r"^#{1,6} ", line):
            continue
        a = anchor(line.lstrip("#"))
        n = seen.get(a, 0)
        seen[a] = n + 1
        out.add(a if n == 0 else f"{a}-{n}")
    return out


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    root = Path(sys.argv[1]).resolve()
    readme = root / "README.md"
    docs = sorted((root / "docs").glob("*.md"))
    errors = []

    lines = readme.read_text().count("\n")
    if lines >= MAX_README_LINES:
        errors.append(f"README.md has {lines} lines (at most {MAX_README_LINES - 1}): "
                      "move the detail into docs/")
    if not docs:
        errors.append("docs/ has no .md file")

    linked = set()
    links = 0
    for page in [readme] + docs:
        text = page.read_text()
        if page != readme and not text.startswith("# "):
            errors.append(f"{page.relative_to(root)}: does not start with a '# ' title")
        for m in LINK.finditer(strip_code(text)):
            target = m.group(1)
            if re.match(r"^[a-z]+:", target):
                continue  # http:, https:, mailto:
            links += 1
            name, _, frag = target.partition("#")
            dest = (page.parent / name).resolve() if name else page
            where = f"{page.relative_to(root)}: link {target}"
            if not dest.exists():
                errors.append(f"{where}: no such file")
                continue
            linked.add(dest)
            if frag and dest.suffix == ".md" and frag not in anchors(dest):
                errors.append(f"{where}: no heading '{frag}' in {dest.relative_to(root)}")

    readme_links = {(readme.parent / m.group(1).partition("#")[0]).resolve()
                    for m in LINK.finditer(strip_code(readme.read_text()))}
    for d in docs:
        if d.resolve() not in readme_links:
            errors.append(f"README.md does not link {d.relative_to(root)} "
                          "(add a row to its Documentation table)")

    for e in errors:
        print("FAIL:", e)
    if errors:
        return 1
    print(f"ok: README.md {lines} lines, {len(docs)} docs, {links} links resolve")
    return 0


if __name__ == "__main__":
    sys.exit(main())
