#!/usr/bin/env python3
"""Packing and uploading a copied tree for an image build: `skiff image build --copy` (libarchive)
against skiff.Image.build (the SDK's own ustar writer), side by side in one run.

Makes a tree of --files files (--kib KiB each, in directories of 100) in a temporary directory
and, against a stand-in of the image routes on loopback (tests/integration/imgfake.py, which
keeps uploads in memory), times for each client:

  1. a cold build: pack, HEAD (missing), PUT, POST /v1/images, the build's state
  2. a warm build: pack, HEAD (present): no upload
and, as an anchor, GNU `tar cf` of the same tree to a file (pack only).

It checks that both clients uploaded the same archive (the same digest). Everything it made is
removed at the end.

Usage: bench/image_pack.py [--files 2000] [--kib 16] [--runs 5] [--build build]
The last line is one summary for scripts: `image_pack key=value ...`.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "sdk" / "python"))

import skiff  # noqa: E402
from imgfake import FakeImagesAPI  # noqa: E402


def make_tree(root, files, kib):
    for i in range(files):
        d = root / f"d{i // 100:03d}"
        d.mkdir(exist_ok=True)
        (d / f"f{i:05d}").write_bytes(os.urandom(kib * 1024))


def timed(fn, runs):
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out), min(out), max(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--kib", type=int, default=16)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--build", default="build")
    a = ap.parse_args()
    skiff_bin = REPO / a.build / "bin" / "skiff"
    tmp = Path(tempfile.mkdtemp(prefix="image-pack-"))
    fake = FakeImagesAPI()
    try:
        tree = tmp / "tree"
        tree.mkdir()
        make_tree(tree, a.files, a.kib)
        env = {**os.environ, "SKIFF_URL": fake.url, "SKIFF_TOKEN": "bench",
               "XDG_CONFIG_HOME": str(tmp / "cfg")}
        client = skiff.Client(fake.url, "bench")
        img = skiff.Image.busybox().add_local_dir(tree, "/app")

        def cli():
            subprocess.run([str(skiff_bin), "image", "build", "--copy", f"{tree}:/app",
                            "--detach"], env=env, check=True, stdout=subprocess.DEVNULL)

        def sdk():
            img.build(client=client)

        def cold(fn):
            def run():
                fake.blobs.clear()
                fn()
            return run

        rows = []
        for name, fn in (("cli", cli), ("sdk", sdk)):
            rows.append((f"{name} cold (pack+upload)", timed(cold(fn), a.runs)))
            rows.append((f"{name} warm (pack, HEAD hit)", timed(fn, a.runs)))
        out = tmp / "anchor.tar"
        rows.append(("anchor: GNU tar cf", timed(
            lambda: subprocess.run(["tar", "cf", str(out), "-C", str(tree), "."], check=True),
            a.runs)))
        fake.blobs.clear()
        cli()
        cli_digests = set(fake.blobs)
        fake.blobs.clear()
        sdk()
        same = cli_digests == set(fake.blobs)
        size_mib = sum(len(b) for b in fake.blobs.values()) / (1 << 20)
        print(f"tree: {a.files} files x {a.kib} KiB, archive {size_mib:.1f} MiB, "
              f"{a.runs} runs; same digest from both: {same}")
        print(f"{'':34} {'median':>8} {'min':>8} {'max':>8}  (ms)")
        for label, (med, lo, hi) in rows:
            print(f"{label:34} {med:8.1f} {lo:8.1f} {hi:8.1f}")
        kv = " ".join(f"{label.split(' (')[0].replace(' ', '_').replace(':', '')}={med:.1f}"
                      for label, (med, _, _) in rows)
        print(f"image_pack files={a.files} kib={a.kib} same_digest={int(same)} {kv}")
        client.close()
        return 0 if same else 1
    finally:
        fake.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
