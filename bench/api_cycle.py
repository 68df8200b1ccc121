#!/usr/bin/env python3
"""The REST API's sandbox cycle against a real `skiffd dev`, on loopback, keep-alive connections.

Starts its own skiffd dev (a temporary --data directory, a free port on 127.0.0.1, its own runtime
instance, --pool N) and measures:

  1. sequential cycles: create (POST /v1/sandboxes {}), exec `echo hi` (?wait=true), delete;
     p50/p90/p99 of each step and of the whole cycle (ms), on one keep-alive connection; then
     E execs of `echo hi` one after another into one sandbox (the exec alone, no create before it)
  2. throughput: whole cycles per second with C concurrent clients (threads, each with its own
     keep-alive connection) over a fixed duration
  3. memory with M idle sandboxes (created with {}): VmRSS of skiffd and of its spawner child, the
     PSS of every process (skiffd, spawner, sandboxes), and how much MemAvailable dropped; then
     every one of them deleted
  4. anchors, in the same run: GET /healthz and GET /v1/whoami round trips on the same kind of
     connection (HTTP and the client alone), a one-shot `skiff-box -- echo hi` and a host
     fork+exec of /bin/true (posix_spawn + waitpid, interleaved)

Targets (the issue's) are printed next to the results. Everything it made is removed at the end:
every sandbox deleted over the API, skiffd stopped with SIGTERM, `skiff-box gc` for both instances,
/run/skiff/<instance> checked gone, the data directory removed.

Usage (as root): bench/api_cycle.py [--cycles 300] [--clients 8] [--duration 10] [--idle 1000]
                 [--pool 2] [--anchor-runs 100] [--execs 300] [--instance bnc1]
                 [--build build/bench]
The last line is one summary for scripts: `api_cycle key=value ...`.
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TARGETS = {  # the issue's
    "create_p50_ms": 2.0,
    "exec_p50_ms": 1.2,
    "cycle_p50_ms": 4.0,
    "cycles_per_s": 300.0,
}


def pct(samples, p):
    """Nearest-rank percentile of a list of numbers (ms)."""
    if not samples:
        return float("nan")
    s = sorted(samples)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def ms(ns):
    return ns / 1e6


def log(*a):
    print(*a, flush=True)


class Api:
    """One keep-alive connection to skiffd with the admin token."""

    def __init__(self, port, token):
        self.port = port
        self.token = token
        self.conn = None
        self.connect()

    def connect(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        self.conn.connect()
        # Small requests one after another: don't let Nagle hold a segment back.
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def call(self, method, path, body=None, auth=True):
        headers = {}
        if auth:
            headers["Authorization"] = "Bearer " + self.token
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=data, headers=headers)
        r = self.conn.getresponse()
        raw = r.read()
        if r.getheader("Connection", "").lower() == "close":
            self.connect()
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = raw.decode(errors="replace")
        return r.status, doc

    def create(self):
        st, doc = self.call("POST", "/v1/sandboxes", {})
        if st not in (200, 201) or not isinstance(doc, dict) or doc.get("state") != "running":
            raise RuntimeError(f"create: HTTP {st}: {doc}")
        return doc["id"]

    def exec_echo(self, sid):
        st, doc = self.call("POST", f"/v1/sandboxes/{sid}/exec?wait=true", {"command": ["echo", "hi"]})
        if st not in (200, 201) or not isinstance(doc, dict) or doc.get("stdout") != "hi\n" \
                or doc.get("exit_code") != 0:
            raise RuntimeError(f"exec: HTTP {st}: {doc}")

    def delete(self, sid):
        st, doc = self.call("DELETE", f"/v1/sandboxes/{sid}")
        if st not in (200, 204):
            raise RuntimeError(f"delete {sid}: HTTP {st}: {doc}")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_stat(pid):
    """The fields of /proc/PID/stat after the command's name, as numbers from the state on
    (the state itself 0); None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
        return [0] + [int(x) for x in st[st.rindex(")") + 2:].split()[1:]]
    except (OSError, ValueError):
        return None


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        fields = proc_stat(d)
        if fields and fields[1] == pid:  # ppid
            out.append(int(d))
    return out


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = children(p)
        out += kids
        todo += kids
    return out


