#!/usr/bin/env bash
# A sandbox's port through the server's proxy (a tunnel per request) against the same busybox
# httpd reached directly from inside the sandbox's network namespace, in the same run: latency,
# requests per second with concurrent clients, and a bulk download.
# Builds into BUILD (default build/bench), then runs bench/port_proxy.py with the arguments given
# (see `bench/port_proxy.py --help`: --requests 500 --clients 8 --duration 10 --bulk 5).
# Usage (as root): bench/port_proxy.sh [ARGS...]
# Last line: port_proxy direct_p50_ms=… proxy_p50_ms=… direct_rps=… proxy_rps=… …
exec "$(dirname "$0")/python_bench.sh" port_proxy "$@"
