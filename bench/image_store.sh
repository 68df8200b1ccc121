#!/usr/bin/env bash
# The image store against the usual ways of laying out a tree, side by side in one run, on one
# filesystem: ingest SRC into a fresh store, materialize its image cold, warm and cached
# (bench/image_store.c), then `cp -a SRC` and `tar -x` of a tar of SRC (made beforehand, not
# timed). With FS=btrfs everything happens on a fresh loop-mounted btrfs image (reflinks), else
# in a temporary directory under /var/tmp.
# Usage (as root): bench/image_store.sh   env SRC (default /usr), FS (ext4|btrfs, default: the
# filesystem of /var/tmp), BTRFS_GIB (default 24)
# Last lines: the image_store line, then `copy cp_a_s=… tar_x_s=…`.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${SRC:-/usr}
FS=${FS:-}
make -s -j2 build/bench/image_store >/dev/null
work=$(mktemp -d /var/tmp/skiff-image-bench.XXXXXX)
cleanup() {
	umount "$work/mnt" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
dir=$work
if [ "$FS" = btrfs ]; then
	mkdir "$work/mnt"
	truncate -s "${BTRFS_GIB:-24}G" "$work/img"
	mkfs.btrfs -q "$work/img" >/dev/null 2>&1
	mount -o loop "$work/img" "$work/mnt"
	dir=$work/mnt
fi
echo "image_store: $(date -u +%FT%TZ), skiff $(git rev-parse --short HEAD 2>/dev/null || echo ?), kernel $(uname -r), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), fs $(stat -f -c %T "$dir"), src $SRC"
tar -C "$SRC" -cf "$dir/src.tar" .
build/bench/image_store "$dir/store" "$SRC"
t0=$(date +%s.%N)
cp -a "$SRC" "$dir/cp"
t1=$(date +%s.%N)
mkdir "$dir/tar"
tar -C "$dir/tar" -xf "$dir/src.tar"
t2=$(date +%s.%N)
echo "copy cp_a_s=$(echo "$t1 - $t0" | bc) tar_x_s=$(echo "$t2 - $t1" | bc)"
