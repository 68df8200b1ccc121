#!/usr/bin/env bash
# The REST API's sandbox cycle (create, exec `echo hi` with ?wait=true, delete) against a real
# `skiffd dev` on loopback: sequential latency, throughput with concurrent clients, memory with
# idle sandboxes, and anchors (skiff-box one-shot, host fork+exec) in the same run.
# Builds into BUILD (default build/bench), then runs bench/api_cycle.py with the arguments given
# (see `bench/api_cycle.py --help`: --cycles 300 --clients 8 --duration 10 --idle 1000 --pool 2).
# Usage (as root): bench/api_cycle.sh [ARGS...]
# Last line: api_cycle create_p50_ms=… exec_p50_ms=… cycle_p50_ms=… cycles_per_s=… …
exec "$(dirname "$0")/python_bench.sh" api_cycle "$@"
