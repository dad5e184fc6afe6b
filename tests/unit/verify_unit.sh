#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# systemd-analyze verify of one of our units, with its ExecStart= pointed at the built binary
# (verify checks that the program exists) and, when the build made it, the program's manual
# page on MANPATH (verify runs `man` for every man: in Documentation= and fails on a missing
# page; without a built page that one check is turned off, and the script says so).
# Usage: verify_unit.sh UNIT BINARY [MANPAGE]
set -eu
unit=$1
binary=$(realpath "$2")
name=$(basename "$binary")
dir=$(mktemp -d /tmp/cfn-unit-XXXXXX)
trap 'rm -rf "$dir"' EXIT
out="$dir/$(basename "$unit")"
sed "s#/usr/local/bin/$name#$binary#" "$unit" >"$out"
grep -q "^ExecStart=$binary " "$out"
grep -q "^Documentation=.*man:$name(1)" "$out"
man=--man=yes
if [ $# -ge 3 ] && [ -f "$3" ]; then
  mkdir -p "$dir/man/man1"
  cp "$3" "$dir/man/man1/$name.1"
  export MANPATH="$dir/man"
else
  echo "verify_unit.sh: no built manual page for $name: Documentation=man: not checked" >&2
  man=--man=no
fi
exec systemd-analyze verify "$man" "$out"
