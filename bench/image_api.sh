#!/usr/bin/env bash
# Images over the REST API: blob uploads (streamed, hashed as they come) against sha256sum and
# cp of the same file, and a build cold against the same build cached, in the same run.
# Builds into BUILD (default build/bench), then runs bench/image_api.py with the arguments given
# (see `bench/image_api.py --help`: --mib 256 --repeat 3).
# Usage (as root): bench/image_api.sh [ARGS...]
# Last line: image_api upload_mib_s=… sha256sum_mib_s=… cp_mib_s=… build_cold_s=… build_cached_ms=…
exec "$(dirname "$0")/python_bench.sh" image_api "$@"
