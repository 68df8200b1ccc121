#!/usr/bin/env bash
# What the Python benchmarks' scripts share (api_cycle.sh, exec_stream.sh, port_proxy.sh): as root,
# build into BUILD (default build/bench), then run bench/NAME.py --build BUILD with the arguments
# given.
# Usage: bench/python_bench.sh NAME [ARGS...]
set -euo pipefail
name=$1
shift
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/bench}
[ "$(id -u)" -eq 0 ] || { echo "$name: run as root (sandboxes need it)" >&2; exit 1; }
make -s BUILD="$BUILD" -j"$(nproc)" all >/dev/null
exec python3 "bench/$name.py" --build "$BUILD" "$@"
