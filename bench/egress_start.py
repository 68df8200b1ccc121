#!/usr/bin/env python3
"""What network egress costs a sandbox's start, through a real `skiffd dev` on loopback.

Three kinds of sandbox, interleaved in one run on one keep-alive connection: network egress
(never pooled), network none made on the spot (disk_mib 1023, so the pool does not fit), and
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
    port = free_port()
    log = open(os.path.join(data, "skiffd.log"), "wb")
    proc = subprocess.Popen([os.path.join(bindir, "skiffd"), "dev", "--data",
                             os.path.join(data, "d"), "--listen", f"127.0.0.1:{port}",
                             "--instance", a.instance, "--pool", "2", "--dns", "192.0.2.53"],
                            stdout=log, stderr=subprocess.STDOUT)
    kinds = {
        "egress": {"network": "egress"},
        "egress_allow": {"network": "egress", "cidr_allowlist": [a.allow]},
        "none": {"disk_mib": 1023},
        "none_pooled": {},
    }
    res = {k: ([], []) for k in kinds}
    try:
        tok_path = os.path.join(data, "d", "admin.token")
        for _ in range(300):
            if os.path.exists(tok_path) and os.path.getsize(tok_path):
                break
            time.sleep(0.05)
        time.sleep(1.0)
        tok = open(tok_path).read().strip()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        h = {"Authorization": f"Bearer {tok}", "Content-Type": "application/json"}

        def call(method, path, body=None):
            c.request(method, path, body=json.dumps(body) if body is not None else None,
                      headers=h)
            r = c.getresponse()
            return r.status, json.loads(r.read() or b"null")

        for i in range(a.cycles + 3):
            for k, body in kinds.items():
                t0 = time.perf_counter_ns()
                s, sb = call("POST", "/v1/sandboxes", body)
                t1 = time.perf_counter_ns()
                if s != 201:
                    sys.exit(f"create {k}: {s} {sb}")
                s, _ = call("DELETE", f"/v1/sandboxes/{sb['id']}")
                t2 = time.perf_counter_ns()
                if i >= 3:  # warm-up cycles are not counted
                    res[k][0].append((t1 - t0) / 1e6)
                    res[k][1].append((t2 - t0) / 1e6)
                time.sleep(0.05)  # the pool refills between requests
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        subprocess.run([os.path.join(bindir, "skiff-box"), "gc", "--instance", a.instance],
                       capture_output=True)
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
