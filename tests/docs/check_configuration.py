#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""docs/configuration.md against the programs.

Checks, each way round (nothing undocumented, nothing documented that is not there):
  - every flag in each program's --help (the program's own options, each subcommand's and
    each sub-subcommand's, e.g. `cache ls`)
    against the flag tables of the program's section of the doc, per subcommand;
  - the daemon's config keys (the kKeys lists of daemon/config.cc, top level and
    "registry") against the doc's config key tables;
  - the snapshotter's TOML keys (snapshotter/config.cc) against the doc's TOML key column;
  - the example config (daemon/systemd/config.json): every key documented, every value the
    documented default.

Usage: check_configuration.py SOURCE_ROOT CACHEFILESD_NYDUS CONTAINERD_NYDUS_GRPC NYDUS_CONVERT
"""
import json
import re
import subprocess
import sys
from pathlib import Path

FLAG = re.compile(r"--[a-z0-9][a-z0-9-]*")
PROGRAMS = ("cachefilesd-nydus", "containerd-nydus-grpc", "nydus-convert")


def run_help(argv):
    p = subprocess.run(argv + ["--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=30, check=False)
    if p.returncode != 0:
        raise SystemExit(f"FAIL: {' '.join(argv)} --help exited {p.returncode}:\n{p.stdout}")
    return p.stdout


def help_sections(text):
    """CLI11 help: {'Options': [lines], 'Subcommands': [lines], ...}."""
    sections, cur = {}, None
    for line in text.splitlines():
        m = re.match(r"^([A-Z][A-Za-z ]*):\s*$", line)
        if m:
            cur = m.group(1)
            sections[cur] = []
        elif cur is not None:
            sections[cur].append(line)
    return sections


def help_flags(argv):
    """{flag: set of scopes}: scope '' = the program's own options, else the subcommand."""
    out = {}

    def options_of(text, scope):
        for line in help_sections(text).get("Options", []):
            # An option line starts with two spaces; its names end at the first blank.
            m = re.match(r"^  (-\S+)", line)
            if not m:
                continue
            for name in m.group(1).split(","):
                name = name.split(":")[0]
                if name.startswith("--") and name != "--help":
                    out.setdefault(name, set()).add(scope)

    def walk(text, path):
        # Subcommands of subcommands (`cache ls`) too: scope "cache ls".
        for line in help_sections(text).get("Subcommands", []):
            m = re.match(r"^  (\S+)", line)
            if m:
                sub = path + [m.group(1)]
                sub_help = run_help(argv + sub)
                options_of(sub_help, " ".join(sub))
                walk(sub_help, sub)

    top = run_help(argv)
    options_of(top, "")
    walk(top, [])
    return out


def split_row(line):
    cells = line.strip().strip("|").split("|")
    # "\|" inside a cell is a literal bar, not a column break.
    merged, buf = [], None
    for c in cells:
        if buf is not None:
            buf += "|" + c
        else:
            buf = c
        if buf.endswith("\\"):
            continue
        merged.append(buf.strip())
        buf = None
    return merged


def tables(lines):
    """Yield (header cells, [row cells]) for each markdown table in lines."""
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|[-| ]+\|$",
                                                                         lines[i + 1].strip()):
            header = [h.lower() for h in split_row(lines[i])]
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(split_row(lines[i]))
                i += 1
            yield header, rows
        else:
            i += 1


def doc_sections(doc):
    """{program: lines of its '## program ...' section}."""
    out, cur = {}, None
    for line in doc.splitlines():
        if line.startswith("## "):
            name = line[3:].split()[0]
            cur = name if name in PROGRAMS else None
            if cur:
                out[cur] = []
        elif cur:
            out[cur].append(line)
    return out


def doc_flags(lines):
    out = {}
    for header, rows in tables(lines):
        if not header or header[0] != "flag":
            continue
        of = header.index("of") if "of" in header else None
        for row in rows:
            m = FLAG.search(row[0])
            if not m:
                continue
            scopes = {""}
            if of is not None:
                subs = re.findall(r"`([a-z-]+(?: [a-z-]+)?)`", row[of])
                scopes = set(subs) if subs else {""}
            out.setdefault(m.group(0), set()).update(scopes)
    return out


def compare_flags(program, helped, documented, errors):
    for flag, scopes in sorted(helped.items()):
        for s in sorted(scopes - documented.get(flag, set())):
            where = f"of '{s}'" if s else "(the program's own option)"
            errors.append(f"{program}: {flag} {where} is in --help but not in docs/configuration.md")
    for flag, scopes in sorted(documented.items()):
        for s in sorted(scopes - helped.get(flag, set())):
            where = f"of '{s}'" if s else "(the program's own option)"
            errors.append(f"{program}: {flag} {where} is documented but not in --help")


