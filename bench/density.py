#!/usr/bin/env python3
"""Density: N concurrent idle sandboxes, memory per sandbox, against bwrap and crun in one run.

For each runtime in turn (the order is given by --order; each phase starts from a settled host):
  1. settle: sync, drop the page cache, dentries and inodes, wait for MemAvailable to stop moving;
  2. read MemAvailable, Slab, PageTables (/proc/meminfo);
  3. start N idle sandboxes (network none), one after another, and check that every one is alive;
  4. settle again and read the same numbers: (before - after) / N is the memory per sandbox, kernel
     memory included (namespaces, mounts, cgroups, page tables are in MemAvailable's drop);
  5. remove them all and check that nothing of theirs is left.

The runtimes:
  skiff   `skiff-box --detach` with no command: an idle sandbox (our init waiting for execs), the
          default limits, network none, the busybox root;
  skiffd  the platform path: `skiffd dev --pool 0` in a temporary data directory, N sandboxes made
          with `POST /v1/sandboxes {}` (skiffd's and its spawner's growth are included);
  bwrap   `bwrap --unshare-all --ro-bind ROOT / --proc /proc --dev /dev /bin/sleep 1000000`;
  crun    `crun run --detach` of an OCI bundle on the same root running `sleep 1000000` (crun's
          default spec plus a network namespace, read-only root), through the `unshare -m` +
          tmpfs-over-cgroup2 wrapper crun 1.8 needs on a v1/v2 hybrid host (see box_start.sh).

Usage (as root): bench/density.py [-n 1000] [--order skiff,bwrap,crun,skiffd] [--instance dns1]
                 [--box build/bin/skiff-box] [--skiffd build/bin/skiffd]
The last line is one summary for scripts: `density key=value ...`.
Everything it made is removed at the end (sandboxes, containers, cgroups, the temporary directory),
and it fails if something was left.
"""

import argparse
import glob
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from api_cycle import free_port  # a sibling script of bench/

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLEEP_S = "1000000"


def log(*a):
    print(*a, flush=True)


def meminfo():
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            out[k] = int(v.split()[0])
    return out


def settle(quiet_kib=2048, max_s=30):
    """Flush and drop caches, then wait until MemAvailable moves less than quiet_kib in a second."""
    subprocess.run(["sync"], check=False)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
    last = meminfo()["MemAvailable"]
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        time.sleep(1)
        now = meminfo()["MemAvailable"]
        if abs(now - last) < quiet_kib:
            return meminfo()
        last = now
    return meminfo()


class Phase:
    """One runtime: start(n) makes n idle sandboxes, alive() counts them, stop() removes them,
    left() names anything of theirs still on the host."""

    name = "?"

    def setup(self):
        pass

    def teardown(self):
        pass


class Skiff(Phase):
    name = "skiff"

    def __init__(self, box, inst, data):
        self.box, self.inst, self.data = box, inst, data
        self.ids = []
        self.env = dict(os.environ, SKIFF_DATA=data, SKIFF_INSTANCE=inst)

    def setup(self):
        subprocess.run([self.box, "--", "/bin/true"], env=self.env, check=True)

    def start(self, n):
        for i in range(n):
            r = subprocess.run([self.box, "--detach"], env=self.env, capture_output=True,
                               text=True)
            if r.returncode != 0:
                raise RuntimeError(f"skiff-box --detach #{i} failed: {r.stderr.strip()}")
            self.ids.append(r.stdout.strip())

    def alive(self):
        r = subprocess.run([self.box, "ls", "--instance", self.inst], env=self.env,
                           capture_output=True, text=True)
        return sum(1 for line in r.stdout.splitlines() if "running" in line)

    def stop(self):
        for sid in self.ids:
            subprocess.run([self.box, "kill", "--instance", self.inst, sid], env=self.env,
                           capture_output=True)
        self.ids = []
        subprocess.run([self.box, "gc", "--instance", self.inst], env=self.env,
                       capture_output=True)

    def left(self):
        out = glob.glob(f"/sys/fs/cgroup/*/skiff-{self.inst}/*/") + \
            glob.glob(f"/sys/fs/cgroup/unified/skiff-{self.inst}/*/")
        if os.path.isdir(f"/run/skiff/{self.inst}"):
            out += [e for e in os.listdir(f"/run/skiff/{self.inst}") if e.startswith("sb-")]
        return out


