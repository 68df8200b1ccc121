#!/usr/bin/env python3
"""Starting on an image in split mode: `skiffd server` and `skiffd worker` with data directories of
their own, on loopback. One image (busybox plus the host's Python standard library), and side by
side in one run, interleaved, the time of POST /v1/sandboxes on it when the worker has:

  warm:   the image's tree (every start but the first);
  local:  the blobs but no tree (the tree made from its own store, as after pruning);
  remote: nothing (manifest and every file fetched from the server, then the tree made).

Each create is followed by a DELETE; between runs the worker's trees (and for `remote` its blobs)
are removed while no sandbox holds them. Everything it made is removed at the end.

Usage (as root): bench/split_fetch.py [--runs 5] [--stdlib /usr/lib/python3.11] [--bin build/bin]
The last line is one summary: `split_fetch key=value ...`.
"""

import argparse
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from api_cycle import Api, free_port, log, pct  # noqa: E402


def empty_dir(path):
    for name in os.listdir(path) if os.path.isdir(path) else []:
        p = os.path.join(path, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)


def wait_healthy(port, proc):
    for _ in range(600):
        if proc.poll() is not None:
            sys.exit("split_fetch: skiffd exited at start")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit("split_fetch: skiffd did not answer")


def image(api, port, token, stdlib):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        t.add(stdlib, arcname=os.path.basename(stdlib))
    data = buf.getvalue()
    name = "sha256:" + hashlib.sha256(data).hexdigest()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/blobs/{name}", data=data,
                                 method="PUT", headers={"Authorization": f"Bearer {token}"})
    urllib.request.urlopen(req, timeout=300).read()
    st, img = api.call("POST", "/v1/images", {"base": "busybox", "steps": [
        {"copy": {"blob": name, "dest": "/usr/lib"}}]})
    while st == 202 or img.get("state") == "building":
        time.sleep(0.1)
        st, img = api.call("GET", f"/v1/images/{img['id']}")
    if img.get("state") != "ready":
        sys.exit(f"split_fetch: build: {img}")
    return img, len(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--stdlib", default="/usr/lib/python3.11")
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "build", "bin"))
    ap.add_argument("--instance", default="bsf1")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("split_fetch: run as root (sandboxes need it)")
    tmp = tempfile.mkdtemp(prefix="skiff-split-fetch.")
    port = free_port()
    skiffd = os.path.join(args.bin, "skiffd")
    procs = []
    try:
        procs.append(subprocess.Popen([skiffd, "server", "--data", f"{tmp}/srv", "--listen",
                                       f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL))
        wait_healthy(port, procs[0])
        token = open(f"{tmp}/srv/admin.token").read().strip()
        procs.append(subprocess.Popen(
            [skiffd, "worker", "--server", f"http://127.0.0.1:{port}", "--token-file",
             f"{tmp}/srv/worker.token", "--data", f"{tmp}/wk", "--instance", args.instance,
             "--pool", "0", "--image-min-free", "0%"], stderr=subprocess.DEVNULL))
        api = Api(port, token)
        for _ in range(600):
            st, w = api.call("GET", "/v1/workers")
            if st == 200 and any(x["connected"] for x in w["items"]):
                break
            time.sleep(0.05)
        img, tar_bytes = image(api, port, token, args.stdlib)
        store = f"{tmp}/wk/images"
        times = {"warm": [], "local": [], "remote": []}
        for i in range(args.runs + 1):
            for kind in ("remote", "local", "warm"):
                if kind != "warm":
                    empty_dir(f"{store}/trees")
                    empty_dir(f"{store}/inodes")
                if kind == "remote":
                    for d in os.listdir(f"{store}/blobs/sha256"):
                        empty_dir(f"{store}/blobs/sha256/{d}")
                t0 = time.monotonic_ns()
                st, sb = api.call("POST", "/v1/sandboxes", {"image": img["id"]})
                t1 = time.monotonic_ns()
                if st != 201:
                    sys.exit(f"split_fetch: create ({kind}): {st} {sb}")
                api.call("DELETE", f"/v1/sandboxes/{sb['id']}")
                if i > 0:  # the first round warms caches and the pool of connections
                    times[kind].append((t1 - t0) / 1e6)
        p = {k: pct(v, 50) for k, v in times.items()}
        mib_s = img["size"] / (1 << 20) / ((p["remote"] - p["local"]) / 1000)
        log(f"image: {img['files']} files, {img['size']} bytes ({tar_bytes} as a tar); "
            f"runs {args.runs}")
        for k, v in times.items():
            log(f"  {k:7s} create p50 {p[k]:8.1f} ms  (" + " ".join(f"{x:.0f}" for x in v) + ")")
        log(f"  fetching costs {p['remote'] - p['local']:.0f} ms more: about {mib_s:.0f} MiB/s")
        log(f"split_fetch files={img['files']} bytes={img['size']} warm_p50_ms={p['warm']:.1f} "
            f"local_p50_ms={p['local']:.1f} remote_p50_ms={p['remote']:.1f} "
            f"fetch_mib_s={mib_s:.0f} runs={args.runs}")
    finally:
        for pr in reversed(procs):
            if pr.poll() is None:
                pr.send_signal(signal.SIGTERM)
                pr.wait(60)
        subprocess.run([os.path.join(args.bin, "skiff-box"), "gc", "--instance", args.instance],
                       env={**os.environ, "SKIFF_DATA": f"{tmp}/wk"}, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
