"""Fixtures for the skiff-box integration tests: they run the real binary as a user would.

The binary comes from $SKIFF_BIN (default <repo>/build/bin). Every test session uses its own
runtime instance id and data directory, so it never touches another instance's sandboxes. After
each test, failed or not, an autouse check asserts that nothing of the instance is left: cgroups,
mounts, state directories, uid slots, processes. At the end of the session `skiff-box gc` must
leave not even the instance's parent cgroups behind.
"""

import contextlib
import io
import os
import random
import re
import select
import shutil
import signal
import stat
import string
import subprocess
import sys
import sysconfig
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("SKIFF_BIN", str(REPO / "build" / "bin")))
# A host without btrfs-progs runs writable layers on tmpfs (test_disk.py skips there).
NO_MKFS_BTRFS = shutil.which("mkfs.btrfs") is None
SKIFF_BOX = BIN_DIR / "skiff-box"
RUN_DIR = Path("/run/skiff")
UIDS_DIR = RUN_DIR / "uids"
CGROUP_FS = Path("/sys/fs/cgroup")

DEFAULT_TIMEOUT_S = 60  # a run that takes longer has hung
LEAK_GRACE_S = 3.0  # how long teardown may still be finishing (a killed run's cleanup helper)
# How long the kernel may take to release the data directory's loop device after the unmount:
# a dead sandbox's mount namespace that still held the disk is torn down lazily, seconds later
# on a loaded machine.
LOOP_RELEASE_S = 15.0
POLL_S = 0.02


def wait_for(pred, timeout, interval=POLL_S):
    """Poll pred() until it returns something truthy or timeout seconds pass; return the last
    value (falsy on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def make_tar(files):
    """A tar of {path: bytes, or (bytes, mode)}, mtime fixed (the same bytes every time)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for path, data in files.items():
            data, mode = data if isinstance(data, tuple) else (data, 0o644)
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = mode
            info.mtime = 1700000000
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sh(d, sbid, script):
    """Run script with sh -c in sandbox sbid over the API (d: a running skiffd), waiting for its
    end; the exec's JSON."""
    s, out = d.api("POST", f"/v1/sandboxes/{sbid}/exec?wait=true",
                   {"command": ["sh", "-c", script]})
    assert s == 200, out
    return out


