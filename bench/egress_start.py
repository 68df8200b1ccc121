#!/usr/bin/env python3
"""What network egress costs a sandbox's start, through a real `skiffd dev` on loopback.

Three kinds of sandbox, interleaved in one run on keep-alive connections: network egress
(never pooled), network none made on the spot (a second skiffd with --pool 0), and
network none from the pool (for reference). Each cycle: POST /v1/sandboxes (it returns once the
sandbox runs: for egress, veth pair, addresses, routes and, with --allow, the allowlist's set
elements included), then DELETE (teardown; for egress the host link and set elements go too);
a short pause between cycles lets the pool refill. p50/p90 of create and of create+delete (ms).

The skiffd gets --dns with a TEST-NET address (nothing is sent: the sandboxes run nothing).
Everything it made is removed at the end (sandboxes deleted, skiffd stopped, skiff-box gc).

Usage (as root): bench/egress_start.py [--cycles 100] [--allow CIDR] [--instance bne1]
                 [--build build/bench]
The last line is one summary for scripts: `egress_start key=value ...`.
"""

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pct(samples, p):
    s = sorted(samples)
    return s[max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=100)
    ap.add_argument("--allow", default="198.51.100.0/24")
    ap.add_argument("--instance", default="bne1")
    ap.add_argument("--build", default=os.path.join(REPO, "build/bench"))
    a = ap.parse_args()
    bindir = os.path.join(a.build, "bin")
    data = tempfile.mkdtemp(prefix="skiff-bench-egress-")
    # Two daemons side by side: one without a pool (every sandbox made on the spot: egress, and
    # none for comparison; the pool serves any disk size now, so only --pool 0 keeps none off
    # it) and one with a pool of 2 (none from the pool, for reference).
    daemons = {}
    for name, pool in (("spot", "0"), ("pooled", "2")):
        port = free_port()
        d = os.path.join(data, name)
        os.makedirs(d)
        log = open(os.path.join(d, "skiffd.log"), "wb")
        inst = a.instance[:3] + ("s" if name == "spot" else "p")
        proc = subprocess.Popen([os.path.join(bindir, "skiffd"), "dev", "--data",
                                 os.path.join(d, "d"), "--listen", f"127.0.0.1:{port}",
                                 "--instance", inst, "--pool", pool, "--dns", "192.0.2.53"],
                                stdout=log, stderr=subprocess.STDOUT)
        daemons[name] = {"port": port, "dir": d, "log": log, "proc": proc, "inst": inst}
    kinds = {
        "egress": ("spot", {"network": "egress"}),
        "egress_allow": ("spot", {"network": "egress", "cidr_allowlist": [a.allow]}),
        "none": ("spot", {}),
        "none_pooled": ("pooled", {}),
    }
    res = {k: ([], []) for k in kinds}
    try:
        for dm in daemons.values():
            tok_path = os.path.join(dm["dir"], "d", "admin.token")
            for _ in range(300):
                if os.path.exists(tok_path) and os.path.getsize(tok_path):
                    break
                time.sleep(0.05)
            time.sleep(1.0)
            dm["conn"] = http.client.HTTPConnection("127.0.0.1", dm["port"], timeout=60)
            dm["headers"] = {"Authorization": f"Bearer {open(tok_path).read().strip()}",
                             "Content-Type": "application/json"}

        def call(dm, method, path, body=None):
            dm["conn"].request(method, path, body=json.dumps(body) if body is not None else None,
                               headers=dm["headers"])
            r = dm["conn"].getresponse()
            return r.status, json.loads(r.read() or b"null")

        for i in range(a.cycles + 3):
            for k, (where, body) in kinds.items():
                dm = daemons[where]
                t0 = time.perf_counter_ns()
                s, sb = call(dm, "POST", "/v1/sandboxes", body)
                t1 = time.perf_counter_ns()
                if s != 201:
                    sys.exit(f"create {k}: {s} {sb}")
                s, _ = call(dm, "DELETE", f"/v1/sandboxes/{sb['id']}")
                t2 = time.perf_counter_ns()
                if i >= 3:  # warm-up cycles are not counted
                    res[k][0].append((t1 - t0) / 1e6)
                    res[k][1].append((t2 - t0) / 1e6)
                time.sleep(0.05)  # the pool refills between requests
    finally:
        for dm in daemons.values():
            dm["proc"].terminate()
            dm["proc"].wait(30)
            dm["log"].close()
            subprocess.run([os.path.join(bindir, "skiff-box"), "gc", "--instance", dm["inst"]],
                           capture_output=True, env=dict(os.environ,
                                                         SKIFF_DATA=os.path.join(dm["dir"], "d")))
        shutil.rmtree(data, ignore_errors=True)
    print(f"{'kind':<14}{'create p50':>12}{'p90':>8}{'create+delete p50':>20}{'p90':>8}  (ms)")
    summary = []
    for k, (cr, cy) in res.items():
        print(f"{k:<14}{pct(cr, 50):>12.2f}{pct(cr, 90):>8.2f}{pct(cy, 50):>20.2f}"
              f"{pct(cy, 90):>8.2f}")
        summary += [f"{k}_create_p50_ms={pct(cr, 50):.2f}", f"{k}_cycle_p50_ms={pct(cy, 50):.2f}"]
    print("egress_start cycles=%d %s" % (a.cycles, " ".join(summary)))


if __name__ == "__main__":
    main()
