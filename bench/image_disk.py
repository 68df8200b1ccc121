#!/usr/bin/env python3
"""Where an image's bytes live on a data directory that is not btrfs: the store on the data
directory's filesystem (as a store made by an earlier version is kept) against the store on the
btrfs disk of the writable layers (what a new data directory gets), in the same run, with the
same binaries.

Each layout gets a `skiffd dev` of its own (a temporary --data directory; for the first, an
empty <data>/images directory made before the start, which keeps the store there). Both build
the same two images on busybox: A with --files random files of --file-mib MiB (mode 0644), B
with the same files, mode 0755 (other inodes of the store, the same bytes). Measured:

  stored    the bytes the store's blobs and inodes take on their filesystem, each physical
            extent counted once (FIEMAP: hard links and reflinks share extents; the uploaded
            tars, inputs, are left out), against the files' size
  first     POST /v1/sandboxes on A, then on B: the worker materializes the tree (copy or
            reflink of each file) before the sandbox starts
  warm      POST /v1/sandboxes on A again (its tree is there): what a create costs without it

Each is done --repeat times, with new bytes each round (the same in both layouts): medians, and
the stored bytes per round.

Usage (as root): bench/image_disk.py [--files 16] [--file-mib 4] [--repeat 3]
                 [--build build/bench]
The last line is one summary for scripts: `image_disk key=value ...`.
"""

import argparse
import fcntl
import hashlib
import io
import os
import random
import statistics
import struct
import sys
import tarfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from api_cycle import Api, cleanup, log, preflight, run_start, skiffd_args  # noqa: E402
from image_api import build_wait, put_body  # noqa: E402

FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENTS = 512
MIB = 1 << 20


def extents(path):
    """The (physical, length) extents of a file (FIEMAP, synced first)."""
    out, start = [], 0
    while True:
        hdr = struct.pack("QQIIII", start, 2**64 - 1 - start, FIEMAP_FLAG_SYNC, 0,
                          FIEMAP_EXTENTS, 0)
        buf = bytearray(hdr + b"\0" * (56 * FIEMAP_EXTENTS))
        with open(path, "rb") as f:
            fcntl.ioctl(f.fileno(), FS_IOC_FIEMAP, buf)
        n = struct.unpack_from("I", buf, 20)[0]
        last = False
        for i in range(n):
            logical, physical, length = struct.unpack_from("QQQ", buf, 32 + 56 * i)
            flags = struct.unpack_from("I", buf, 32 + 56 * i + 40)[0]
            out.append((physical, length))
            start = logical + length
            last = flags & 1  # FIEMAP_EXTENT_LAST
        if n < FIEMAP_EXTENTS or last:
            return out


def stored_bytes(store, skip):
    """Bytes of the distinct physical extents of blobs/ and inodes/ (blob names in skip left
    out)."""
    seen = set()
    for top in ("blobs", "inodes"):
        for dirpath, _, names in os.walk(os.path.join(store, top)):
            for n in names:
                if os.path.basename(dirpath) + n in skip:
                    continue
                seen.update(extents(os.path.join(dirpath, n)))
    return sum(length for _, length in seen)


def tar_of(files, mode):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 1700000000
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def image(sk, api, files, mode):
    tar = tar_of(files, mode)
    digest = hashlib.sha256(tar).hexdigest()
    put_body(sk, sk.token, digest, tar, len(tar))
    _, got = build_wait(api, {"base": "busybox", "steps": [
        {"copy": {"blob": f"sha256:{digest}", "dest": "/data"}}]})
    return got, digest


def create(api, image_id):
    t0 = time.perf_counter()
    st, sb = api.call("POST", "/v1/sandboxes", {"image": image_id})
    dt = time.perf_counter() - t0
    if st != 201:
        raise RuntimeError(f"create: HTTP {st}: {sb}")
    api.delete(sb["id"])
    return dt


def round_files(args, i):
    """Round i's files: the same bytes for both layouts, new bytes each round."""
    rnd = random.Random(i)
    return {f"f{j:03d}.bin": rnd.randbytes(args.file_mib * MIB) for j in range(args.files)}


def one_layout(args, layout):
    args.instance, args.box_instance = (("bid1", "bid2") if layout == "data"
                                        else ("bid3", "bid4"))
    tmp, sk = run_start(f"image_disk_{layout}", args)
    res, ok = {"first_a": [], "first_b": [], "warm": []}, False
    try:
        if layout == "data":
            os.makedirs(os.path.join(sk.data, "images"))
        sk.start()
        api = Api(sk.port, sk.token)
        store = os.path.realpath(os.path.join(sk.data, "images"))
        res["fs"] = "btrfs disk" if store.startswith(os.path.join(sk.data, "disk")) \
            else "data directory"
        tars = set()
        for i in range(args.repeat):
            files = round_files(args, i)
            a, ta = image(sk, api, files, 0o644)
            b, tb = image(sk, api, files, 0o755)
            tars |= {ta, tb}
            res["first_a"].append(create(api, a["id"]))
            res["first_b"].append(create(api, b["id"]))
            res["warm"].append(create(api, a["id"]))
        res["stored"] = stored_bytes(store, tars) / args.repeat
        api.close()
        ok = True
    finally:
        cleaned = cleanup(sk, [args.instance, args.box_instance], tmp, ok)
    log(f"cleanup ({layout}): {cleaned['leftover_deleted']} sandboxes left to delete, "
        f"/run/skiff/<instance> gone for {', '.join(cleaned['instances_gone']) or 'none'}")
    if len(cleaned["instances_gone"]) != 2:
        sys.exit("image_disk: /run/skiff/<instance> left behind")
    for k in ("first_a", "first_b", "warm"):
        res[k] = statistics.median(res[k])
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=16, help="files in the image (16)")
    ap.add_argument("--file-mib", type=int, default=4, help="each file's size in MiB (4)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds, new bytes each (3)")
    skiffd_args(ap, 0, "bid1", "bid2", "where the run's files go (the default temp dir)")
    args = ap.parse_args()
    args.pool = 0
    preflight("image_disk", args)
    size = args.files * args.file_mib * MIB
    res = {k: one_layout(args, k) for k in ("data", "disk")}
    log(f"\ntwo images of {args.files} files of {args.file_mib} MiB ({size / MIB:.0f} MiB), "
        f"the same bytes under two modes; {args.repeat} rounds, medians\n")
    log("| store on | stored (blobs + inodes) per round | x files' size | first create A | "
        "first create B (a variant) | warm create |")
    log("| --- | --- | --- | --- | --- | --- |")
    for k in ("data", "disk"):
        r = res[k]
        log(f"| {r['fs']} | {r['stored'] / MIB:.1f} MiB | {r['stored'] / size:.2f} | "
            f"{r['first_a'] * 1000:.0f} ms | {r['first_b'] * 1000:.0f} ms | "
            f"{r['warm'] * 1000:.0f} ms |")
    summary = {"mib": size // MIB,
               "data_stored_mib": res["data"]["stored"] / MIB,
               "disk_stored_mib": res["disk"]["stored"] / MIB}
    for k in ("data", "disk"):
        summary[f"{k}_first_ms"] = res[k]["first_a"] * 1000
        summary[f"{k}_variant_ms"] = res[k]["first_b"] * 1000
        summary[f"{k}_warm_ms"] = res[k]["warm"] * 1000
    log("\nimage_disk " + " ".join(
        f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