def tree_state(top):
    """Every entry under top with its type, mode, owner, size, mtime and link target: what a
    sandbox must not be able to change in an image or on the host."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            link = os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
            out[os.path.relpath(p, top)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size,
                                            st.st_mtime_ns, link)
    return out


# ---- what the host holds for an instance ----


def cgroup_roots():
    """The root of every cgroup hierarchy mounted on the host (v1 controllers and cgroup2),
    plus the usual places, so that both the v1 layout (/sys/fs/cgroup/<ctrl>/skiff-<inst>) and a
    pure v2 host (/sys/fs/cgroup/skiff-<inst>) are covered."""
    roots = {CGROUP_FS}
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields, rfields = left.split(), right.split()
                if len(fields) >= 5 and rfields and rfields[0] in ("cgroup", "cgroup2"):
                    if fields[3] == "/":
                        roots.add(Path(fields[4].encode().decode("unicode_escape")))
    except OSError:
        pass
    if CGROUP_FS.is_dir():
        for p in CGROUP_FS.iterdir():
            if p.is_dir():
                roots.add(p)
    return sorted(roots)


def parent_cgroups(inst):
    return [r / f"skiff-{inst}" for r in cgroup_roots() if (r / f"skiff-{inst}").is_dir()]


def sandbox_cgroups(inst):
    out = []
    for parent in parent_cgroups(inst):
        try:
            out += [str(p) for p in parent.iterdir() if p.is_dir() and p.name.startswith("sb-")]
        except OSError:
            pass
    return out


def instance_mounts(inst):
    pat = re.compile(rf"/run/skiff/{re.escape(inst)}(/|\s|$)")
    with open("/proc/self/mountinfo") as f:
        return [line.strip() for line in f if pat.search(line)]


def state_dirs(inst):
    d = RUN_DIR / inst
    try:
        return [str(p) for p in d.iterdir() if p.name.startswith(("sb-", ".new-"))]
    except FileNotFoundError:
        return []


def uid_slots(inst):
    out = []
    try:
        entries = list(UIDS_DIR.iterdir())
    except FileNotFoundError:
        return out
    for p in entries:
        try:
            owner = p.read_text()
        except OSError:
            continue
        if owner.startswith(inst + " "):
            out.append(f"{p}: {owner}")
    return out


def disk_subvolumes(inst, data_dir):
    """The instance's writable layers (btrfs subvolumes) on the data directory's disk."""
    try:
        return [str(p) for p in (Path(data_dir) / "disk" / inst).iterdir()]
    except OSError:
        return []


def image_holds(inst, data_dir):
    """Holds of the instance's sandboxes on image trees (files <store>/trees/<digest>.holds/
    <instance>_<sandbox id>): a sandbox that is gone must hold nothing. <data>/images is the
    store, or a symlink to it on the btrfs disk (<data>/disk/images, docs/IMAGES.md), which
    leads nowhere while the disk is not mounted."""
    trees = Path(data_dir) / "images" / "trees"
    try:
        return [str(h) for d in trees.glob("*.holds") for h in d.iterdir()
                if h.name.startswith(inst + "_")]
    except OSError:
        return []


def data_disk_leaks(data_dir):
    """The data directory's btrfs image still mounted, or a loop device still backed by it."""
    out = []
    mnt = str(Path(data_dir) / "disk")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and fields[4].encode().decode("unicode_escape") == mnt:
                out.append(f"mount {line.strip()}")
    img = str(Path(data_dir) / "disk.img")
    for b in Path("/sys/block").glob("loop*"):
        try:
            backing = (b / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue
        if backing == img or backing.startswith(img + " "):
            out.append(f"loop device /dev/{b.name} backed by {backing}")
    return out


def proc_state(pid):
    """The state letter of pid ('R', 'S', 'Z', ...), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return None


def proc_alive(pid):
    """A zombie counts as dead: it runs nothing and holds nothing but its pid."""
    s = proc_state(pid)
    return s is not None and s != "Z"


def proc_info(pid):
    """(ppid, comm, start_time_ticks) of pid, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    comm = data[data.index("(") + 1 : data.rindex(")")]
    rest = data.rpartition(")")[2].split()
    return int(rest[1]), comm, int(rest[19])


def read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def rss_kib(pid):
    """The resident memory of pid (VmRSS), in KiB; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def read_slowly(resp, pid, pause_s):
    """Read resp (a response of zero bytes) to its end in 256 KiB pieces, pausing pause_s after
    each, as a slow client would. Returns (bytes read, the highest VmRSS of pid seen meanwhile,
    in KiB)."""
    total, peak = 0, rss_kib(pid)
    while True:
        chunk = resp.read(256 * 1024)
        if not chunk:
            return total, peak
        assert chunk.count(0) == len(chunk)
        total += len(chunk)
        peak = max(peak, rss_kib(pid))
        time.sleep(pause_s)


def all_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def instance_processes(inst):
    """Live processes that belong to the instance: a skiff-box (or its cleanup helper, or a
    sandbox's init, which are forks of it) named by --instance or SKIFF_INSTANCE, or anything in
    the instance's cgroups."""
    me = os.getpid()
    found = []
    env_key = f"SKIFF_INSTANCE={inst}".encode()
    cg_key = f"/skiff-{inst}/".encode()
    for pid in all_pids():
        if pid == me or not proc_alive(pid):
            continue
        argv = read_bytes(f"/proc/{pid}/cmdline").split(b"\0")
        hit = any(
            (a == b"--instance" and i + 1 < len(argv) and argv[i + 1] == inst.encode())
            or a == b"--instance=" + inst.encode()
            for i, a in enumerate(argv)
        )
        hit = hit or env_key in read_bytes(f"/proc/{pid}/environ").split(b"\0")
        hit = hit or cg_key in read_bytes(f"/proc/{pid}/cgroup")
        if hit and proc_alive(pid):
            info = proc_info(pid)
            found.append(f"pid {pid} ({info[1] if info else '?'}): "
                         + " ".join(a.decode(errors="replace") for a in argv if a))
    return found


def instance_net_links(inst):
    """Host links of the instance's egress sandboxes (sk<inst>-e<slot>)."""
    try:
        return sorted(n for n in os.listdir("/sys/class/net") if n.startswith(f"sk{inst}-e"))
    except OSError:
        return []


_nft = None


def nft_run(cmd):
    """Run an nftables command through libnftables (no nft program needed): (rc, output).
    rc is None when the library is absent."""
    global _nft
    import ctypes
    if _nft is None:
        try:
            lib = ctypes.CDLL("libnftables.so.1")
        except OSError:
            _nft = False
            return None, ""
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        for f in ("nft_ctx_buffer_output", "nft_ctx_buffer_error", "nft_ctx_free"):
            getattr(lib, f).argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        _nft = lib
    if not _nft:
        return None, ""
    ctx = _nft.nft_ctx_new(0)
    try:
        _nft.nft_ctx_buffer_output(ctx)
        _nft.nft_ctx_buffer_error(ctx)
        rc = _nft.nft_run_cmd_from_buffer(ctx, cmd.encode())
        return rc, _nft.nft_ctx_get_output_buffer(ctx).decode()
    finally:
        _nft.nft_ctx_free(ctx)


def nft_table(inst):
    """The instance's nftables table (inet skiff_<inst>) as text, or None when absent."""
    rc, out = nft_run(f"list table inet skiff_{inst}")
    return out if rc == 0 else None


def leaks(inst, extra_pids=(), data_dir=None):
    """Everything of the instance still on the host, as readable lines (empty when clean)."""
    out = []
    if data_dir is not None:
        out += [f"subvolume {p}" for p in disk_subvolumes(inst, data_dir)]
        out += [f"image hold {h}" for h in image_holds(inst, data_dir)]
    out += [f"link {l}" for l in instance_net_links(inst)]
    if nft_table(inst) is not None:
        out.append(f"nftables table inet skiff_{inst}")
    out += [f"cgroup {p}" for p in sandbox_cgroups(inst)]
    out += [f"mount {m}" for m in instance_mounts(inst)]
    out += [f"state dir {d}" for d in state_dirs(inst)]
    out += [f"uid slot {s}" for s in uid_slots(inst)]
    out += [f"process {p}" for p in instance_processes(inst)]
    out += [f"process {p} started by the test" for p in extra_pids if proc_alive(p)]
    return out


def wait_no_leaks(inst, timeout=LEAK_GRACE_S, extra_pids=(), data_dir=None):
    """Poll until nothing of the instance is left; return what is left after timeout."""
    left = leaks(inst, extra_pids, data_dir)
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = leaks(inst, extra_pids, data_dir)
    return left


def sandbox_pids(inst):
    """Host pids of the processes in the instance's sandbox cgroups, with their start times
    (so that a recycled pid is never mistaken for one of them)."""
    out = set()
    for cg in sandbox_cgroups(inst):
        for line in read_bytes(f"{cg}/cgroup.procs").split():
            pid = int(line)
            info = proc_info(pid)
            if info:
                out.add((pid, info[2]))
    return out


def same_process_alive(pid, start):
    info = proc_info(pid)
    return info is not None and info[2] == start and proc_alive(pid)


def descendants(root_pid):
    """Live descendants of root_pid (by walking ppid links)."""
    children = {}
    for pid in all_pids():
        info = proc_info(pid)
        if info:
            children.setdefault(info[0], []).append(pid)
    out, todo = [], [root_pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return [p for p in out if proc_alive(p)]


def read_line(proc, timeout=15):
    """One line from a spawned skiff-box's stdout, or fail after timeout seconds (a sandbox
    that never says "ready" must not hang the suite). Reads the pipe unbuffered, so that a
    later communicate() sees everything after the line."""
    fd = proc.stdout.fileno()
    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            pytest.fail(f"no line from skiff-box within {timeout} s (got {line!r})")
        b = os.read(fd, 1)
        if not b:
            break
        line += b
    return line


# ---- running skiff-box ----


class Box:
    """Runs skiff-box with this session's instance and data directory."""

    def __init__(self, binary, instance, data_dir):
        self.binary = str(binary)
        self.instance = instance
        self.data_dir = str(data_dir)
        self.procs = []  # Popen objects started through spawn(), for the teardown check

    def env(self, extra=None):
        env = dict(os.environ)
        if NO_MKFS_BTRFS:
            # skiff-box would say on stderr, once per data directory, that it fell back to
            # tmpfs: asked for tmpfs, it says nothing (test_disk.py covers the note itself).
            env.setdefault("SKIFF_DISK_BACKEND", "tmpfs")
        env["SKIFF_INSTANCE"] = self.instance
        env["SKIFF_DATA"] = self.data_dir
        env.update(extra or {})
        return env

    def argv(self, *args):
        return [self.binary, "--instance", self.instance, *map(str, args)]

    def __call__(self, *args, input=None, timeout=DEFAULT_TIMEOUT_S, env=None, binary=False):
        """Run `skiff-box --instance <inst> ARGS...` to completion and return the
        CompletedProcess (stdout and stderr as str, or bytes with binary=True)."""
        if input is not None and not binary and isinstance(input, str):
            input = input.encode()
        kw = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
        p = subprocess.run(self.argv(*args), capture_output=True, timeout=timeout,
                           env=self.env(env), **kw)
        if not binary:
            p.stdout = p.stdout.decode(errors="replace")
            p.stderr = p.stderr.decode(errors="replace")
        return p

    def run(self, cmd, *opts, **kw):
        """Run cmd (a list) in a sandbox with options opts."""
        return self(*opts, "--", *cmd, **kw)

    def sh(self, script, *opts, **kw):
        """Run `sh -c script` in a sandbox with options opts."""
        return self(*opts, "--", "sh", "-c", script, **kw)

    def spawn(self, *args, **popen_kw):
        """Start skiff-box in the background; the test must end it (teardown kills leftovers)."""
        popen_kw.setdefault("stdin", subprocess.DEVNULL)
        popen_kw.setdefault("stdout", subprocess.PIPE)
        popen_kw.setdefault("stderr", subprocess.PIPE)
        p = subprocess.Popen(self.argv(*args), env=self.env(popen_kw.pop("env", None)),
                             **popen_kw)
        self.procs.append(p)
        return p

    def gc(self):
        return subprocess.run([self.binary, "gc", "--instance", self.instance],
                              capture_output=True, text=True, timeout=DEFAULT_TIMEOUT_S,
                              env=self.env(), stdin=subprocess.DEVNULL)


def new_instance(prefix="t"):
    """An instance id (prefix + 3 characters) that nothing on the host uses."""
    for _ in range(100):
        inst = prefix + "".join(random.choices(string.ascii_lowercase + string.digits, k=3))
        if (not (RUN_DIR / inst).exists() and not (RUN_DIR / f"{inst}.lock").exists()
                and not parent_cgroups(inst)):
            return inst
    raise RuntimeError("no unused instance id found")


def end_instance(b):
    """The end of an instance's tests: gc must leave nothing of it, parent cgroups, state
    directory and lock file included."""
    for p in b.procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    r = b.gc()
    # An autoclear loop device is released a moment after the unmount.
    wait_for(lambda: not data_disk_leaks(b.data_dir), LOOP_RELEASE_S)
    left = wait_no_leaks(b.instance, data_dir=b.data_dir) + data_disk_leaks(b.data_dir)
    assert r.returncode == 0, f"skiff-box gc failed ({r.returncode}): {r.stderr}"
    assert not left, "left after gc:\n" + "\n".join(left)
    assert not (Path(b.data_dir) / "disk" / b.instance).exists(), "instance's disk dir left"
    assert not parent_cgroups(b.instance), f"parent cgroups left: {parent_cgroups(b.instance)}"
    assert not (RUN_DIR / b.instance).exists(), f"{RUN_DIR / b.instance} left after gc"
    assert not (RUN_DIR / f"{b.instance}.lock").exists(), "instance lock file left after gc"


class SuidDumpable:
    """fs.suid_dumpable, a host-wide setting: set for as short a time as a test can, then put
    back (restore(), and at teardown whatever happens)."""
    PATH = "/proc/sys/fs/suid_dumpable"

    def __init__(self):
        with open(self.PATH) as f:
            self.old = f.read().strip()

    def set(self, v):
        with open(self.PATH, "w") as f:
            f.write(f"{v}\n")

    def restore(self):
        self.set(self.old)


@pytest.fixture
def suid_dumpable():
    sd = SuidDumpable()
    try:
        sd.restore()
    except OSError as e:
        pytest.skip(f"fs.suid_dumpable can't be set here: {e}")
    try:
        yield sd
    finally:
        sd.restore()


@pytest.fixture(scope="session")
def _session_box(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the skiff-box tests need root")
    if not SKIFF_BOX.is_file() or not os.access(SKIFF_BOX, os.X_OK):
        pytest.fail(f"{SKIFF_BOX} is missing: build it with `make` (or set SKIFF_BIN)",
                    pytrace=False)
    b = Box(SKIFF_BOX, new_instance("t"), tmp_path_factory.mktemp("skiff-data"))
    # One run first: it makes the busybox root, and a host without btrfs hears that layers
    # fall back to tmpfs here (said once per data directory), not in some test's stderr.
    r = b.run(["true"])
    assert r.returncode == 0, r.stderr
    yield b
    end_instance(b)


@pytest.fixture
def box(_session_box):
    return _session_box


@pytest.fixture(autouse=True)
def _no_leaks(request):
    """After each test, failed or not: nothing of the instance may be left."""
    b = request.getfixturevalue("_session_box")
    yield
    stray = [p for p in b.procs if p.poll() is None]
    for p in stray:
        p.kill()
        p.wait()
    pids = [p.pid for p in b.procs]
    b.procs.clear()
    left = wait_no_leaks(b.instance, extra_pids=pids, data_dir=b.data_dir)
    if left:
        # Clean up so that one test's leak does not fail every test after it.
        for line in left:
            m = re.match(r"process pid (\d+)", line)
            if m:
                try:
                    os.kill(int(m.group(1)), signal.SIGKILL)
                except OSError:
                    pass
        b.gc()
    msg = []
    if stray:
        msg.append(f"{len(stray)} skiff-box process(es) still running after the test (killed)")
    if left:
        msg.append("left behind by the test:\n  " + "\n  ".join(left))
    if msg:
        pytest.fail("\n".join(msg), pytrace=False)


@pytest.fixture(scope="session")
def busybox_root(_session_box):
    """The busybox root skiff-box makes under SKIFF_DATA on first use."""
    r = _session_box.run(["true"])
    assert r.returncode == 0, r.stderr
    root = Path(_session_box.data_dir) / "rootfs" / "busybox"
    assert (root / "bin" / "busybox").is_file()
    return root


@pytest.fixture
def custom_root(busybox_root, tmp_path):
    """A private copy of the busybox root, for --rootfs."""
    dst = tmp_path / "root"
    shutil.copytree(busybox_root, dst, symlinks=True)
    return dst


class PyRoot:
    def __init__(self, root, python):
        self.root = root
        self.python = python  # absolute path of the interpreter inside the root

    def cmd(self, code):
        return [self.python, "-I", "-S", "-c", code]


def _ldd(path):
    """The shared objects path needs, as absolute paths (as the loader names them)."""
    out = subprocess.run(["ldd", path], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        line = line.strip()
        m = re.match(r"\S+ => (/\S+)", line) or re.match(r"(/\S+) \(0x", line)
        if m:
            libs.append(m.group(1))
    return libs


def _copy_tree_linked(src, dst):
    """Copy a tree, hard-linking files where the filesystem allows it (fast, no data copied)."""

    def link_or_copy(s, d):
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    ignore = shutil.ignore_patterns("test", "tests", "idlelib", "tkinter", "turtledemo",
                                    "site-packages", "dist-packages", "ensurepip")
    shutil.copytree(src, dst, symlinks=True, ignore=ignore, copy_function=link_or_copy,
                    dirs_exist_ok=True)


@pytest.fixture(scope="session")
def pyroot(busybox_root, tmp_path_factory):
    """A root with busybox and this host's Python (interpreter, stdlib, the libraries it and
    ctypes load), for tests that need threads or raw system calls inside a sandbox."""
    if not shutil.which("ldd"):
        pytest.skip("ldd is missing: needed to build a root with Python")
    exe = os.path.realpath(sys.executable)
    stdlib = sysconfig.get_paths()["stdlib"]
    dynload = os.path.join(stdlib, "lib-dynload")
    ctypes_so = [os.path.join(dynload, n) for n in os.listdir(dynload) if n.startswith("_ctypes.")]
    if not os.path.isfile(os.path.join(stdlib, "os.py")) or not ctypes_so:
        pytest.skip(f"Python's stdlib or _ctypes is missing under {stdlib}")
    root = tmp_path_factory.mktemp("pyroot") / "root"
    shutil.copytree(busybox_root, root, symlinks=True)

    def put(path):
        dst = root / path.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            shutil.copy2(os.path.realpath(path), dst)

    put(exe)
    for lib in set(_ldd(exe) + _ldd(ctypes_so[0])):
        put(lib)
    _copy_tree_linked(stdlib, root / stdlib.lstrip("/"))
    return PyRoot(root, exe)


# ---- test hosts: a network namespace on a veth ----


def _ip(*argv, check=True):
    return subprocess.run(["ip", *argv], capture_output=True, text=True, check=check,
                          timeout=30)


def free_test_octet(prefixes, span):
    """A last octet N (10 <= N < 240) such that no prefix.N to prefix.(N + span - 1) of the
    given /24s is an address of the host, routed or a neighbour: not the test hosts of another
    run of the tests on the host (netns_hosts would fail on a route that exists, or quietly
    reach another run's host end), nor a real host where the uplink's own network is a TEST-NET
    (its /32 route would hide that host from the host). Chosen when the hosts are made, not
    when the module is imported."""
    text = ""
    for argv in (["route", "show", "table", "all"], ["neigh", "show"]):
        try:
            text += subprocess.run(["ip", "-4", *argv], capture_output=True, text=True,
                                   timeout=30).stdout
        except OSError:  # no iproute2: netns_hosts skips
            pass
    used = set(re.findall(r"(?<![\d.])(\d+\.\d+\.\d+\.\d+)(?![\d.])", text))
    free = [n for n in range(10, 240 - span + 1)
            if not any(f"{p}.{n + i}" in used for p in prefixes for i in range(span))]
    if not free:
        pytest.fail(f"no free test addresses in {prefixes}: {sorted(used)}", pytrace=False)
    return random.choice(free)


@contextlib.contextmanager
def netns_hosts(addrs, host_end):
    """Hosts of the test's own "internet": a network namespace holding addrs (TEST-NET /32s)
    on its eth0, joined to the host by a veth whose host end has host_end; the host routes
    exactly addrs to it, so that nothing meant for them leaves by the uplink. Yields
    {"ns", "host_end" (the link's name)}; run processes in it with `ip netns exec NS` and end
    them before the block ends. Removed at the end, failed or not, and checked gone."""
    if os.geteuid() != 0:
        pytest.skip("test hosts need root (a network namespace and a veth)")
    if not shutil.which("ip") or subprocess.run(["ip", "-V"], capture_output=True).returncode:
        pytest.skip("iproute2 (ip) is missing: the test hosts are made with it")
    tag = new_instance("e")
    ns, link = f"skiff-test-{tag}", f"skt{tag}h"
    try:
        _ip("netns", "add", ns)
        _ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("addr", "add", f"{host_end}/32", "dev", link)
        _ip("link", "set", link, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "link", "set", "eth0", "up")
        for a in addrs:
            _ip("-n", ns, "addr", "add", f"{a}/32", "dev", "eth0")
            _ip("route", "add", f"{a}/32", "dev", link)
        _ip("-n", ns, "route", "add", "default", "via", host_end, "dev", "eth0", "onlink")
        yield {"ns": ns, "host_end": link}
    finally:
        for a in addrs:
            _ip("route", "del", f"{a}/32", "dev", link, check=False)
        _ip("link", "del", link, check=False)
        _ip("netns", "del", ns, check=False)
        # Checked on every way out, a failed setup or test included (its error is kept as
        # this one's context).
        left = [p for p in (Path(f"/run/netns/{ns}"), Path(f"/sys/class/net/{link}"))
                if p.exists()]
        assert not left, f"test hosts left: {left}"


# ---- running skiffd dev ----

SKIFFD = BIN_DIR / "skiffd"
SKIFF = BIN_DIR / "skiff"


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Skiffd:
    """A `skiffd dev` of its own (data directory, port, runtime instance), driven over HTTP."""

    def __init__(self, data, instance, port):
        self.data = Path(data)
        self.instance = instance
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc = None
        self.token = None
        self.pool = 1
        self.deleted = set()
        self.log_path = self.data.parent / f"skiffd-{instance}.log"

    def start(self, pool=1, timeout=30, extra=(), env=None):
        """extra: more skiffd arguments; env: variables to add to skiffd's environment (limits
        lowered for a test)."""
        self.pool = pool
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(SKIFFD), "dev", "--data", str(self.data), "--listen",
             f"127.0.0.1:{self.port}", "--instance", self.instance, "--pool", str(pool),
             *extra],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
            env={**os.environ, **(env or {})})
        ok = wait_for(lambda: self._healthy() or self.proc.poll() is not None, timeout, 0.05)
        if self.proc.poll() is not None or not ok:
            pytest.fail(f"skiffd dev did not come up: {self.log_text()[-3000:]}", pytrace=False)
        self.token = (self.data / "admin.token").read_text().strip()
        # Ready means a worker is registered too.
        if not wait_for(lambda: self.workers_connected(), timeout, 0.05):
            pytest.fail(f"no worker registered: {self.log_text()[-3000:]}", pytrace=False)

    def workers_connected(self):
        s, body = self.api("GET", "/v1/workers")
        return s == 200 and any(w["connected"] for w in body["items"])

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _healthy(self):
        try:
            s, _ = self.api("GET", "/healthz", token=None, timeout=1)
            return s == 200
        except OSError:
            return False

    def stop(self, timeout=20):
        """SIGTERM; returns the exit status."""
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"skiffd did not stop within {timeout} s after SIGTERM", pytrace=False)
        finally:
            self.log.close()

    def raw(self, method, path, body=None, headers=None, timeout=60):
        """One request on a fresh connection: (status, headers, body bytes)."""
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    def api(self, method, path, body=None, token="", headers=None, timeout=60):
        """A JSON request with the admin token (token="") or the given one (None: no token):
        (status, parsed body)."""
        import json
        h = dict(headers or {})
        tok = self.token if token == "" else token
        if tok:
            h["Authorization"] = f"Bearer {tok}"
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        s, _, raw = self.raw(method, path, data, h, timeout)
        try:
            return s, json.loads(raw) if raw else None
        except ValueError:
            return s, raw

    def cleanup_sandboxes(self):
        """Delete every sandbox (admin sees every workspace); an ended one's output goes."""
        cursor = ""
        while True:
            s, body = self.api("GET", f"/v1/sandboxes?limit=1000{cursor}")
            if s != 200:
                return
            for sb in body["items"]:
                if sb["id"] not in self.deleted:
                    self.api("DELETE", f"/v1/sandboxes/{sb['id']}")
                    self.deleted.add(sb["id"])
            if not body["next_cursor"]:
                break
            cursor = f"&cursor={body['next_cursor']}"


def kill_all(box):
    """End every sandbox of the instance through the runtime (after skiffd is gone)."""
    import json
    r = subprocess.run([box.binary, "ls", "--instance", box.instance, "--json"],
                       capture_output=True, text=True, timeout=DEFAULT_TIMEOUT_S)
    try:
        items = json.loads(r.stdout) if r.returncode == 0 else []
    except ValueError:
        items = []
    for sb in items:
        subprocess.run([box.binary, "kill", "--instance", box.instance, sb["id"]],
                       capture_output=True, timeout=DEFAULT_TIMEOUT_S)


def _own_skiffd(tmp_path_factory, env=None, extra=()):
    """A skiffd dev for the session or a module (extra: more skiffd arguments): started, and at
    the end stopped with every sandbox and everything of its runtime instance gone."""
    if os.geteuid() != 0:
        pytest.skip("the skiffd tests need root")
    for b in (SKIFFD, SKIFF):
        if not b.is_file():
            pytest.fail(f"{b} is missing: build it with `make` (or set SKIFF_BIN)",
                        pytrace=False)
    d = Skiffd(tmp_path_factory.mktemp("skiffd") / "data", new_instance("a"), free_port())
    d.start(env=env, extra=extra)
    yield d
    rc = end_skiffd(d)
    assert rc == 0, f"skiffd exited {rc} after SIGTERM: {d.log_text()[-3000:]}"


def end_skiffd(d):
    """Every sandbox of d deleted, d stopped, and nothing of its instance left (end_instance),
    image holds included; skiffd's exit status."""
    if d.proc.poll() is None:
        try:
            d.cleanup_sandboxes()
        except OSError:
            pass  # skiffd died: what it left is ended below, and the test that saw it failed
    # Holds are looked at while skiffd runs: once it stops, the disk that holds the store (on a
    # data directory that is not btrfs) is unmounted, and <data>/images leads nowhere.
    held = not wait_for(lambda: not image_holds(d.instance, d.data), LEAK_GRACE_S)
    rc = d.stop()
    box = Box(SKIFF_BOX, d.instance, d.data)
    kill_all(box)
    end_instance(box)
    assert not held, "image holds left by removed sandboxes"
    return rc


@pytest.fixture(scope="session")
def _session_skiffd(tmp_path_factory):
    yield from _own_skiffd(tmp_path_factory)


# Limits lowered so that tests reach them in a moment (skiffd reads them from its environment).
LOW_LIMITS = {"SKIFF_MAX_TUNNELS_PER_WORKSPACE": "2",
              "SKIFF_MAX_STDIN_INFLIGHT_BYTES": str(256 * 1024),
              "SKIFF_MAX_BODIES_BYTES": str(6 * 1024 * 1024)}


@pytest.fixture(scope="module")
def _module_limited_skiffd(tmp_path_factory):
    yield from _own_skiffd(tmp_path_factory, LOW_LIMITS)


@pytest.fixture
def limited_skiffd(_module_limited_skiffd):
    """A skiffd of the module's with LOW_LIMITS; cleaned after each test like skiffd."""
    yield from _after_test(_module_limited_skiffd)


@pytest.fixture
def skiffd(_session_skiffd):
    """The session's skiffd. After the test, every sandbox it left running is deleted and the
    runtime instance must hold no more than the pool."""
    yield from _after_test(_session_skiffd)


def _after_test(d):
    yield d
    if d.proc.poll() is not None:
        pytest.fail(f"skiffd died during the test: {d.log_text()[-3000:]}", pytrace=False)
    d.cleanup_sandboxes()
    # What is left of the instance is its pool of ready sandboxes, no more.
    ok = wait_for(lambda: len({Path(c).name for c in sandbox_cgroups(d.instance)}) <= d.pool
                  and len(state_dirs(d.instance)) <= d.pool, 15)
    if not ok:
        pytest.fail(f"sandboxes left after the test: {state_dirs(d.instance)} "
                    f"{sandbox_cgroups(d.instance)}", pytrace=False)
