#!/usr/bin/env bash
# Reading a tar as a layer into the content store (bench/tar_layer.c: names confined, files
# hashed into blobs, the manifest built and checked) beside GNU tar extracting the same archive
# onto the same filesystem, side by side in one hyperfine run, for: a real tree (python's
# standard library), many small files, and two archives shaped against the importer (each
# member whited out by the next; deep paths), at two sizes each so that the growth shows.
# Usage: bench/tar_layer.sh   env RUNS (default 10), TREE (default /usr/lib/python3.11)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-10}
TREE=${TREE:-/usr/lib/python3.11}
make -s -j2 build/bench/tar_layer >/dev/null
work=$(mktemp -d /tmp/skiff-tar-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "tar_layer: $(date -u +%FT%TZ), skiff $(git rev-parse --short HEAD 2>/dev/null || echo ?), kernel $(uname -r), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
tar -C "$(dirname "$TREE")" -cf "$work/tree.tar" "$(basename "$TREE")"
/usr/bin/python3 - "$work" <<'PY'
import io, sys, tarfile
work = sys.argv[1]
def write(name, members):
    with tarfile.open(f"{work}/{name}.tar", "w", format=tarfile.PAX_FORMAT) as t:
        for path, data in members:
            ti = tarfile.TarInfo(path)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
for n in (20000, 40000):
    write(f"small{n}", ((f"d{i % 500}/f{i}", b"x" * 64) for i in range(n)))
    # every file is whited out by the member after it
    write(f"churn{n}", ((f"p{i // 2}/f" if i % 2 == 0 else f".wh.p{i // 2}", b"") for i in range(n)))
    deep = "/".join(["d"] * 200)
    write(f"deep{n}", ((f"{deep}/f{i}", b"") for i in range(n)))
PY
cmds=()
for a in tree small20000 small40000 churn20000 churn40000 deep20000 deep40000; do
	cmds+=(--command-name "skiff $a" "build/bench/tar_layer $work/store $work/$a.tar whiteouts")
	cmds+=(--command-name "tar-x $a" "tar -C $work/x -xf $work/$a.tar")
done
hyperfine -N --runs "$RUNS" --warmup 1 --prepare "sh -c 'rm -rf $work/store $work/x && mkdir $work/x'" \
	--export-markdown "$work/result.md" "${cmds[@]}" >/dev/null
cat "$work/result.md"
