#!/usr/bin/env bash
# Exec output streaming against a real `skiffd dev` on loopback: time to first byte of an exec's
# output (ndjson follow), the follow long-poll's wake-up after a write, and throughput of a
# flooding exec read with follow (raw and ndjson) and of a finished, kept output, with anchors
# (host `cat` into a pipe, `skiff-box` of the same writer into a pipe) in the same run.
# Builds into BUILD (default build/bench), then runs bench/exec_stream.py with the arguments given
# (see `bench/exec_stream.py --help`: --runs 200 --wake-runs 30 --size-mib 256 --tp-runs 2).
# Usage (as root): bench/exec_stream.sh [ARGS...]
# Last line: exec_stream ttfb_p50_ms=… wake_p50_ms=… raw_mb_s=… ndjson_mb_s=… …
exec "$(dirname "$0")/python_bench.sh" exec_stream "$@"
