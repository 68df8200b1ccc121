#!/usr/bin/env python3
"""Images over the REST API: blob uploads and builds, against their floors in the same run.

Starts its own `skiffd dev` (a temporary --data directory, a free port on 127.0.0.1, its own
runtime instance) and measures, each --repeat times (the median is reported):

  upload    PUT /v1/blobs/sha256:<hex> of a file of --mib MiB of random bytes, streamed on
            one connection (the server hashes and writes it as it comes): MiB/s. Each round
            uploads new bytes, so nothing is stored already.
  floor     the same file through `sha256sum` and through `cp` into the data directory's
            filesystem: what hashing and writing it cost at the least.
  build     POST /v1/images {"base":"busybox","steps":[{"copy": a tar of that file}]} until
            ready: cold (the tar's bytes are new), then the same spec again (every step
            cached): seconds from the POST to `ready`.

Usage (as root): bench/image_api.py [--mib 256] [--repeat 3] [--instance bia1]
                 [--build build/bench]
The last line is one summary for scripts: `image_api key=value ...`.
"""

import argparse
import hashlib
import http.client
import io
import os
import statistics
import subprocess
import sys
import tarfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from api_cycle import Api, cleanup, log, preflight, run_end, run_start, skiffd_args  # noqa: E402


def put_body(sk, token, digest, body, size):
    """PUT body (bytes or a file) as blob sha256:digest; the seconds it took."""
    c = http.client.HTTPConnection("127.0.0.1", sk.port, timeout=600)
    t0 = time.perf_counter()
    c.request("PUT", f"/v1/blobs/sha256:{digest}", body=body,
              headers={"Authorization": f"Bearer {token}", "Content-Length": str(size)})
    r = c.getresponse()
    answer = r.read()
    dt = time.perf_counter() - t0
    c.close()
    if r.status not in (200, 201):
        raise RuntimeError(f"upload: HTTP {r.status}: {answer[:300]}")
    return dt


def put_file(sk, path, digest):
    with open(path, "rb") as f:
        return put_body(sk, sk.token, digest, f, os.path.getsize(path))


def random_file(path, mib):
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(mib):
            b = os.urandom(1 << 20)
            h.update(b)
            f.write(b)
    return h.hexdigest()


def timed(cmd):
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def build_wait(api, spec):
    t0 = time.perf_counter()
    st, im = api.call("POST", "/v1/images", spec)
    if st != 202:
        raise RuntimeError(f"build: HTTP {st}: {im}")
    while True:
        st, got = api.call("GET", f"/v1/images/{im['id']}")
        if got["state"] != "building":
            break
        time.sleep(0.01)
    dt = time.perf_counter() - t0
    if got["state"] != "ready":
        raise RuntimeError(f"build failed: {got['error']}")
    return dt, got


def tar_of(src, tar_path):
    with tarfile.open(tar_path, "w") as t:
        t.add(src, arcname="payload.bin")
    h = hashlib.sha256()
    with open(tar_path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=256, help="the upload's size in MiB (256)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds (3)")
    skiffd_args(ap, 1, "bia1", "bia2", "where the run's files go (the default temp dir)")
    args = ap.parse_args()
    preflight("image_api", args)
    tmp, sk = run_start("image_api", args)
    res = {"upload": [], "sha256sum": [], "cp": [], "build_cold": [], "build_cached": []}
    ok = False
    try:
        sk.start()
        api = Api(sk.port, sk.token)
        log(f"{args.repeat} rounds of {args.mib} MiB")
        for i in range(args.repeat):
            src = os.path.join(tmp, f"upload-{i}.bin")
            digest = random_file(src, args.mib)
            res["sha256sum"].append(timed(["sha256sum", src]))
            res["cp"].append(timed(["cp", src, os.path.join(sk.data, "cp-floor.bin")]))
            os.unlink(os.path.join(sk.data, "cp-floor.bin"))
            res["upload"].append(put_file(sk, src, digest))
            tar = os.path.join(tmp, f"layer-{i}.tar")
            tdigest = tar_of(src, tar)
            os.unlink(src)
            put_file(sk, tar, tdigest)
            os.unlink(tar)
            spec = {"base": "busybox", "steps": [
                {"copy": {"blob": f"sha256:{tdigest}", "dest": "/data"}}]}
            cold, _ = build_wait(api, spec)
            cached, got = build_wait(api, spec)
            if not all(layer["cached"] for layer in got["layers"]):
                raise RuntimeError(f"the rebuild was not cached: {got['layers']}")
            res["build_cold"].append(cold)
            res["build_cached"].append(cached)
            log(f"round {i + 1}: upload {args.mib / res['upload'][-1]:.0f} MiB/s, "
                f"sha256sum {args.mib / res['sha256sum'][-1]:.0f} MiB/s, "
                f"cp {args.mib / res['cp'][-1]:.0f} MiB/s, build cold {cold:.2f} s, "
                f"cached {cached * 1000:.1f} ms")
        api.close()
        ok = True
    finally:
        cleaned = cleanup(sk, [args.instance, args.box_instance], tmp, ok)
    med = {k: statistics.median(v) for k, v in res.items()}
    log("\n| what | median |\n| --- | --- |")
    for k in ("upload", "sha256sum", "cp"):
        log(f"| {k} | {args.mib / med[k]:.0f} MiB/s |")
    log(f"| build, cold ({args.mib} MiB copy step) | {med['build_cold']:.2f} s |")
    log(f"| build, every step cached | {med['build_cached'] * 1000:.1f} ms |")
    run_end("image_api", cleaned, {
        "upload_mib_s": args.mib / med["upload"], "sha256sum_mib_s": args.mib / med["sha256sum"],
        "cp_mib_s": args.mib / med["cp"], "build_cold_s": med["build_cold"],
        "build_cached_ms": med["build_cached"] * 1000})


if __name__ == "__main__":
    main()
