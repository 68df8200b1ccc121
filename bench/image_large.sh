#!/usr/bin/env bash
# A large image (~21,500 files, ~660 MiB: Debian bookworm minbase with python3, build-essential,
# git, numpy, pandas, scipy, sympy, yaml, vim-tiny) and a second one sharing most of it (the same
# plus curl), built over the REST API and started on, against tar -x of the same tar (bench/image_large.py).
# The two root tars are made once with mmdebstrap (the Debian mirror is needed the first time)
# and kept in CACHE (default /var/cache/skiff). Usage (as root): bench/image_large.sh [ARGS...]
# Last line: image_large build_cold_a_s=… first_start_s=… tar_x_s=… warm_image_ms=… …
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${CACHE:-/var/cache/skiff}
PKGS=python3,build-essential,git,python3-numpy,python3-yaml,vim-tiny,python3-sympy,python3-pandas,python3-scipy
# Headers, the compiler's own libraries and the two largest Python packages left out of the tar.
EXCLUDE=(--exclude=./usr/include --exclude=./usr/lib/gcc
	--exclude=./usr/lib/python3/dist-packages/sympy --exclude=./usr/lib/python3/dist-packages/scipy)
make_tar() { # name, packages
	local out=$CACHE/bench-large-$1.tar dir
	[ -s "$out" ] && return 0
	dir=$(mktemp -d "$CACHE/bench-large-$1.XXXXXX")
	mmdebstrap --quiet --variant=minbase --include="$2" bookworm "$dir"
	tar -C "$dir" --numeric-owner --xattrs "${EXCLUDE[@]}" -cf "$out.tmp" .
	rm -rf "$dir"
	mv "$out.tmp" "$out"
}
mkdir -p "$CACHE"
make_tar a "$PKGS"
make_tar b "$PKGS,curl"
exec "$(dirname "$0")/python_bench.sh" image_large "$CACHE/bench-large-a.tar" \
	"$CACHE/bench-large-b.tar" "$@"
