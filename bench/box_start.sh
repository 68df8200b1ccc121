#!/usr/bin/env bash
# Sandbox start speed: start -> exit -> reaped of /bin/true in a busybox root, side by side in ONE
# hyperfine run:
#   host   /bin/true by fork+exec (the floor)
#   skiff  skiff-box -- /bin/true (full isolation, default limits, teardown done before it exits)
#   bwrap  bwrap --unshare-all --ro-bind ROOT / --proc /proc --dev /dev /bin/true
#   crun   crun run of an OCI bundle with the same root (5 namespaces, v1 cgroups), inside the
#          `unshare -m` + tmpfs-over-cgroup2 wrapper crun 1.8 needs on this v1/v2 hybrid host
#   wrap   that wrapper alone, exec'ing /bin/true: what of crun's time is the wrapper's
# then K runs of skiff-box --report for the median of each start step (where the time goes).
#
# Usage (as root): bench/box_start.sh
#   env RUNS (default 100, at least 100 for a result to record), WARMUP (5), K (100 report runs),
#   SKIFF_BOX (default build/bin/skiff-box), SKIFF_DATA (default: a temporary data directory),
#   KEEP_JSON=FILE to keep hyperfine's JSON export.
# Prints a table for people, the ratios, the step breakdown, and last one summary line:
#   box_start skiff_p50_ms=... skiff_p99_ms=... ... runs=...
# Cleans up after itself: temporary files, crun state, the skiff instance 'bnch' (gc), no mounts,
# cgroups or processes left.
set -euo pipefail

RUNS=${RUNS:-100}
WARMUP=${WARMUP:-5}
K=${K:-100}
INST=bnch
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
BOX=${SKIFF_BOX:-$repo/build/bin/skiff-box}

die() {
	echo "box_start: $*" >&2
	exit 1
}

[ "$(id -u)" -eq 0 ] || die "run as root (sandboxes need it)"
for tool in hyperfine bwrap crun python3 unshare; do
	if ! command -v "$tool" >/dev/null; then
		"$repo/scripts/install-deps"
		break
	fi
done
for tool in hyperfine bwrap crun python3 unshare; do
	command -v "$tool" >/dev/null || die "$tool is missing"
done
if [ ! -x "$BOX" ]; then
	make -C "$repo" -j2 >/dev/null
fi
[ -x "$BOX" ] || die "no skiff-box at $BOX"

tmp=$(mktemp -d /tmp/skiff-box-start.XXXXXX)
# A private copy: the binary under test can't change (a rebuild) in the middle of the run.
mkdir -p "$tmp/bin"
cp "$BOX" "$tmp/bin/skiff-box"
BOX_SRC=$BOX
BOX=$tmp/bin/skiff-box
data=${SKIFF_DATA:-$tmp/data}
export SKIFF_DATA="$data"
export SKIFF_INSTANCE="$INST"
crun_state=$tmp/crun-state
hf_pid=
bundle=$tmp/bundle

