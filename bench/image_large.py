#!/usr/bin/env python3
"""A large image end to end over the REST API, against extracting its tar, in the same run.

Two root filesystem tars that share most files (made by bench/image_large.sh with mmdebstrap:
Debian bookworm minbase, python3 and a large package set; the second adds one package) are
wrapped as `docker save` archives, uploaded (PUT /v1/blobs) and built as images
(`oci-archive:` bases) by a `skiffd dev` of its own (temporary --data, --pool 0 so that the
default image's starts are not served from a pool either). Measured:

  build      POST /v1/images until ready: cold (the import: every file hashed and stored),
             then the same spec again (cached).
  first      the first sandbox created on the image (the worker materializes its tree), against
             `tar -x` of the same root tar into a fresh directory on the same filesystem.
  warm       create + delete on the image, --repeat times, against the same on busybox.
  stored     bytes under <data>/images/blobs for both images, less the two uploaded archives
             (inputs, which gc drops once no build uses them), against the sum of their tars.

Usage (as root): bench/image_large.py TAR_A TAR_B [--repeat 20] [--build build/bench]
The last line is one summary for scripts: `image_large key=value ...`.
"""

import argparse
import hashlib
import http.client
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from api_cycle import Api, cleanup, log, preflight, run_end, run_start, skiffd_args  # noqa: E402
from image_api import build_wait, put_file  # noqa: E402


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def docker_save(root_tar, out):
    """A `docker save` archive of one layer, root_tar; returns its digest."""
    diff = sha256_file(root_tar)
    config = json.dumps({"config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]},
                         "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff}"]}}).encode()
    manifest = json.dumps([{"Config": "config.json", "RepoTags": [],
                            "Layers": ["layer/layer.tar"]}]).encode()
    with tarfile.open(out, "w") as t:
        for name, data in (("config.json", config), ("manifest.json", manifest)):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        t.add(root_tar, arcname="layer/layer.tar")
    return sha256_file(out)


def du_bytes(path):
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            total += os.lstat(os.path.join(d, f)).st_blocks * 512
    return total


def create_delete(api, image):
    t0 = time.perf_counter()
    st, doc = api.call("POST", "/v1/sandboxes", {"image": image})
    t1 = time.perf_counter()
    if st not in (200, 201) or doc.get("state") != "running":
        raise RuntimeError(f"create on {image}: HTTP {st}: {doc}")
    api.delete(doc["id"])
    return t1 - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("tar_a")
    ap.add_argument("tar_b")
    ap.add_argument("--repeat", type=int, default=20, help="warm starts per image (20)")
    skiffd_args(ap, 0, "bil1", "bil2", "where the run's files go (the default temp dir)")
    args = ap.parse_args()
    preflight("image_large", args)
    tmp, sk = run_start("image_large", args)
    res = {}
    ok = False
    try:
        sk.start()
        api = Api(sk.port, sk.token)
        images, uploads = {}, []
        for key, root in (("a", args.tar_a), ("b", args.tar_b)):
            n = sum(1 for _ in tarfile.open(root))
            log(f"{key}: {root}: {os.path.getsize(root) / 2**20:.0f} MiB, {n} entries")
            arch = os.path.join(tmp, f"{key}.docker.tar")
            digest = docker_save(root, arch)
            put_file(sk, arch, digest)
            uploads.append(digest)
            os.unlink(arch)
            spec = {"base": f"oci-archive:sha256:{digest}", "name": f"large-{key}"}
            cold, got = build_wait(api, spec)
            spec.pop("name")
            cached, again = build_wait(api, spec)
            images[key] = got["id"]
            res[f"build_cold_{key}_s"] = cold
            res[f"build_cached_{key}_ms"] = cached * 1000
            res[f"files_{key}"] = got["files"]
            log(f"{key}: build cold {cold:.2f} s ({got['files']} files, "
                f"{got['size'] / 2**20:.0f} MiB), cached {cached * 1000:.1f} ms")
        # The first start materializes; tar -x of the same tar on the same filesystem.
        res["first_start_s"] = create_delete(api, images["a"])
        dest = os.path.join(sk.data, "tar-x")
        os.mkdir(dest)
        t0 = time.perf_counter()
        subprocess.run(["tar", "-xf", args.tar_a, "-C", dest, "--numeric-owner"], check=True)
        res["tar_x_s"] = time.perf_counter() - t0
        shutil.rmtree(dest)
        res["first_start_b_s"] = create_delete(api, images["b"])
        log(f"first start on a: {res['first_start_s']:.2f} s (tar -x {res['tar_x_s']:.2f} s); "
            f"on b (sharing most files): {res['first_start_b_s']:.2f} s")
        warm = {"busybox": [], "a": []}
        for _ in range(args.repeat):
            warm["busybox"].append(create_delete(api, "busybox"))
            warm["a"].append(create_delete(api, images["a"]))
        res["warm_busybox_ms"] = statistics.median(warm["busybox"]) * 1000
        res["warm_image_ms"] = statistics.median(warm["a"]) * 1000
        log(f"warm create p50: busybox {res['warm_busybox_ms']:.1f} ms, "
            f"image {res['warm_image_ms']:.1f} ms")
        blobs = os.path.join(sk.data, "images", "blobs")
        inputs = sum(os.lstat(os.path.join(blobs, "sha256", d[:2], d[2:])).st_blocks * 512
                     for d in uploads)
        res["stored_mib"] = (du_bytes(blobs) - inputs) / 2**20
        res["tars_mib"] = (os.path.getsize(args.tar_a) + os.path.getsize(args.tar_b)) / 2**20
        log(f"stored: {res['stored_mib']:.0f} MiB of blobs for both, "
            f"their tars {res['tars_mib']:.0f} MiB")
        api.close()
        ok = True
    finally:
        cleaned = cleanup(sk, [args.instance, args.box_instance], tmp, ok)
    run_end("image_large", cleaned, res)


if __name__ == "__main__":
    main()
