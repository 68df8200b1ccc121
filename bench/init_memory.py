#!/usr/bin/env python3
"""Memory of an idle sandbox's init, with and without the exec into skiff-init, in one run.

For skiff-box (`--detach`, no command) and for skiffd (`POST /v1/sandboxes {}`, `--pool 0`), each
in two modes: init as it was born (SKIFF_INIT=/nonexistent: a copy of skiff-box, or of skiffd's
spawner, running the loop in place) and init exec'd into skiff-init (the default). N idle
sandboxes per mode; for each init, from /proc/PID/smaps_rollup and status: Rss, Pss, Anonymous
and VmPTE (its page tables). Prints the median of each, in KiB, and one summary line
`init_memory key=value ...`.

Usage (as root): bench/init_memory.py [-n 10] [--instance imem]
                 [--box build/bin/skiff-box] [--skiffd build/bin/skiffd]
Everything it made is removed at the end, and it fails if something was left.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

from density import REPO, Skiff, Skiffd, log

FIELDS = ("Rss", "Pss", "Anonymous", "VmPTE")


def init_pids(inst):
    """Host pids of the instance's sandboxes' inits (their state directories' 'init' records)."""
    run = f"/run/skiff/{inst}"
    out = []
    for e in sorted(os.listdir(run)) if os.path.isdir(run) else []:
        try:
            with open(f"{run}/{e}/init") as f:
                out.append(int(f.read().split()[0]))
        except (FileNotFoundError, NotADirectoryError):
            pass
    return out


def init_memory(pid):
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in FIELDS:
                out[k] = int(v.split()[0])
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in FIELDS:
                out[k] = int(v.split()[0])
    out["exe"] = os.readlink(f"/proc/{pid}/exe")
    return out


def measure(ph, inst, n):
    ph.setup()
    try:
        ph.start(n)
        time.sleep(1)  # the exec follows the start
        pids = init_pids(inst)
        if len(pids) != n:
            raise RuntimeError(f"{ph.name}: {len(pids)} inits, not {n}")
        rows = [init_memory(p) for p in pids]
        exes = sorted({r["exe"] for r in rows})
        return {k: statistics.median(r[k] for r in rows) for k in FIELDS}, exes
    finally:
        ph.stop()
        ph.teardown()
        left = ph.left()
        if left:
            raise RuntimeError(f"{ph.name}: left {left}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10)
    ap.add_argument("--instance", default="imem")
    ap.add_argument("--box", default=os.path.join(REPO, "build/bin/skiff-box"))
    ap.add_argument("--skiffd", default=os.path.join(REPO, "build/bin/skiffd"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("init_memory: run as root")
    log(f"init_memory: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, N={a.n}, "
        f"kernel {os.uname().release}")
    tmp = tempfile.mkdtemp(prefix="skiff-init-memory-")
    summary = []
    try:
        for mode, given in (("in_place", "/nonexistent"), ("skiff_init", None)):
            if given:
                os.environ["SKIFF_INIT"] = given
            else:
                os.environ.pop("SKIFF_INIT", None)
            for name in ("skiff", "skiffd"):
                data = os.path.join(tmp, f"{name}-{mode}", "data")
                os.makedirs(data)
                ph = Skiff(a.box, a.instance, data) if name == "skiff" else \
                    Skiffd(a.skiffd, a.box, a.instance, data)
                med, exes = measure(ph, a.instance, a.n)
                log(f"{name:7} {mode:10} " +
                    " ".join(f"{k}={med[k]:g}" for k in FIELDS) + f" KiB  exe: {exes}")
                summary += [f"{name}_{mode}_{k.lower()}={med[k]:g}" for k in FIELDS]
    finally:
        os.environ.pop("SKIFF_INIT", None)
        shutil.rmtree(tmp, ignore_errors=True)
    log("init_memory " + " ".join(summary))


if __name__ == "__main__":
    main()