cleanup() {
	local rc=$? leftover=0
	set +e
	if [ -n "${hf_pid:-}" ] && kill -0 "$hf_pid" 2>/dev/null; then
		kill -TERM "$hf_pid" 2>/dev/null
		wait "$hf_pid" 2>/dev/null
		sleep 0.5 # the command it was timing finishes (a sandbox exits with skiff-box)
	fi
	# crun: a run that failed may have left its container; --root is ours alone.
	if [ -d "$crun_state" ]; then
		for c in $(crun --root "$crun_state" list -q 2>/dev/null); do
			crun --root "$crun_state" delete -f "$c" >/dev/null 2>&1
		done
	fi
	[ -x "$BOX" ] && "$BOX" gc --instance "$INST" >/dev/null 2>&1
	# crun removes its 9 v1 cgroups (/sys/fs/cgroup/*/skbenchPID) when a container exits; remove
	# any a failed run left (empty cgroups: rmdir only).
	for d in /sys/fs/cgroup/*/skbench*; do
		[ -d "$d" ] && rmdir "$d" 2>/dev/null
	done
	for d in /sys/fs/cgroup/*/skiff-"$INST" /sys/fs/cgroup/*/skbench*; do
		if [ -d "$d" ]; then
			echo "box_start: cgroup left behind: $d" >&2
			leftover=1
		fi
	done
	# Processes: anything still running whose command line names our temp dir is ours.
	local pids
	pids=$(pgrep -f -- "$tmp" | grep -vx "$$" || true)
	if [ -n "$pids" ]; then
		echo "box_start: processes left behind: $pids (killing them)" >&2
		for p in $pids; do kill -KILL "$p" 2>/dev/null; done
		leftover=1
	fi
	# Never rm -rf across a mount: unmount anything under $tmp first (there should be none).
	local mnts
	mnts=$(findmnt -rn -o TARGET | grep -F -- "$tmp" | sort -r || true)
	if [ -n "$mnts" ]; then
		echo "box_start: mounts left behind: $mnts" >&2
		for m in $mnts; do umount -l "$m" 2>/dev/null; done
		leftover=1
	fi
	if ! findmnt -rn -o TARGET | grep -qF -- "$tmp"; then
		rm -rf -- "$tmp"
	else
		echo "box_start: $tmp still has mounts; not removed" >&2
	fi
	[ $rc -eq 0 ] && [ $leftover -ne 0 ] && rc=1
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "box_start: $(date -u +%FT%TZ), skiff $(git -C "$repo" describe --always --dirty 2>/dev/null || echo "?"), kernel $(uname -r), $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "box_start: skiff-box $BOX_SRC ($(file -b "$BOX" 2>/dev/null | cut -d, -f1,4 | sed 's/ *$//'); sha256 $(sha256sum "$BOX" | cut -c1-12)), data $data, instance $INST"

# 1. The busybox root skiff-box builds on first use; bwrap and crun get a copy of it.
"$BOX" -- /bin/true || die "skiff-box -- /bin/true failed"
root=$data/rootfs/busybox
[ -x "$root/bin/busybox" ] || die "no busybox root at $root"
mkdir -p "$bundle"
cp -a "$root" "$bundle/rootfs"
root_copy=$bundle/rootfs

# 2. The crun bundle: crun's default spec (pid, network, ipc, uts, mount namespaces; no user
#    namespace; read-only root; masked and read-only paths; default caps), running /bin/true.
(cd "$bundle" && crun spec)
python3 - "$bundle/config.json" <<'EOF'
import json, sys
path = sys.argv[1]
c = json.load(open(path))
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
c["root"]["readonly"] = True
ns = [n for n in c["linux"]["namespaces"] if n["type"] != "user"]
for want in ("pid", "mount", "ipc", "uts", "network"):
    if not any(n["type"] == want for n in ns):
        ns.append({"type": want})
c["linux"]["namespaces"] = ns
json.dump(c, open(path, "w"), indent=1)
EOF
mkdir -p "$crun_state"
# sh's $$ makes the container id unique per run; crun run deletes the container when it exits.
hide_v2='mount -t tmpfs -o size=64m tmpfs /sys/fs/cgroup/unified'
crun_cmd="unshare -m sh -c '$hide_v2 && exec crun --root $crun_state run --bundle $bundle skbench\$\$'"
wrap_cmd="unshare -m sh -c '$hide_v2 && exec /bin/true'"
skiff_cmd="$BOX -- /bin/true"
bwrap_cmd="bwrap --unshare-all --ro-bind $root_copy / --proc /proc --dev /dev /bin/true"

# Each must work once before it is timed.
sh -c "$crun_cmd" || die "crun run failed: $crun_cmd"
sh -c "$bwrap_cmd" || die "bwrap failed: $bwrap_cmd"

# 3. One hyperfine run, side by side.
json=$tmp/hyperfine.json
echo "box_start: hyperfine -N --warmup $WARMUP --runs $RUNS, 5 commands (under a minute on 2 cores)"
# In the background, so that an INT or TERM reaches our trap now, not when hyperfine is done.
hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --style none --export-json "$json" \
	-n host /bin/true \
	-n skiff "$skiff_cmd" \
	-n bwrap "$bwrap_cmd" \
	-n crun "$crun_cmd" \
	-n wrap "$wrap_cmd" >/dev/null &
hf_pid=$!
wait "$hf_pid" || die "hyperfine failed"
hf_pid=
[ -n "${KEEP_JSON:-}" ] && cp "$json" "$KEEP_JSON"

# 4. Where skiff-box's start goes: K runs with --report.
mkdir -p "$tmp/reports"
for i in $(seq 1 "$K"); do
	"$BOX" --report "$tmp/reports/$i.json" -- /bin/true
done

echo "box_start: load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$json" "$tmp/reports" "$RUNS" <<'EOF'
import json, os, statistics, sys

hf, reports_dir, runs = sys.argv[1], sys.argv[2], sys.argv[3]

def pct(xs, p):
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)

res = {r["command"]: r for r in json.load(open(hf))["results"]}
stats = {}
print()
print(f"{'method':<8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'min ms':>8} {'runs':>5}")
for name in ("host", "skiff", "bwrap", "crun", "wrap"):
    t = [x * 1000 for x in res[name]["times"]]
    s = {"p50": pct(t, 50), "p90": pct(t, 90), "p99": pct(t, 99),
         "mean": statistics.fmean(t), "min": min(t), "n": len(t)}
    stats[name] = s
    print(f"{name:<8} {s['p50']:8.2f} {s['p90']:8.2f} {s['p99']:8.2f} {s['mean']:8.2f} {s['min']:8.2f} {s['n']:5d}")
print("(wrap = crun's `unshare -m sh -c 'mount tmpfs over cgroup2 && exec'` wrapper alone)")

sk, bw, cr, wr = stats["skiff"], stats["bwrap"], stats["crun"], stats["wrap"]
print()
print(f"skiff/bwrap: p50 {sk['p50'] / bw['p50']:.2f}  p99 {sk['p99'] / bw['p99']:.2f}  mean {sk['mean'] / bw['mean']:.2f}")
print(f"skiff/crun:  p50 {sk['p50'] / cr['p50']:.2f}  p99 {sk['p99'] / cr['p99']:.2f}  mean {sk['mean'] / cr['mean']:.2f}")
crun_only = cr["p50"] - wr["p50"] + stats["host"]["p50"]
print(f"skiff/crun without its wrapper (crun p50 - wrap p50 + host p50 = {crun_only:.2f} ms): "
      f"{sk['p50'] / crun_only:.2f}")

# The step breakdown: median of each step over the report runs, in start order.
reports = []
for f in sorted(os.listdir(reports_dir)):
    reports.append(json.load(open(os.path.join(reports_dir, f))))
order, per = [], {}
for r in reports:
    for st in r["start_steps"]:
        if st["step"] not in per:
            order.append(st["step"])
            per[st["step"]] = []
        per[st["step"]].append(st["us"])
teardown = [r["teardown_us"] for r in reports]
walls = [r["wall_s"] * 1e6 for r in reports]
totals = [sum(st["us"] for st in r["start_steps"]) for r in reports]
print()
print(f"skiff-box start steps, median over {len(reports)} runs with --report (µs; steps are the "
      f"time since the previous mark, runtime and init marks merged in time order):")
print(f"{'step':<22} {'p50 µs':>8} {'p90 µs':>8}  share")
tot = statistics.median(totals)
for name in order:
    v = per[name]
    m = statistics.median(v)
    miss = "" if len(v) == len(reports) else f"  (in {len(v)} runs)"
    print(f"{name:<22} {m:8.0f} {pct(v, 90):8.0f}  {100 * m / tot:4.1f}%{miss}")
print(f"{'sum of steps':<22} {tot:8.0f} {pct(totals, 90):8.0f}")
print(f"{'teardown':<22} {statistics.median(teardown):8.0f} {pct(teardown, 90):8.0f}")
print(f"{'wall_s (start..reaped)':<22} {statistics.median(walls):8.0f} {pct(walls, 90):8.0f}")
outside = sk["p50"] * 1000 - tot - statistics.median(teardown)
print(f"outside the steps (skiff-box's own exec and exit, options, image check, rt_init): "
      f"~{outside:.0f} µs (hyperfine p50 - steps p50 - teardown p50: rough, different runs)")
top = sorted(order, key=lambda n: -statistics.median(per[n]))[:5]
print("biggest steps: " + ", ".join(f"{n} {statistics.median(per[n]):.0f} µs" for n in top))

print()
print("box_start "
      f"skiff_p50_ms={sk['p50']:.2f} skiff_p99_ms={sk['p99']:.2f} "
      f"bwrap_p50_ms={bw['p50']:.2f} bwrap_p99_ms={bw['p99']:.2f} "
      f"crun_p50_ms={cr['p50']:.2f} crun_p99_ms={cr['p99']:.2f} "
      f"host_p50_ms={stats['host']['p50']:.2f} "
      f"skiff_vs_bwrap={sk['p50'] / bw['p50']:.2f} skiff_vs_crun={sk['p50'] / cr['p50']:.2f} "
      f"crun_wrap_p50_ms={wr['p50']:.2f} runs={runs}")
EOF