class Skiffd(Phase):
    name = "skiffd"

    def __init__(self, skiffd, box, inst, data):
        self.skiffd, self.box, self.inst, self.data = skiffd, box, inst, data
        self.proc = None
        self.port = None
        self.ids = []

    def setup(self):
        self.port = free_port()
        self.logf = open(os.path.join(os.path.dirname(self.data), "skiffd.log"), "wb")
        self.proc = subprocess.Popen(
            [self.skiffd, "dev", "--data", self.data, "--listen", f"127.0.0.1:{self.port}",
             "--instance", self.inst, "--pool", "0"],
            stdout=self.logf, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.req("GET", "/healthz", auth=False)[0] == 200 and \
                        os.path.exists(os.path.join(self.data, "admin.token")):
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError("skiffd dev did not start")
        self.token = open(os.path.join(self.data, "admin.token")).read().strip()
        # One sandbox made and removed: the busybox root exists before the baseline. The worker
        # may connect a moment after the health check answers (503 until then).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st, data = self.req("POST", "/v1/sandboxes", {})
            if st == 201:
                self.delete(json.loads(data)["id"])
                break
            if st != 503:
                raise RuntimeError(f"create: {st} {data[:200]!r}")
            time.sleep(0.2)
        else:
            raise RuntimeError("skiffd dev: no worker connected")

    def req(self, method, path, body=None, auth=True):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        h = {"Content-Type": "application/json"}
        if auth:
            h["Authorization"] = "Bearer " + self.token
        c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data

    def create(self):
        st, data = self.req("POST", "/v1/sandboxes", {})
        if st != 201:
            raise RuntimeError(f"create: {st} {data[:200]!r}")
        return json.loads(data)["id"]

    def delete(self, sid):
        self.req("DELETE", f"/v1/sandboxes/{sid}")

    def start(self, n):
        for _ in range(n):
            self.ids.append(self.create())

    def alive(self):
        st, data = self.req("GET", "/v1/sandboxes?state=running&limit=1000")
        body = json.loads(data)
        items = body.get("sandboxes", body.get("items", []))
        return len(items)

    def stop(self):
        for sid in self.ids:
            self.delete(sid)
        self.ids = []

    def teardown(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        subprocess.run([self.box, "gc", "--instance", self.inst], capture_output=True)

    def left(self):
        out = glob.glob(f"/sys/fs/cgroup/*/skiff-{self.inst}/*/")
        if os.path.isdir(f"/run/skiff/{self.inst}"):
            out += [e for e in os.listdir(f"/run/skiff/{self.inst}") if e.startswith("sb-")]
        return out


class Bwrap(Phase):
    name = "bwrap"

    def __init__(self, root):
        self.root = root
        self.procs = []

    def start(self, n):
        for _ in range(n):
            self.procs.append(subprocess.Popen(
                ["bwrap", "--unshare-all", "--ro-bind", self.root, "/", "--proc", "/proc",
                 "--dev", "/dev", "/bin/sleep", SLEEP_S],
                stdin=subprocess.DEVNULL, start_new_session=True))
        time.sleep(1)

    def alive(self):
        return sum(1 for p in self.procs if p.poll() is None)

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        for p in self.procs:
            p.wait()
        self.procs = []

    def left(self):
        r = subprocess.run(["pgrep", "-f", f"^bwrap .*{self.root}"], capture_output=True,
                           text=True)
        return r.stdout.split()


class Crun(Phase):
    name = "crun"
    HIDE_V2 = "mount -t tmpfs -o size=64m tmpfs /sys/fs/cgroup/unified"

    def __init__(self, tmp, root):
        self.bundle = os.path.join(tmp, "bundle")
        self.state = os.path.join(tmp, "crun-state")
        self.root = root
        self.n = 0

    def setup(self):
        os.makedirs(self.bundle)
        os.makedirs(self.state)
        subprocess.run(["crun", "spec"], cwd=self.bundle, check=True)
        path = os.path.join(self.bundle, "config.json")
        c = json.load(open(path))
        c["root"] = {"path": self.root, "readonly": True}
        c["process"]["args"] = ["/bin/sleep", SLEEP_S]
        c["process"]["terminal"] = False
        ns = [x for x in c["linux"]["namespaces"] if x["type"] != "user"]
        for want in ("pid", "mount", "ipc", "uts", "network"):
            if not any(x["type"] == want for x in ns):
                ns.append({"type": want})
        c["linux"]["namespaces"] = ns
        json.dump(c, open(path, "w"), indent=1)

    def crun(self, *args, **kw):
        inner = " ".join(["crun", "--root", self.state] + list(args))
        return subprocess.run(["unshare", "-m", "sh", "-c", f"{self.HIDE_V2} && exec {inner}"],
                              **kw)

    def start(self, n):
        for i in range(n):
            # The container's process inherits crun's stdio: a pipe would never see EOF.
            with tempfile.TemporaryFile() as err:
                r = self.crun("run", "--detach", "--bundle", self.bundle, f"skdens{i}",
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
                if r.returncode != 0:
                    err.seek(0)
                    raise RuntimeError(f"crun run #{i} failed: {err.read().decode().strip()}")
            self.n += 1

    def alive(self):
        r = self.crun("list", "--format", "json", capture_output=True, text=True)
        try:
            return sum(1 for c in json.loads(r.stdout or "[]") if c.get("status") == "running")
        except ValueError:
            return 0

    def stop(self):
        r = self.crun("list", "-q", capture_output=True, text=True)
        for cid in r.stdout.split():
            self.crun("delete", "-f", cid, capture_output=True)
        self.n = 0
        for d in glob.glob("/sys/fs/cgroup/*/skdens*"):
            try:
                os.rmdir(d)
            except OSError:
                pass

    def left(self):
        out = glob.glob("/sys/fs/cgroup/*/skdens*")
        r = self.crun("list", "-q", capture_output=True, text=True)
        return out + r.stdout.split()


def run_phase(ph, n):
    before = settle()
    t0 = time.monotonic()
    ph.start(n)
    start_s = time.monotonic() - t0
    during = settle()
    alive = ph.alive()
    drop = before["MemAvailable"] - during["MemAvailable"]
    res = {
        "name": ph.name, "n": n, "alive": alive, "start_s": start_s,
        "per_kib": drop / n,
        "slab_per_kib": (during["Slab"] - before["Slab"]) / n,
        "pt_per_kib": (during["PageTables"] - before["PageTables"]) / n,
        "anon_per_kib": (during["AnonPages"] - before["AnonPages"]) / n,
        "stack_per_kib": (during["KernelStack"] - before["KernelStack"]) / n,
        "percpu_per_kib": (during["Percpu"] - before["Percpu"]) / n,
        "shmem_per_kib": (during["Shmem"] - before["Shmem"]) / n,
    }
    # What the sandboxes themselves hold, item by item: less exposed than MemAvailable to other
    # programs on the host allocating or freeing memory during the phase.
    res["items_per_kib"] = sum(res[k] for k in ("slab_per_kib", "pt_per_kib", "anon_per_kib",
                                                "stack_per_kib", "percpu_per_kib",
                                                "shmem_per_kib"))
    ph.stop()
    after = settle()
    res["returned_kib"] = after["MemAvailable"] - during["MemAvailable"]
    left = ph.left()
    res["left"] = left
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--order", default="skiff,bwrap,crun,skiffd")
    ap.add_argument("--instance", default="dns1")
    ap.add_argument("--box", default=os.path.join(REPO, "build/bin/skiff-box"))
    ap.add_argument("--skiffd", default=os.path.join(REPO, "build/bin/skiffd"))
    a = ap.parse_args()
    # A TERM or INT ends the run through the cleanup below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    if os.geteuid() != 0:
        sys.exit("density: run as root")
    for tool in ("bwrap", "crun", "unshare"):
        if not shutil.which(tool):
            sys.exit(f"density: {tool} is missing (scripts/install-deps)")
    tmp = tempfile.mkdtemp(prefix="skiff-density.")
    # Private copies: a rebuild during the run can't change what is measured.
    box = os.path.join(tmp, "skiff-box")
    shutil.copy2(a.box, box)
    skiffd = os.path.join(tmp, "skiffd")
    shutil.copy2(a.skiffd, skiffd)
    # What detached sandboxes' inits exec into, found beside the binaries (0711, root's).
    init = os.path.join(os.path.dirname(a.box), "skiff-init")
    if os.path.exists(init):
        shutil.copy2(init, os.path.join(tmp, "skiff-init"))
    data = os.path.join(tmp, "data")
    log(f"density: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, N={a.n}, "
        f"kernel {os.uname().release}, {os.cpu_count()} cores, "
        f"load {open('/proc/loadavg').read().split()[:3]}")
    sk = Skiff(box, a.instance, data)
    phases = {"skiff": sk}
    results, failed = [], False
    try:
        sk.setup()
        root = os.path.join(data, "rootfs", "busybox")
        phases["bwrap"] = Bwrap(root)
        phases["crun"] = Crun(tmp, root)
        phases["skiffd"] = Skiffd(skiffd, box, a.instance[:3] + "d",
                                  os.path.join(tmp, "dd", "data"))
        os.makedirs(os.path.join(tmp, "dd"))
        for name in a.order.split(","):
            ph = phases[name]
            log(f"density: {name}: starting {a.n}")
            ph.setup()
            try:
                r = run_phase(ph, a.n)
            finally:
                ph.stop()
                ph.teardown()
            results.append(r)
            log(f"density: {name}: {r['alive']}/{r['n']} alive, started in {r['start_s']:.1f} s, "
                f"{r['per_kib']:.0f} KiB each (slab {r['slab_per_kib']:.0f}, page tables "
                f"{r['pt_per_kib']:.0f}, anon {r['anon_per_kib']:.0f}, kernel stacks "
                f"{r['stack_per_kib']:.0f}, percpu {r['percpu_per_kib']:.0f}, shmem "
                f"{r['shmem_per_kib']:.0f}); "
                f"{r['returned_kib'] / 1024:.0f} MiB back after removal; left: {r['left'] or 'none'}")
            if r["alive"] != r["n"] or r["left"]:
                failed = True
    finally:
        for ph in phases.values():
            try:
                ph.stop()
                ph.teardown()
            except Exception as e:  # cleanup goes on
                log(f"density: cleanup of {ph.name}: {e}")
        subprocess.run([box, "gc", "--instance", a.instance], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    log("")
    log("| runtime | alive | start N (s) | KiB per sandbox (MemAvailable) | sum of the items "
        "| slab | page tables | anon | kernel stacks | percpu | shmem |")
    log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        log(f"| {r['name']} | {r['alive']}/{r['n']} | {r['start_s']:.1f} | {r['per_kib']:.0f} | "
            f"{r['items_per_kib']:.0f} | {r['slab_per_kib']:.0f} | {r['pt_per_kib']:.0f} | {r['anon_per_kib']:.0f} | "
            f"{r['stack_per_kib']:.0f} | {r['percpu_per_kib']:.0f} | {r['shmem_per_kib']:.0f} |")
    by = {r["name"]: r for r in results}
    for name in ("skiff", "skiffd", "bwrap"):
        if name in by and "crun" in by:
            log(f"{name}/crun memory per sandbox: MemAvailable "
                f"{by[name]['per_kib'] / by['crun']['per_kib']:.2f}, sum of the items "
                f"{by[name]['items_per_kib'] / by['crun']['items_per_kib']:.2f}")
    log("density " + " ".join(f"{r['name']}_kib={r['per_kib']:.0f} {r['name']}_alive={r['alive']}"
                              for r in results) + f" n={a.n}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
