#!/usr/bin/env bash
# Pooled starts (issue 4), side by side in one run:
#   latency: request -> command exited and reaped, interleaved: host fork+exec+wait of
#            /bin/true, a start from skiff's pool, a start made on the spot (RUNS runs)
#   rate:    sustained starts/s over STARTS starts with 2 parallel clients, pool refill
#            included, against 2 parallel loops of `bwrap --unshare-all /bin/true`
# Usage (as root): bench/pool_start.sh   env RUNS (default 200), STARTS (default 10000)
# Last line: pool_start host_p50_ms=… pooled_p50_ms=… pooled_vs_host=… skiff_rate=…
#            bwrap_rate=… rate_vs_bwrap=… runs=… starts=…
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-200}
STARTS=${STARTS:-10000}
command -v bwrap >/dev/null || scripts/install-deps
make -s -j"$(nproc)" bench all >/dev/null
BENCH=build/bench/pool_start
data=$(mktemp -d /tmp/skiff-pool-bench.XXXXXX)
cleanup() {
	for i in bpa bpb bpl; do SKIFF_DATA=$data build/bin/skiff-box gc --instance $i >/dev/null 2>&1 || true; done
	rm -rf "$data"
}
trap cleanup EXIT
export SKIFF_DATA=$data
build/bin/skiff-box --instance bpl -- true # the busybox root
root=$data/rootfs/busybox

echo "pool_start: $(date -u +%FT%TZ), skiff $(git rev-parse --short HEAD 2>/dev/null || echo ?), kernel $(uname -r), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
lat=$(SKIFF_INSTANCE=bpl $BENCH latency "$RUNS")
echo "$lat" | grep -v '^pool_latency'
summary=$(echo "$lat" | grep '^pool_latency')
host=$(echo "$summary" | sed -n 's/.*host_p50_ms=\([0-9.]*\).*/\1/p')
pooled=$(echo "$summary" | sed -n 's/.*pooled_p50_ms=\([0-9.]*\).*/\1/p')
ratio=$(echo "$summary" | sed -n 's/.*pooled_vs_host=\([0-9.]*\).*/\1/p')

half=$((STARTS / 2))
echo
echo "sustained rate: $STARTS starts, 2 parallel clients of $half"
t0=$(date +%s.%N)
SKIFF_INSTANCE=bpa $BENCH rate-skiff $half >/dev/null &
a=$!
SKIFF_INSTANCE=bpb $BENCH rate-skiff $half >/dev/null &
b=$!
wait $a
wait $b
t1=$(date +%s.%N)
$BENCH rate-bwrap $half "$root" >/dev/null &
a=$!
$BENCH rate-bwrap $half "$root" >/dev/null &
b=$!
wait $a
wait $b
t2=$(date +%s.%N)
skiff_rate=$(python3 -c "print(f'{$STARTS / ($t1 - $t0):.1f}')")
bwrap_rate=$(python3 -c "print(f'{$STARTS / ($t2 - $t1):.1f}')")
rate_ratio=$(python3 -c "print(f'{$skiff_rate / $bwrap_rate:.2f}')")
printf 'skiff pooled  %8s starts/s (%.1f s)\n' "$skiff_rate" "$(python3 -c "print($t1 - $t0)")"
printf 'bwrap         %8s starts/s (%.1f s)\n' "$bwrap_rate" "$(python3 -c "print($t2 - $t1)")"
echo "skiff / bwrap rate: $rate_ratio"
echo
echo "pool_start host_p50_ms=$host pooled_p50_ms=$pooled pooled_vs_host=$ratio skiff_rate=$skiff_rate bwrap_rate=$bwrap_rate rate_vs_bwrap=$rate_ratio runs=$RUNS starts=$STARTS"
