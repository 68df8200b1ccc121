#!/usr/bin/env bash
# Run the archive fuzz target for a while (default 60 s) from a small seed corpus of tars and an
# OCI layout, made here; the store it writes into is removed afterwards.
# Usage: tests/fuzz/run.sh [seconds]    (after `make fuzz`)
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
work=$(mktemp -d /tmp/skiff-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/corpus" "$work/store"
/usr/bin/python3 - "$work/corpus" <<'PY'
import gzip, hashlib, io, json, sys, tarfile
out = sys.argv[1]
def tar(members, fmt=tarfile.PAX_FORMAT):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=fmt) as t:
        for name, kind, arg in members:
            ti = tarfile.TarInfo(name)
            ti.type = kind
            data = b""
            if kind == tarfile.REGTYPE:
                data = arg
                ti.size = len(data)
            elif kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                ti.linkname = arg
            if name.startswith("x"):
                ti.pax_headers = {"SCHILY.xattr.user.k": "v"}
            t.addfile(ti, io.BytesIO(data))
    return b.getvalue()
R, D, S, L = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
layer = tar([("etc", D, None), ("etc/a", R, b"a"), ("etc/.wh.b", R, b""), ("x", R, b"x"),
             ("l", S, "/etc"), ("h", L, "etc/a"), ("d/.wh..wh..opq", R, b"")])
# names as raw bytes: one not UTF-8 (latin-1), one UTF-8 with a newline
gnu = tar([("a/b", R, b"b" * 700), ("c", S, "../../x"), ("caf\udce9", R, b"e"),
           ("n\u00e9w\nline", R, b"n")], tarfile.GNU_FORMAT)
def blob(data, blobs):
    d = hashlib.sha256(data).hexdigest()
    blobs.append(("blobs/sha256/" + d, R, data))
    return d, len(data)
blobs = []
ld, ll = blob(gzip.compress(layer), blobs)
cd, cl = blob(json.dumps({"config": {"Env": ["A=1"], "Cmd": ["sh"]}}).encode(), blobs)
md, ml = blob(json.dumps({"schemaVersion": 2, "config": {"digest": "sha256:" + cd, "size": cl},
                          "layers": [{"digest": "sha256:" + ld, "size": ll}]}).encode(), blobs)
index = json.dumps({"manifests": [{"digest": "sha256:" + md, "size": ml}]}).encode()
oci = tar([("oci-layout", R, b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", R, index)] + blobs)
for name, mode, data in (("layer", 2, layer), ("layer-gz", 0, gzip.compress(layer)),
                         ("gnu", 2, gnu), ("oci", 1, oci)):
    open(f"{out}/{name}", "wb").write(bytes([mode]) + data)
PY
SKIFF_FUZZ_STORE="$work/store" build/fuzz/fuzz_archive -max_total_time="$secs" -max_len=65536 \
	-rss_limit_mb=2048 "$work/corpus"
