#!/usr/bin/env python3
"""A sandbox's port through the server's proxy against the same server reached directly.

Starts its own `skiffd dev` (a temporary --data directory, a free port on 127.0.0.1, its own
runtime instance), creates one sandbox that serves files with busybox httpd on port 8080
(declared in "ports"), and runs the same client twice in the same run:

  proxy   from the host, `GET /v1/sandboxes/{id}/ports/8080/<file>` on skiffd, with the token
          (server -> worker -> tunnel -> the sandbox's loopback, a tunnel per request)
  direct  inside the sandbox's network namespace (`nsenter --net=/proc/<httpd>/ns/net`),
          `GET http://127.0.0.1:8080/<file>`: the floor the proxy adds to

Each measures:

  1. sequential: R requests for a small file (6 bytes), one after another: p50/p90/p99 (ms)
  2. throughput: C concurrent clients (threads, one connection at a time each) for D seconds
     after 1 s of warm-up: requests per second, p50/p99 under load
  3. bulk: one 64 MiB file, N times: MiB/s

busybox httpd answers each request with `Connection: close` (and the proxy always ends a
client's connection with its response), so every request is a new TCP connection in both runs:
the clients ask for keep-alive, neither side keeps it. Everything it made is removed at the end.

Usage (as root): bench/port_proxy.py [--requests 500] [--clients 8] [--duration 10] [--bulk 5]
                 [--instance bpp1] [--build build/bench]
The last line is one summary for scripts: `port_proxy key=value ...`.
"""

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from api_cycle import REPO, Api, Skiffd, descendants, log, pct  # noqa: E402

PORT = 8080
SMALL = "small.txt"
BULK = "bulk.bin"
BULK_MIB = 64
SETUP = (f"mkdir -p /srv && printf 'hello\\n' > /srv/{SMALL} && "
         f"dd if=/dev/zero of=/srv/{BULK} bs=1048576 count={BULK_MIB} 2>/dev/null && "
         f"exec busybox httpd -f -p {PORT} -h /srv")


# ---- the client (runs in the host's network namespace, or in the sandbox's) ----

def fetch(host, port, path, headers, want_len=None):
    """One GET on a new connection: (ms, bytes received)."""
    t0 = time.perf_counter_ns()
    c = http.client.HTTPConnection(host, port, timeout=60)
    try:
        c.request("GET", path, headers=headers)
        r = c.getresponse()
        n = 0
        while True:
            chunk = r.read(1 << 20)
            if not chunk:
                break
            n += len(chunk)
        if r.status != 200 or (want_len is not None and n != want_len):
            raise RuntimeError(f"GET {path}: HTTP {r.status}, {n} bytes")
    finally:
        c.close()
    return (time.perf_counter_ns() - t0) / 1e6, n


def client_main(a):
    """Run the three measurements against one base and print them as JSON."""
    headers = {"Authorization": f"Bearer {a.token}"} if a.token else {}
    small, bulk = f"{a.prefix}/{SMALL}", f"{a.prefix}/{BULK}"
    for _ in range(20):  # warm-up
        fetch(a.host, a.port, small, headers, 6)
    seq = [fetch(a.host, a.port, small, headers, 6)[0] for _ in range(a.requests)]

    lat, errors, stop, start = [], [0], [False], [0.0]
    lock = threading.Lock()

    def worker():
        while not stop[0]:
            try:
                ms, _ = fetch(a.host, a.port, small, headers, 6)
            except Exception:  # noqa: BLE001
                with lock:
                    errors[0] += 1
                continue
            if start[0] and time.monotonic() >= start[0]:
                with lock:
                    lat.append(ms)

    threads = [threading.Thread(target=worker) for _ in range(a.clients)]
    for t in threads:
        t.start()
    start[0] = time.monotonic() + 1.0
    time.sleep(1.0 + a.duration)
    stop[0] = True
    for t in threads:
        t.join()

    rates = []
    for _ in range(a.bulk):
        ms, n = fetch(a.host, a.port, bulk, headers, BULK_MIB << 20)
        rates.append(n / (1 << 20) / (ms / 1000))
    print(json.dumps({"seq": seq, "tp_lat": lat, "tp_rate": len(lat) / a.duration,
                      "tp_errors": errors[0], "bulk_mib_s": rates}))


# ---- the run ----

