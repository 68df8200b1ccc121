#!/usr/bin/env python3
"""What the per-workspace upload share costs an upload when the workspace already holds many blobs.

Each PUT /v1/blobs checks the workspace's share (SKIFF_WORKSPACE_BLOB_BYTES): the bytes of the blobs
it uploaded that the store still holds. For each build directory given (side by side, in one run),
this starts its own `skiffd dev` (a temporary --data directory, a free port on 127.0.0.1, its own
runtime instance), makes a workspace and a developer token, stops skiffd, puts --blobs small blobs
straight into the store with the workspace as their uploader (files and blob_owners rows, as
uploads would have left them: thousands of real uploads would take minutes), starts skiffd again
and times --uploads uploads of new 1 KiB blobs in that workspace, one connection each: the first
on its own (it may count the workspace's bytes), then p50/p90 of the rest. Anchor: GET /healthz
on a new connection, the same number of times.

Usage (as root): bench/blob_quota.py [--build build/bench] [--baseline OTHER_BUILD_DIR]
                 [--blobs 100000] [--uploads 200] [--instance bbq1]
The last line is one summary for scripts: `blob_quota key=value ...`.
"""

import argparse
import hashlib
import http.client
import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from api_cycle import (Api, cleanup, log, pct, preflight, run_start,  # noqa: E402
                       skiffd_args)
from image_api import put_body  # noqa: E402


def put(sk, token, data):
    return put_body(sk, token, hashlib.sha256(data).hexdigest(), data, len(data))


def healthz(sk):
    c = http.client.HTTPConnection("127.0.0.1", sk.port, timeout=60)
    t0 = time.perf_counter()
    c.request("GET", "/healthz")
    c.getresponse().read()
    dt = time.perf_counter() - t0
    c.close()
    return dt


def workspace_and_token(sk):
    api = Api(sk.port, sk.token)
    st, ws = api.call("POST", "/v1/workspaces", {"name": "bench-quota"})
    if st != 201:
        raise RuntimeError(f"workspace: HTTP {st}: {ws}")
    st, tok = api.call("POST", "/v1/tokens", {"name": "bench-quota-dev",
                                              "workspace": "bench-quota", "role": "developer"})
    if st != 201:
        raise RuntimeError(f"token: HTTP {st}: {tok}")
    api.close()
    return ws["id"], tok["secret"]


def fill(data_dir, ws_id, n):
    """n blobs of 64 random bytes in the store, uploaded by ws_id as far as skiffd can tell."""
    top = os.path.join(data_dir, "images", "blobs", "sha256")
    rows, now = [], int(time.time() * 1000)
    for _ in range(n):
        b = os.urandom(64)
        hexd = hashlib.sha256(b).hexdigest()
        os.makedirs(os.path.join(top, hexd[:2]), exist_ok=True)
        with open(os.path.join(top, hexd[:2], hexd[2:]), "wb") as f:
            f.write(b)
        rows.append((ws_id, hexd, now))
    db = sqlite3.connect(os.path.join(data_dir, "skiff.db"))
    db.executemany("INSERT INTO blob_owners (workspace_id, digest, created_ms) VALUES (?, ?, ?)",
                   rows)
    db.commit()
    db.close()


def measure(args, build):
    args.build = build
    tmp, sk = run_start("blob_quota", args)
    ok, res = False, {}
    try:
        sk.start()
        ws_id, token = workspace_and_token(sk)
        sk.stop()
        t0 = time.perf_counter()
        fill(sk.data, ws_id, args.blobs)
        log(f"{args.blobs} blobs put in the store in {time.perf_counter() - t0:.1f} s")
        sk.start()
        res["first"] = put(sk, token, os.urandom(1024))
        res["uploads"] = [put(sk, token, os.urandom(1024)) for _ in range(args.uploads - 1)]
        res["healthz"] = [healthz(sk) for _ in range(args.uploads)]
        ok = True
    finally:
        cleaned = cleanup(sk, [args.instance, args.box_instance], tmp, ok)
    if len(cleaned["instances_gone"]) != 2:
        sys.exit("blob_quota: /run/skiff/<instance> left behind")
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blobs", type=int, default=100000, help="blobs the workspace holds (100000)")
    ap.add_argument("--uploads", type=int, default=200, help="uploads timed (200)")
    skiffd_args(ap, 1, "bbq1", "bbq2", "where the run's files go (the default temp dir)")
    ap.add_argument("--baseline", help="another build directory, measured first in the same run")
    args = ap.parse_args()
    builds = ([args.baseline] if args.baseline else []) + [args.build]
    preflight("blob_quota", args)
    results = [(b, measure(args, b)) for b in builds]
    log(f"\nuploads of 1 KiB in a workspace holding {args.blobs} blobs (ms)\n"
        "| build | first upload | upload p50 | upload p90 | GET /healthz p50 |\n"
        "| --- | --- | --- | --- | --- |")
    summary = []
    for i, (b, r) in enumerate(results):
        log(f"| {b} | {r['first'] * 1000:.1f} | {pct(r['uploads'], 50) * 1000:.2f} | "
            f"{pct(r['uploads'], 90) * 1000:.2f} | {pct(r['healthz'], 50) * 1000:.2f} |")
        summary.append(f"upload_p50_ms_{i}={pct(r['uploads'], 50) * 1000:.3f}")
        summary.append(f"first_ms_{i}={r['first'] * 1000:.1f}")
    log(f"\nblob_quota blobs={args.blobs} " + " ".join(summary))


if __name__ == "__main__":
    main()
