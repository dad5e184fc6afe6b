#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# systemd-analyze verify of snapshotter/systemd/containerd-nydus-grpc.service, with its
# ExecStart= pointed at the built binary (verify checks that the program exists).
# Usage: verify_unit.sh UNIT BINARY
set -eu
unit=$1
binary=$(realpath "$2")
dir=$(mktemp -d /tmp/cfn-unit-XXXXXX)
trap 'rm -rf "$dir"' EXIT
sed "s#/usr/local/bin/containerd-nydus-grpc#$binary#" "$unit" >"$dir/containerd-nydus-grpc.service"
grep -q "^ExecStart=$binary " "$dir/containerd-nydus-grpc.service"
exec systemd-analyze verify "$dir/containerd-nydus-grpc.service"
