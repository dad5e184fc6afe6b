# SPDX-License-Identifier: Apache-2.0
# Sourced by the VM tests: make_image SRC OUT builds a small tree in SRC (sizes around block
# and chunk edges, random bytes so nothing dedups by accident, small files, symlinks, an
# empty directory) and an uncompressed RAFS v6 image of it in OUT with nydus-convert.
make_image() {
  local src=$1 out=$2 size i
  mkdir -p "$src/dir/sub" "$src/empty-dir"
  for size in 0 1 4095 4096 4097 65537 1048575 1048576 3145731; do
    head -c "$size" /dev/urandom >"$src/file-$size"
  done
  for i in $(seq 1 40); do echo "small file $i" >"$src/dir/sub/small-$i.txt"; done
  echo "hello from a lazily served EROFS image" >"$src/dir/hello.txt"
  ln -s dir/hello.txt "$src/link-to-hello"
  ln -s /nonexistent/target "$src/dangling"
  "$CFN_BUILD/nydus-convert" --log-level warn build --compressor none "$src" "$out"
}