def status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def meminfo_kib(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def slab_kib():
    return meminfo_kib("Slab")


class Skiffd:
    def __init__(self, args, tmp):
        self.args = args
        self.data = os.path.join(tmp, "data")
        os.makedirs(self.data)
        self.bin = os.path.join(tmp, "bin")
        os.makedirs(self.bin)
        # Private copies: a rebuild elsewhere can't change the binaries mid-run. skiff-init
        # too (its mode kept: 0711), which skiffd looks for beside itself: without it a
        # sandbox's init stays a copy of the spawner and there is no exec server.
        for b in ("skiffd", "skiff-box", "skiff-init"):
            shutil.copy2(os.path.join(args.build, "bin", b), os.path.join(self.bin, b))
        self.port = free_port()
        self.logf = open(os.path.join(tmp, "skiffd.log"), "w+")
        self.proc = None
        self.token = None

    def start(self):
        cmd = [os.path.join(self.bin, "skiffd"), "dev", "--data", self.data,
               "--listen", f"127.0.0.1:{self.port}", "--instance", self.args.instance,
               "--pool", str(self.args.pool)]
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        tok = os.path.join(self.data, "admin.token")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"skiffd exited with {self.proc.returncode}: {self.log_tail()}")
            if os.path.exists(tok):
                try:
                    c = socket.create_connection(("127.0.0.1", self.port), timeout=1)
                    c.close()
                    with open(tok) as f:
                        self.token = f.read().strip()
                    if self.token:
                        break
                except OSError:
                    pass
            time.sleep(0.05)
        else:
            raise RuntimeError("skiffd did not come up in 30 s: " + self.log_tail())
        # The worker registers just after the API is up.
        api = Api(self.port, self.token)
        deadline = time.monotonic() + 30
        while True:
            st, doc = api.call("GET", "/v1/workers")
            items = doc.get("items", doc) if isinstance(doc, dict) else doc
            if st == 200 and items:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no worker registered: {st} {doc}")
            time.sleep(0.05)
        api.close()

    def spawner_pid(self):
        kids = children(self.proc.pid)
        return kids[0] if kids else None

    def log_tail(self, n=2000):
        self.logf.flush()
        self.logf.seek(0)
        return self.logf.read()[-n:]

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            log("skiffd did not stop in 30 s after SIGTERM; SIGKILL")
            self.proc.kill()
            self.proc.wait()


def wait_pool(sk, n, timeout=20.0):
    """Wait until the spawner holds at least n sandboxes (the pool filled), or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sp = sk.spawner_pid()
        if sp and len(children(sp)) >= n:
            return True
        time.sleep(0.05)
    return False


def live_sandboxes(api):
    ids, cursor = [], None
    while True:
        path = "/v1/sandboxes?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        st, doc = api.call("GET", path)
        if st != 200:
            raise RuntimeError(f"list: HTTP {st}: {doc}")
        for s in doc.get("items", []):
            if s.get("state") in ("pending", "running"):
                ids.append(s["id"])
        cursor = doc.get("next_cursor")
        if not cursor:
            return ids


def skiffd_args(ap, pool, instance, box_instance, tmpdir_help):
    """The options of a benchmark that runs its own skiffd dev (and skiff-box)."""
    ap.add_argument("--pool", type=int, default=pool, help=f"skiffd dev --pool ({pool})")
    ap.add_argument("--instance", default=instance,
                    help=f"skiffd's runtime instance ({instance})")
    ap.add_argument("--box-instance", default=box_instance,
                    help=f"skiff-box's instance ({box_instance})")
    ap.add_argument("--tmpdir", default=None, help=tmpdir_help)
    ap.add_argument("--build", default=os.path.join(REPO, "build/bench"),
                    help="build directory with bin/skiffd and bin/skiff-box (build/bench)")


def preflight(name, args):
    """Exit unless root and both runtime instances are free."""
    if os.geteuid() != 0:
        sys.exit(f"{name}: run as root (sandboxes need it)")
    for inst in (args.instance, args.box_instance):
        if os.path.exists(f"/run/skiff/{inst}"):
            sys.exit(f"{name}: /run/skiff/{inst} exists: another run uses instance {inst}?")


def run_banner(name):
    """The first line of a run: when, which commit, the kernel, the cores and the load."""
    rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "src"], capture_output=True,
                           text=True).stdout.strip()
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return (f"{name}: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, skiff {rev}"
            f"{' (src/ of the checkout has uncommitted changes)' if dirty else ''}, "
            f"kernel {os.uname().release}, {os.cpu_count()} cores, load {load}")


def run_start(name, args):
    """A run's temporary directory and its skiffd (not started yet), announced."""
    tmp = tempfile.mkdtemp(prefix=f"skiff-{name.replace('_', '-')}.", dir=args.tmpdir)
    sk = Skiffd(args, tmp)
    log(run_banner(name))
    log(f"skiffd dev --pool {args.pool} --instance {args.instance} on 127.0.0.1:{sk.port}, "
        f"data {sk.data}, binaries from {os.path.abspath(args.build)}")
    return tmp, sk