def code_daemon_keys(root):
    src = (root / "daemon/config.cc").read_text()
    lists = [re.findall(r'"([a-z_]+)"', body)
             for body in re.findall(r"kKeys\[\]\s*=\s*\{(.*?)\};", src, re.S)]
    top = [l for l in lists if "frontend" in l]
    reg = [l for l in lists if "plain_http" in l]
    if len(top) != 1 or len(reg) != 1:
        raise SystemExit("FAIL: cannot find the two kKeys lists in daemon/config.cc")
    return set(top[0]), set(reg[0])


def doc_config_keys(lines):
    """The key tables after '### Config file': (top-level {key: default}, registry {...})."""
    start = next(i for i, l in enumerate(lines) if l.startswith("### Config file"))
    found = [rows for header, rows in tables(lines[start:]) if header[:2] == ["key", "default"]]
    if len(found) < 2:
        raise SystemExit("FAIL: docs/configuration.md: the two config key tables are missing")

    def keys(rows):
        out = {}
        for row in rows:
            m = re.match(r"^`([a-z_]+)`$", row[0])
            if m:
                out[m.group(1)] = row[1]
        return out

    return keys(found[0]), keys(found[1])


def parse_default(cell):
    """A documented default as a JSON value, or None when the cell is prose."""
    text = re.sub(r"\s*\(.*\)\s*$", "", cell).strip().strip("`")
    try:
        return json.loads(text)
    except ValueError:
        return None


def code_toml_keys(root):
    src = (root / "snapshotter/config.cc").read_text()
    dotted = set(re.findall(r'path == "([a-z_]+\.[a-z_]+)"', src))
    tables = {k.split(".", 1)[0] for k in dotted}  # [log], [daemon], [metrics]: not keys
    return (set(re.findall(r'key == "([a-z_]+)"', src)) - tables) | dotted


def doc_toml_keys(lines):
    out = set()
    for header, rows in tables(lines):
        if "toml key" not in header:
            continue
        col = header.index("toml key")
        for row in rows:
            cell = row[col].replace("`", "").strip()
            if not cell:
                continue
            m = re.match(r"^\[([a-z_]+)\]\s*([a-z_]+)$", cell)
            out.add(f"{m.group(1)}.{m.group(2)}" if m else cell)
    return out


def main():
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    root = Path(sys.argv[1])
    binaries = dict(zip(PROGRAMS, sys.argv[2:]))
    doc = (root / "docs/configuration.md").read_text()
    sections = doc_sections(doc)
    errors = []
    checked = 0

    for program in PROGRAMS:
        if program not in sections:
            errors.append(f"docs/configuration.md has no '## {program}' section")
            continue
        helped = help_flags([binaries[program]])
        documented = doc_flags(sections[program])
        if not helped:
            errors.append(f"{program}: no options found in --help (parser out of date?)")
        compare_flags(program, helped, documented, errors)
        checked += sum(len(s) for s in helped.values())

    daemon = sections.get("cachefilesd-nydus", [])
    top_code, reg_code = code_daemon_keys(root)
    top_doc, reg_doc = doc_config_keys(daemon)
    for what, code, documented in (("config key ", top_code, top_doc),
                                   ("config key registry.", reg_code, reg_doc)):
        for k in sorted(code - documented.keys()):
            errors.append(f"cachefilesd-nydus: {what}{k} is parsed by daemon/config.cc but not documented")
        for k in sorted(documented.keys() - code):
            errors.append(f"cachefilesd-nydus: {what}{k} is documented but daemon/config.cc rejects it")
        checked += len(code)

    example_path = root / "daemon/systemd/config.json"
    example = json.loads(example_path.read_text())
    for k, v in example.items():
        if k == "registry" and isinstance(v, dict):
            pairs = [(f"registry.{rk}", rv, reg_doc.get(rk)) for rk, rv in v.items()]
        else:
            pairs = [(k, v, top_doc.get(k))]
        for name, value, cell in pairs:
            if cell is None:
                errors.append(f"{example_path.name}: key {name} is not documented")
                continue
            default = parse_default(cell)
            if default is not None and default != value:
                errors.append(f"{example_path.name}: {name} is {json.dumps(value)}, "
                              f"the documented default {json.dumps(default)}")
            checked += 1

    snap = sections.get("containerd-nydus-grpc", [])
    toml_code, toml_doc = code_toml_keys(root), doc_toml_keys(snap)
    for k in sorted(toml_code - toml_doc):
        errors.append(f"containerd-nydus-grpc: TOML key {k} is read by snapshotter/config.cc but not documented")
    for k in sorted(toml_doc - toml_code):
        errors.append(f"containerd-nydus-grpc: TOML key {k} is documented but snapshotter/config.cc ignores it")
    checked += len(toml_code)

    for e in errors:
        print("FAIL:", e)
    if errors:
        return 1
    print(f"ok: {checked} flags and keys agree with docs/configuration.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
