#!/usr/bin/env bash
# What network egress costs a sandbox's start and teardown, against a real `skiffd dev`:
# egress (with and without an allowlist) beside network none made on the spot and none from
# the pool, interleaved in one run. Builds into BUILD (default build/bench), then runs
# bench/egress_start.py with the arguments given (--cycles 100 --allow CIDR).
# Usage (as root): bench/egress_start.sh [ARGS...]
# Last line: egress_start cycles=… egress_create_p50_ms=… none_create_p50_ms=… …
exec "$(dirname "$0")/python_bench.sh" egress_start "$@"