def run_end(name, cleaned, summary):
    """What cleanup found, then the summary line `name key=value ...`; exits 1 if an instance's
    state directory was left behind."""
    log(f"\ncleanup: {cleaned['leftover_deleted']} sandboxes left to delete, skiffd stopped "
        f"(SIGTERM), gc'd, /run/skiff/<instance> gone for "
        f"{', '.join(cleaned['instances_gone']) or 'none'}")
    log(f"\n{name} " + " ".join(
        f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    if len(cleaned["instances_gone"]) != 2:
        sys.exit(f"{name}: /run/skiff/<instance> left behind")


def cleanup(sk, instances, tmp, ok):
    """Leave nothing behind: every live sandbox deleted over the API, skiffd stopped, `skiff-box
    gc` for each instance, the temporary directory removed. Returns what it found. What it has to
    say comes last, once all is done (a closed stdout can't stop it halfway)."""
    leftover, notes = [], []
    try:
        if sk.proc is not None and sk.proc.poll() is None and sk.token:
            api = Api(sk.port, sk.token)
            leftover = live_sandboxes(api)
            for sid in leftover:
                try:
                    api.delete(sid)
                except Exception as e:  # noqa: BLE001
                    notes.append(f"cleanup: delete {sid}: {e}")
            api.close()
    except Exception as e:  # noqa: BLE001
        notes.append(f"cleanup: listing sandboxes: {e}")
    sk.stop()
    if not ok:
        notes.append("skiffd log (tail):\n" + sk.log_tail())
    for inst in instances:
        subprocess.run([os.path.join(sk.bin, "skiff-box"), "gc", "--instance", inst],
                       env=dict(os.environ, SKIFF_DATA=sk.data), stdout=subprocess.DEVNULL)
    gone = [inst for inst in instances if not os.path.exists(f"/run/skiff/{inst}")]
    sk.logf.close()
    shutil.rmtree(tmp, ignore_errors=True)
    for n in notes:
        log(n)
    return {"leftover_deleted": len(leftover), "instances_gone": gone}


def row(name, samples, target=None):
    t = f"{target:.1f}" if target is not None else ""
    ok = ""
    if target is not None:
        ok = "yes" if pct(samples, 50) <= target else f"no ({pct(samples, 50) / target:.1f}x)"
    return f"| {name} | {pct(samples, 50):.2f} | {pct(samples, 90):.2f} | {pct(samples, 99):.2f} | " \
           f"{statistics.mean(samples):.2f} | {t} | {ok} |"


def timed_cycle(api):
    """One create / exec `echo hi` / delete: {create, exec, delete, cycle} in ms."""
    t0 = time.perf_counter_ns()
    sid = api.create()
    t1 = time.perf_counter_ns()
    api.exec_echo(sid)
    t2 = time.perf_counter_ns()
    api.delete(sid)
    t3 = time.perf_counter_ns()
    return {"create": ms(t1 - t0), "exec": ms(t2 - t1), "delete": ms(t3 - t2),
            "cycle": ms(t3 - t0)}


def sequential(sk, n, warmup):
    api = Api(sk.port, sk.token)
    steps = {"create": [], "exec": [], "delete": [], "cycle": []}
    for i in range(warmup + n):
        t = timed_cycle(api)
        if i >= warmup:
            for k, v in t.items():
                steps[k].append(v)
    api.close()
    return steps


def exec_loop(sk, n):
    """n `echo hi` execs with ?wait=true into one sandbox, after 10 unmeasured: the exec's round
    trip alone, without a create just before it."""
    api = Api(sk.port, sk.token)
    sid = api.create()
    lat = []
    for i in range(10 + n):
        t0 = time.perf_counter_ns()
        api.exec_echo(sid)
        if i >= 10:
            lat.append(ms(time.perf_counter_ns() - t0))
    api.delete(sid)
    api.close()
    return lat


def anchors_http(sk, n):
    api = Api(sk.port, sk.token)
    h, w = [], []
    for i in range(n + 10):
        t0 = time.perf_counter_ns()
        st, _ = api.call("GET", "/healthz", auth=False)
        t1 = time.perf_counter_ns()
        st2, _ = api.call("GET", "/v1/whoami")
        t2 = time.perf_counter_ns()
        if st != 200 or st2 != 200:
            raise RuntimeError(f"healthz {st} whoami {st2}")
        if i >= 10:
            h.append(ms(t1 - t0))
            w.append(ms(t2 - t1))
    api.close()
    return h, w


def throughput(sk, clients, duration, warmup_s):
    lock = threading.Lock()
    done = []  # cycle latencies (ms) in the measured window
    errors = []
    start_evt = threading.Event()
    t_begin = [0.0]
    t_end = [0.0]

    def client():
        try:
            api = Api(sk.port, sk.token)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
            return
        start_evt.wait()
        while True:
            now = time.monotonic()
            if now >= t_end[0]:
                break
            t0 = time.perf_counter_ns()
            try:
                sid = api.create()
                api.exec_echo(sid)
                api.delete(sid)
            except Exception as e:  # noqa: BLE001
                with lock:
                    errors.append(repr(e)[:300])
                try:
                    api.connect()
                except OSError:
                    pass
                continue
            t1 = time.perf_counter_ns()
            fin = time.monotonic()
            if now >= t_begin[0] and fin <= t_end[0]:
                with lock:
                    done.append(ms(t1 - t0))
        api.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    now = time.monotonic()
    t_begin[0] = now + warmup_s
    t_end[0] = now + warmup_s + duration
    cpu0 = time.process_time()
    start_evt.set()
    for t in threads:
        t.join()
    cpu = time.process_time() - cpu0
    return done, errors, cpu


def cpu_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), v[3] + v[4]  # total, idle + iowait


def proc_cpu_s(pids):
    """CPU seconds (user + system) of the processes alive, without their reaped children."""
    fields = [f for f in map(proc_stat, pids) if f]
    return sum(f[11] + f[12] for f in fields) / os.sysconf("SC_CLK_TCK")  # utime stime


def proc_minflt(pids):
    """Minor page faults of the processes alive, without their reaped children."""
    return sum(f[7] for f in map(proc_stat, pids) if f)


def memory(sk, m, parallel_delete):
    sp = sk.spawner_pid()
    snap = {}

    def measure(tag):
        pids = [sk.proc.pid] + descendants(sk.proc.pid)
        snap[tag] = {
            "skiffd_rss": status_kib(sk.proc.pid, "VmRSS"),
            "spawner_rss": status_kib(sp, "VmRSS"),
            "skiffd_pss": pss_kib(sk.proc.pid),
            "spawner_pss": pss_kib(sp),
            "all_pss": sum(pss_kib(p) for p in pids),
            "procs": len(pids),
            "avail": meminfo_kib("MemAvailable"),
            "slab": slab_kib(),
        }

    time.sleep(1.0)
    measure("before")
    api = Api(sk.port, sk.token)
    ids = []
    why = None
    t0 = time.perf_counter_ns()
    lat = []
    for i in range(m):
        a = time.perf_counter_ns()
        try:
            ids.append(api.create())
        except Exception as e:  # noqa: BLE001
            why = str(e)[:400]
            break
        lat.append(ms(time.perf_counter_ns() - a))
    t_create = ms(time.perf_counter_ns() - t0) / 1000.0
    time.sleep(2.0)  # let the pool refill and the allocators settle
    measure("after")
    # Deleting: in parallel, each thread its own connection.
    t0 = time.perf_counter_ns()
    chunks = [ids[i::parallel_delete] for i in range(parallel_delete)]
    errs = []

    def deleter(chunk):
        a = Api(sk.port, sk.token)
        for sid in chunk:
            try:
                a.delete(sid)
            except Exception as e:  # noqa: BLE001
                errs.append(str(e)[:200])
        a.close()

    ths = [threading.Thread(target=deleter, args=(c,)) for c in chunks]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    t_delete = ms(time.perf_counter_ns() - t0) / 1000.0
    api.close()
    time.sleep(1.0)
    measure("deleted")
    return {"n": len(ids), "why": why, "snap": snap, "create_s": t_create, "delete_s": t_delete,
            "create_lat": lat, "delete_errors": errs}


def anchors_spawn(sk, n):
    box = os.path.join(sk.bin, "skiff-box")
    env = dict(os.environ, SKIFF_DATA=sk.data, SKIFF_INSTANCE=sk.args.box_instance)
    devnull = os.open(os.devnull, os.O_RDWR)
    fa = [(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1)]
    cmds = {"box": [box, "--", "echo", "hi"], "host": ["/bin/true"]}
    res = {"box": [], "host": []}

    def once(name):
        t0 = time.perf_counter_ns()
        pid = os.posix_spawn(cmds[name][0], cmds[name], env, file_actions=fa)
        _, st = os.waitpid(pid, 0)
        t1 = time.perf_counter_ns()
        if os.waitstatus_to_exitcode(st) != 0:
            raise RuntimeError(f"{name} exited {st}")
        return ms(t1 - t0)

    # check that echo prints hi
    out = subprocess.run([box, "--", "echo", "hi"], env=env, capture_output=True, text=True)
    if out.stdout != "hi\n":
        raise RuntimeError(f"skiff-box echo hi: {out.returncode} {out.stdout!r} {out.stderr!r}")
    for i in range(n + 5):
        for name in ("host", "box"):
            v = once(name)
            if i >= 5:
                res[name].append(v)
    os.close(devnull)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", type=int, default=300, help="sequential cycles (300)")
    ap.add_argument("--warmup", type=int, default=20, help="unmeasured cycles first (20)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients (8)")
    ap.add_argument("--duration", type=float, default=10.0, help="throughput window, s (10)")
    ap.add_argument("--idle", type=int, default=1000, help="idle sandboxes for memory (1000)")
    ap.add_argument("--anchor-runs", type=int, default=100, help="skiff-box / host runs (100)")
    ap.add_argument("--execs", type=int, default=300,
                    help="execs into one sandbox, one after another (300)")
    skiffd_args(ap, 2, "bnc1", "bnc2", "where the temporary data directory goes (default: $TMPDIR "
                "or /tmp); a tmpfs here takes the store's fsyncs off the path")
    args = ap.parse_args()
    preflight("api_cycle", args)

    tmp, sk = run_start("api_cycle", args)
    res = {}
    ok = False
    try:
        sk.start()
        wait_pool(sk, args.pool)
        cpu_pids = lambda: [sk.proc.pid] + descendants(sk.proc.pid)  # noqa: E731

        # 4a. HTTP anchors first (an idle server)
        h, w = anchors_http(sk, 300)
        res["healthz"], res["whoami"] = h, w

        # 1. sequential cycles
        wait_pool(sk, args.pool)
        log(f"\nsequential: {args.cycles} cycles after {args.warmup} warm-ups, one connection ...")
        c0 = proc_cpu_s(cpu_pids())
        w0 = time.monotonic()
        steps = sequential(sk, args.cycles, args.warmup)
        res["seq_cpu_per_cycle_ms"] = (proc_cpu_s(cpu_pids()) - c0) * 1000 / (args.cycles + args.warmup)
        res["seq_wall_s"] = time.monotonic() - w0
        res.update(steps)

        # 1b. execs into one sandbox
        wait_pool(sk, args.pool)
        log(f"execs: {args.execs} into one sandbox ...")
        res["exec_only"] = exec_loop(sk, args.execs)

        # 2. throughput
        time.sleep(1.0)
        wait_pool(sk, args.pool)
        log(f"throughput: {args.clients} clients, {args.duration:.0f} s after 2 s of warm-up ...")
        c0 = proc_cpu_s([sk.proc.pid] + descendants(sk.proc.pid))
        m0 = cpu_ticks()
        lat, errors, client_cpu = throughput(sk, args.clients, args.duration, 2.0)
        m1 = cpu_ticks()
        srv_cpu = proc_cpu_s([sk.proc.pid] + descendants(sk.proc.pid)) - c0
        res["tp_busy"] = 1.0 - (m1[1] - m0[1]) / max(1, m1[0] - m0[0])
        res["tp_lat"], res["tp_errors"] = lat, errors
        res["tp_rate"] = len(lat) / args.duration
        res["tp_client_cpu"] = client_cpu
        res["tp_server_cpu"] = srv_cpu

        # 4b. process anchors
        time.sleep(1.0)
        log(f"anchors: skiff-box -- echo hi and /bin/true, {args.anchor_runs} runs each, interleaved ...")
        res["spawn"] = anchors_spawn(sk, args.anchor_runs)

        # 3. memory
        time.sleep(1.0)
        log(f"memory: {args.idle} idle sandboxes ...")
        res["mem"] = memory(sk, args.idle, args.clients)
        ok = True
    finally:
        res["cleanup"] = cleanup(sk, (args.instance, args.box_instance), tmp, ok)

    # ---- report ----
    T = TARGETS
    log("\n### Sequential cycles, one keep-alive connection (ms)\n")
    log("| step | p50 | p90 | p99 | mean | target p50 | met |")
    log("| --- | --- | --- | --- | --- | --- | --- |")
    log(row("create `POST /v1/sandboxes {}`", res["create"], T["create_p50_ms"]))
    log(row("exec `echo hi` `?wait=true`", res["exec"], T["exec_p50_ms"]))
    log(row("delete", res["delete"]))
    log(row("**whole cycle**", res["cycle"], T["cycle_p50_ms"]))
    log(row(f"exec `echo hi` `?wait=true`, {args.execs} into one sandbox", res["exec_only"]))
    log(f"\n{len(res['cycle'])} cycles in {res['seq_wall_s']:.1f} s; skiffd+spawner+sandboxes CPU "
        f"per cycle {res['seq_cpu_per_cycle_ms']:.2f} ms")
    tp = res["tp_lat"]
    log(f"\n### Throughput, {args.clients} clients, {args.duration:.0f} s\n")
    log("| cycles/s | target | met | cycle p50 ms | p90 | p99 | errors | skiffd CPU s | client CPU s | machine busy |")
    log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    met = "yes" if res["tp_rate"] >= T["cycles_per_s"] else f"no ({res['tp_rate'] / T['cycles_per_s']:.2f}x)"
    log(f"| **{res['tp_rate']:.1f}** | {T['cycles_per_s']:.0f} | {met} | {pct(tp, 50):.2f} | "
        f"{pct(tp, 90):.2f} | {pct(tp, 99):.2f} | {len(res['tp_errors'])} | "
        f"{res['tp_server_cpu']:.1f} | {res['tp_client_cpu']:.1f} | {res['tp_busy'] * 100:.0f}% |")
    log("(skiffd CPU: skiffd, the spawner and the sandboxes alive at the end, user+system, warm-up "
        "included, without reaped children; machine busy: all CPUs, from /proc/stat)")
    if res["tp_errors"]:
        log("errors (first 3): " + "; ".join(res["tp_errors"][:3]))
    m = res["mem"]
    s = m["snap"]
    log(f"\n### Memory with idle sandboxes (KiB)\n")
    log(f"created {m['n']} of {args.idle} in {m['create_s']:.1f} s "
        f"(create p50 {pct(m['create_lat'], 50):.2f} ms, p99 {pct(m['create_lat'], 99):.2f} ms); "
        f"deleted them in {m['delete_s']:.1f} s with {args.clients} clients"
        + (f"; {len(m['delete_errors'])} delete errors: {m['delete_errors'][:2]}" if m["delete_errors"] else ""))
    if m["why"]:
        log(f"stopped at {m['n']}: {m['why']}")
    log("\n| | skiffd VmRSS | spawner VmRSS | skiffd PSS | spawner PSS | all processes PSS | processes | MemAvailable drop | Slab |")
    log("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    b = s["before"]
    for tag, label in (("before", f"pool of {args.pool} only"), ("after", f"+{m['n']} idle"),
                       ("deleted", "all deleted")):
        x = s[tag]
        log(f"| {label} | {x['skiffd_rss']} | {x['spawner_rss']} | {x['skiffd_pss']} | "
            f"{x['spawner_pss']} | {x['all_pss']} | {x['procs']} | {b['avail'] - x['avail']} | {x['slab']} |")
    n = max(1, m["n"])
    a = s["after"]
    per = {
        "skiffd": (a["skiffd_rss"] - b["skiffd_rss"]) / n,
        "spawner": (a["spawner_rss"] - b["spawner_rss"]) / n,
        "pss": (a["all_pss"] - b["all_pss"]) / n,
        "avail": (b["avail"] - a["avail"]) / n,
        "slab": (a["slab"] - b["slab"]) / n,
    }
    if m["n"] == 0:
        per = {k: float("nan") for k in per}
    log(f"\nper idle sandbox: skiffd +{per['skiffd']:.1f} KiB RSS, spawner +{per['spawner']:.1f} KiB RSS, "
        f"all processes +{per['pss']:.1f} KiB PSS, MemAvailable -{per['avail']:.0f} KiB "
        f"(of which slab +{per['slab']:.0f} KiB)")
    log("\n### Anchors (ms)\n")
    log("| what | p50 | p90 | p99 | mean |")
    log("| --- | --- | --- | --- | --- |")
    log(row("GET /healthz (no token)", res["healthz"]).rsplit("|", 3)[0] + "|")
    log(row("GET /v1/whoami (token checked)", res["whoami"]).rsplit("|", 3)[0] + "|")
    log(row("`skiff-box -- echo hi` one-shot", res["spawn"]["box"]).rsplit("|", 3)[0] + "|")
    log(row("host fork+exec `/bin/true`", res["spawn"]["host"]).rsplit("|", 3)[0] + "|")
    summary = {
        "create_p50_ms": pct(res["create"], 50), "create_p99_ms": pct(res["create"], 99),
        "exec_p50_ms": pct(res["exec"], 50), "exec_p99_ms": pct(res["exec"], 99),
        "exec_only_p50_ms": pct(res["exec_only"], 50),
        "delete_p50_ms": pct(res["delete"], 50), "delete_p99_ms": pct(res["delete"], 99),
        "cycle_p50_ms": pct(res["cycle"], 50), "cycle_p99_ms": pct(res["cycle"], 99),
        "cycles_per_s": res["tp_rate"], "tp_errors": len(res["tp_errors"]),
        "idle": m["n"],
        "skiffd_rss_kib": a["skiffd_rss"], "spawner_rss_kib": a["spawner_rss"],
        "all_pss_kib": a["all_pss"], "per_idle_kib": per["avail"],
        "box_echo_p50_ms": pct(res["spawn"]["box"], 50), "host_true_p50_ms": pct(res["spawn"]["host"], 50),
        "healthz_p50_ms": pct(res["healthz"], 50),
        "cycles": args.cycles, "clients": args.clients, "pool": args.pool,
    }
    run_end("api_cycle", res["cleanup"], summary)


if __name__ == "__main__":
    main()
