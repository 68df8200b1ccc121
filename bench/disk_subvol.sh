#!/usr/bin/env bash
# Per-sandbox cost of btrfs writable layers, simple quotas against full qgroups, side by side in
# one run: on a fresh 4 GiB btrfs image for each mode, RUNS times: create a subvolume with its
# qgroup limit, change the limit, destroy it with its qgroup; then 16 MiB in 256 files written
# and synced into a subvolume, a few times (bench/disk_subvol.c).
# Usage (as root): bench/disk_subvol.sh   env RUNS (default 1000)
# Last lines: one `disk_subvol mode=… create_p50_us=… limit_p50_us=… destroy_p50_us=…` per mode.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-1000}
command -v mkfs.btrfs >/dev/null || scripts/install-deps
make -s -j2 build/bench/disk_subvol >/dev/null
work=$(mktemp -d /tmp/skiff-disk-bench.XXXXXX)
cleanup() {
	umount "$work/mnt" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
mkdir "$work/mnt"
echo "disk_subvol: $(date -u +%FT%TZ), skiff $(git rev-parse --short HEAD 2>/dev/null || echo ?), kernel $(uname -r), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for mode in simple full; do
	truncate -s 4G "$work/img"
	mkfs.btrfs -q -m single -d single "$work/img" >/dev/null 2>&1
	mount -o loop,discard=async "$work/img" "$work/mnt"
	build/bench/disk_subvol "$mode" "$work/mnt" "$RUNS"
	umount "$work/mnt"
	rm -f "$work/img"
done
