#!/usr/bin/env bash
# Starts on images, side by side in one run (skiff-box, one sandbox at a time, `true`):
#   busybox: the default root;
#   warm:    an image whose tree is materialized already (what every start but the first gets);
#   cold:    the first start on an image: its tree materialized from the store's blobs (inodes
#            made by reflink on btrfs, copied elsewhere), then the start.
# The image: the busybox root plus the host's Python standard library (PY_STDLIB).
# Usage (as root): bench/image_start.sh   env RUNS (default 20)
# Last line: image_start files=… busybox_p50_ms=… warm_p50_ms=… cold_p50_ms=…
#            materialize_p50_ms=… runs=…
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-20}
make -s -j2 all >/dev/null
TOOL=build/tests/skiff-image-tool
BOX=build/bin/skiff-box
data=$(mktemp -d /tmp/skiff-image-bench.XXXXXX)
cleanup() {
	SKIFF_DATA=$data $BOX gc --instance bim >/dev/null 2>&1 || true
	rm -rf "$data"
}
trap cleanup EXIT
export SKIFF_DATA=$data
$BOX --instance bim -- true # the busybox root
src=$data/src
cp -a "$data/rootfs/busybox" "$src"
py=${PY_STDLIB:-/usr/lib/python3.11} # Debian's, about 1,500 files and 54 MB
mkdir -p "$src/usr/lib"
cp -a "$py" "$src/usr/lib/"
files=$(find "$src" | wc -l)
store=$data/images
digest=$($TOOL ingest "$store" "$src")

now_ms() { echo $(($(date +%s%N) / 1000)); }
p50() { sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)] / 1000}'; }
b=() w=() c=() m=()
for ((i = 0; i < RUNS; i++)); do
	t0=$(now_ms); $BOX --instance bim -- true; t1=$(now_ms)
	b+=($((t1 - t0)))
	rm -rf "$store/trees" "$store/inodes"
	t0=$(now_ms); tree=$($TOOL tree "$store" "$digest"); t1=$(now_ms)
	$BOX --instance bim --rootfs "$tree" -- true; t2=$(now_ms)
	m+=($((t1 - t0))) c+=($((t2 - t0)))
	t0=$(now_ms); $BOX --instance bim --rootfs "$tree" -- true; t1=$(now_ms)
	w+=($((t1 - t0)))
done
echo "image_start: $(date -u +%FT%TZ), skiff $(git rev-parse --short HEAD 2>/dev/null || echo ?), kernel $(uname -r), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), store on $(stat -f -c %T "$store")"
echo "image_start files=$files busybox_p50_ms=$(printf '%s\n' "${b[@]}" | p50) warm_p50_ms=$(printf '%s\n' "${w[@]}" | p50) cold_p50_ms=$(printf '%s\n' "${c[@]}" | p50) materialize_p50_ms=$(printf '%s\n' "${m[@]}" | p50) runs=$RUNS"