def httpd_pid(instance):
    """The sandbox's httpd: a process in the instance's cgroups running `httpd ... -p 8080`."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{d}/cgroup") as f:
                cg = f.read()
        except OSError:
            continue
        if b"httpd" in argv and str(PORT).encode() in argv and f"/skiff-{instance}/" in cg:
            return int(d)
    return None


def run_client(args, prefix, host, port, token, netns_pid=None):
    cmd = [sys.executable, os.path.abspath(__file__), "--client", "--host", host, "--port",
           str(port), "--prefix", prefix, "--requests", str(args.requests), "--clients",
           str(args.clients), "--duration", str(args.duration), "--bulk", str(args.bulk)]
    env = dict(os.environ)
    if token:
        env["PORT_PROXY_TOKEN"] = token
    if netns_pid:
        cmd = ["nsenter", f"--net=/proc/{netns_pid}/ns/net", "--"] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"client failed ({r.returncode}): {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=500, help="sequential requests (500)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients (8)")
    ap.add_argument("--duration", type=float, default=10.0, help="throughput window, s (10)")
    ap.add_argument("--bulk", type=int, default=5, help=f"{BULK_MIB} MiB downloads (5)")
    ap.add_argument("--instance", default="bpp1", help="skiffd's runtime instance (bpp1)")
    ap.add_argument("--build", default=os.path.join(REPO, "build/bench"),
                    help="build directory with bin/skiffd and bin/skiff-box (build/bench)")
    # the client's side (internal)
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--host", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--prefix", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        args.token = os.environ.get("PORT_PROXY_TOKEN")
        client_main(args)
        return
    if os.geteuid() != 0:
        sys.exit("port_proxy: run as root (sandboxes and nsenter need it)")
    if os.path.exists(f"/run/skiff/{args.instance}"):
        sys.exit(f"port_proxy: /run/skiff/{args.instance} exists: another run uses it?")
    args.pool = 1

    tmp = tempfile.mkdtemp(prefix="skiff-port-proxy.")
    sk = Skiffd(args, tmp)
    rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip() or "?"
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    log(f"port_proxy: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, skiff {rev}, "
        f"kernel {os.uname().release}, {os.cpu_count()} cores, load {load}")
    res, ok = {}, False
    try:
        sk.start()
        api = Api(sk.port, sk.token)
        st, sb = api.call("POST", "/v1/sandboxes", {"ports": [PORT],
                                                    "command": ["sh", "-c", SETUP]})
        if st != 201:
            raise RuntimeError(f"create: HTTP {st}: {sb}")
        sid = sb["id"]
        prefix = f"/v1/sandboxes/{sid}/ports/{PORT}"
        deadline = time.monotonic() + 30
        while api.call("GET", f"{prefix}/{SMALL}")[0] != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("httpd did not answer within 30 s")
            time.sleep(0.1)
        api.close()
        pid = httpd_pid(args.instance)
        if not pid:
            raise RuntimeError("the sandbox's httpd process was not found")
        log(f"sandbox {sid}: httpd pid {pid}; {args.requests} sequential requests, "
            f"{args.clients} clients for {args.duration:.0f} s, {args.bulk} x {BULK_MIB} MiB")
        log("direct (inside the sandbox's network namespace) ...")
        res["direct"] = run_client(args, "", "127.0.0.1", PORT, None, netns_pid=pid)
        log("proxy (the server, a tunnel per request) ...")
        res["proxy"] = run_client(args, prefix, "127.0.0.1", sk.port, sk.token)
        log("direct again ...")
        res["direct2"] = run_client(args, "", "127.0.0.1", PORT, None, netns_pid=pid)
        res["skiffd_rss_kib"] = 0
        with open(f"/proc/{sk.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    res["skiffd_rss_kib"] = int(line.split()[1])
        ok = True
    finally:
        try:
            if sk.proc is not None and sk.proc.poll() is None and sk.token:
                api = Api(sk.port, sk.token)
                st, doc = api.call("GET", "/v1/sandboxes?limit=1000")
                for s in doc.get("items", []) if st == 200 else []:
                    if s.get("state") in ("pending", "running"):
                        api.delete(s["id"])
                api.close()
        except Exception as e:  # noqa: BLE001
            log(f"cleanup: {e}")
        left = descendants(sk.proc.pid) if sk.proc else []
        sk.stop()
        if not ok:
            log("skiffd log (tail):\n" + sk.log_tail())
        subprocess.run([os.path.join(sk.bin, "skiff-box"), "gc", "--instance", args.instance],
                       env=dict(os.environ, SKIFF_DATA=sk.data), stdout=subprocess.DEVNULL)
        gone = not os.path.exists(f"/run/skiff/{args.instance}")
        sk.logf.close()
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"cleanup: instance {args.instance} {'gone' if gone else 'LEFT'} "
            f"({len(left)} processes under skiffd before its stop)")

    log("\n| small file (6 B), ms | direct p50 | direct p99 | proxy p50 | proxy p90 | proxy p99 |"
        "\n| --- | --- | --- | --- | --- | --- |")
    d, p, d2 = res["direct"], res["proxy"], res["direct2"]
    log(f"| sequential, {args.requests} requests | {pct(d['seq'], 50):.2f} | "
        f"{pct(d['seq'], 99):.2f} | {pct(p['seq'], 50):.2f} | {pct(p['seq'], 90):.2f} | "
        f"{pct(p['seq'], 99):.2f} |")
    log(f"| {args.clients} clients, under load | {pct(d['tp_lat'], 50):.2f} | "
        f"{pct(d['tp_lat'], 99):.2f} | {pct(p['tp_lat'], 50):.2f} | {pct(p['tp_lat'], 90):.2f} | "
        f"{pct(p['tp_lat'], 99):.2f} |")
    log(f"\nrequests/s with {args.clients} clients: direct {d['tp_rate']:.0f} (again: "
        f"{d2['tp_rate']:.0f}), proxy {p['tp_rate']:.0f}; errors direct {d['tp_errors']}, "
        f"proxy {p['tp_errors']}")
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    log(f"{BULK_MIB} MiB download, MiB/s (median of {args.bulk}): direct "
        f"{med(d['bulk_mib_s']):.0f}, proxy {med(p['bulk_mib_s']):.0f}; skiffd VmRSS after "
        f"{res['skiffd_rss_kib'] / 1024:.1f} MiB")
    log(f"port_proxy direct_p50_ms={pct(d['seq'], 50):.3f} proxy_p50_ms={pct(p['seq'], 50):.3f} "
        f"proxy_p99_ms={pct(p['seq'], 99):.3f} direct_rps={d['tp_rate']:.1f} "
        f"direct2_rps={d2['tp_rate']:.1f} proxy_rps={p['tp_rate']:.1f} "
        f"proxy_load_p50_ms={pct(p['tp_lat'], 50):.3f} direct_mib_s={med(d['bulk_mib_s']):.1f} "
        f"proxy_mib_s={med(p['bulk_mib_s']):.1f} proxy_errors={p['tp_errors']} "
        f"clients={args.clients} requests={args.requests}")


if __name__ == "__main__":
    main()
