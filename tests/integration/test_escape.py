"""The escape suite: known container-escape and host-attack techniques, each tried from inside a
real sandbox, each asserting the exact outcome that shows the defence held.

Most tests run tests/probe/probe.c (skiff-probe, $SKIFF_PROBE) inside a busybox root as
/bin/probe: each of its subcommands tries one system call or attack and prints "ok" or
"err ERRNO". docs/SECURITY.md maps every defence to the tests here.

The module runs under a runtime instance of its own ('e' + 3 characters, its own data
directory), through conftest's fixtures: after each test nothing of that instance may be left on
the host (cgroups, mounts, state directories, uid slots, processes), and at the end `skiff-box gc`
must leave nothing.
"""

import fcntl
import hashlib
import os
import select
import shlex
import shutil
import signal
import socket
import stat
import struct
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import (REPO, RUN_DIR, SKIFF_BOX, Box, end_instance, new_instance, parent_cgroups,
                      proc_alive, sandbox_cgroups, sandbox_pids, state_dirs, tree_state,
                      wait_no_leaks)

PROBE = Path(os.environ.get("SKIFF_PROBE", str(REPO / "build" / "tests" / "skiff-probe")))

SIGSYS_EXIT = 128 + signal.SIGSYS  # killed by seccomp (bad architecture: kill the process)
SIGSEGV_EXIT = 128 + signal.SIGSEGV
NOFILE_MAX = 65536  # the most RLIMIT_NOFILE the runtime gives a sandbox (child.c)


# ---- fixtures: an instance of our own, a root with the probe ----


@pytest.fixture(scope="module")
def _session_box(tmp_path_factory):
    """Overrides conftest's fixture of this name for this module: the escape suite runs under an
    instance of its own. conftest's `box` hands it to the tests and its autouse leak check
    inspects it after each test."""
    if os.geteuid() != 0:
        pytest.skip("the escape suite needs root")
    for f in (SKIFF_BOX, PROBE):
        if not f.is_file() or not os.access(f, os.X_OK):
            pytest.fail(f"{f} is missing: build it with `make` (or set SKIFF_BIN/SKIFF_PROBE)",
                        pytrace=False)
    b = Box(SKIFF_BOX, new_instance("e"), tmp_path_factory.mktemp("skiff-escape-data"))
    yield b
    end_instance(b)


@pytest.fixture(scope="module")
def root(_session_box, tmp_path_factory):
    """A copy of the busybox root skiff-box makes, with the probe as /bin/probe."""
    r = _session_box.run(["true"])
    assert r.returncode == 0, r.stderr
    dst = tmp_path_factory.mktemp("escape-root") / "root"
    shutil.copytree(Path(_session_box.data_dir) / "rootfs" / "busybox", dst, symlinks=True)
    shutil.copy2(PROBE, dst / "bin" / "probe")
    return dst


@pytest.fixture
def host_sleep():
    """A host process for the sandbox to attack; the test checks it survives."""
    p = subprocess.Popen(["sleep", "300"])
    yield p.pid
    p.kill()
    p.wait()


@pytest.fixture
def marker():
    """A file on the host that no sandbox may reach."""
    path = Path("/tmp") / f"skiff-escape-marker-{uuid.uuid4().hex}"
    path.write_text("host secret\n")
    yield path
    path.unlink()


# ---- helpers ----


def probe(box, root, *args, opts=()):
    """Run `probe ARGS` alone in a sandbox; return its one line of output."""
    r = box.run(["probe", *map(str, args)], "--rootfs", root, *opts)
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r.stdout.strip()


def probes(box, root, calls, opts=()):
    """Run `probe ARGS` for each ARGS in calls, one after another in one sandbox; return
    {" ".join(ARGS): output}."""
    script = "; ".join(
        "echo \"#> $(probe " + " ".join(shlex.quote(str(a)) for a in c) + " 2>&1)\""
        for c in calls)
    r = box.sh(script, "--rootfs", root, *opts)
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    outs = [line[3:] for line in r.stdout.splitlines() if line.startswith("#> ")]
    assert len(outs) == len(calls), r.stdout
    return {" ".join(map(str, c)): o for c, o in zip(calls, outs)}


def file_state(path):
    """What an attack on path could change: content, mode, owner, links, mtime."""
    st = os.lstat(path)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest() if stat.S_ISREG(
        st.st_mode) else None
    return (digest, st.st_mode, st.st_uid, st.st_gid, st.st_nlink, st.st_mtime_ns)


def spawn(box, *args, **kw):
    """Start skiff-box in the background with unbuffered pipes (so that read_line's select
    never misses a line already read ahead into a buffer)."""
    return box.spawn(*args, bufsize=0, **kw)


def read_line(proc, timeout=30):
    """The next line from a spawned skiff-box's stdout, or fail after timeout seconds."""
    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        r, _, _ = select.select([proc.stdout], [], [], max(0, deadline - time.monotonic()))
        assert r, f"no line from the sandbox in time (got {line!r})"
        c = proc.stdout.read(1)
        assert c, f"the sandbox's output ended (got {line!r})"
        line += c
    return line.decode().strip()


def host_ipv4_addresses():
    """Every IPv4 address of the host's interfaces."""
    out = set()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _, name in socket.if_nameindex():
            try:
                req = struct.pack("256s", name.encode()[:15])
                res = fcntl.ioctl(s.fileno(), 0x8915, req)  # SIOCGIFADDR
                out.add(socket.inet_ntoa(res[20:24]))
            except OSError:
                pass  # no IPv4 address
    finally:
        s.close()
    return sorted(out)


def sandbox_cgroup_file(inst, name):
    """The first sandbox cgroup file called name of the instance (any hierarchy), or None."""
    for cg in sandbox_cgroups(inst):
        p = Path(cg) / name
        if p.exists():
            return p
    return None


# ---- writing through /proc/self/exe and /proc/1/{exe,root} (CVE-2019-5736 and kin) ----


def test_proc_self_exe_not_writable(box, root):
    before = file_state(root / "bin" / "probe")
    assert probe(box, root, "open-wr", "/proc/self/exe") == "err ETXTBSY"
    assert file_state(root / "bin" / "probe") == before


def test_runtime_binary_unreachable_through_proc_1_exe(box, root):
    # pid 1 is our init, a fork of skiff-box: its exe is the host's binary. init is not
    # dumpable, so its magic links are closed to the sandbox.
    before = file_state(SKIFF_BOX)
    out = probes(box, root, [("open-wr", "/proc/1/exe"), ("read", "/proc/1/exe"),
                              ("readlink", "/proc/1/exe"), ("readlink", "/proc/1/cwd")])
    assert out == {"open-wr /proc/1/exe": "err EACCES", "read /proc/1/exe": "err EACCES",
                   "readlink /proc/1/exe": "err EACCES", "readlink /proc/1/cwd": "err EACCES"}
    assert file_state(SKIFF_BOX) == before


def test_proc_1_root_is_not_the_host_root(box, root, marker):
    out = probes(box, root, [
        ("stat", f"/proc/1/root{marker}"),
        ("readlink", "/proc/1/root"),
        ("write", "/proc/1/root/tmp/evil"),
        ("open-wr", "/proc/1/root/etc/passwd"),
        ("stat", f"/proc/self/root{marker}"),
        ("stat", str(marker)),
        ("readlink", "/proc/self/root"),
        ("stat", "/proc/self/root/bin/probe"),
    ])
    assert out == {
        f"stat /proc/1/root{marker}": "err EACCES",
        "readlink /proc/1/root": "err EACCES",
        "write /proc/1/root/tmp/evil": "err EACCES",
        "open-wr /proc/1/root/etc/passwd": "err EACCES",
        # Our own root (what init's would be too) is the sandbox's: the host's file isn't there.
        f"stat /proc/self/root{marker}": "err ENOENT",
        f"stat {marker}": "err ENOENT",
        "readlink /proc/self/root": "ok /",
        "stat /proc/self/root/bin/probe": "ok reg 0:0",
    }


def test_runtime_memory_unreachable_through_init(box, root):
    # init shares the runtime's address space (CLONE_VM): a write into init's memory would be a
    # write into a host root process. Every way in is closed.
    out = probes(box, root, [("open-wr", "/proc/1/mem"), ("read", "/proc/1/mem"),
                              ("read", "/proc/1/maps"), ("process_vm_writev", 1),
                              ("process_vm_readv", 1), ("ptrace-attach", 1)])
    assert out == {"open-wr /proc/1/mem": "err EACCES", "read /proc/1/mem": "err EACCES",
                   "read /proc/1/maps": "err EACCES", "process_vm_writev 1": "err EPERM",
                   "process_vm_readv 1": "err EPERM", "ptrace-attach 1": "err EPERM"}


def test_runtime_environment_unreadable_through_proc_1_environ(box, root):
    r = box.run(["probe", "read", "/proc/1/environ"], "--rootfs", root,
                 env={"SKIFF_ESCAPE_SECRET": "hunter2"})
    assert (r.returncode, r.stdout) == (0, "err EACCES\n"), r.stderr


def test_chroot_escape_stays_in_sandbox(box, root, marker):
    # The classic double chroot climbs to the sandbox's root, never past it (pivot_root and
    # the old root detached: there is nothing above).
    out = probes(box, root, [("chroot-escape", marker), ("chroot-escape", REPO),
                              ("chroot-escape", "/bin/probe")])
    assert out == {f"chroot-escape {marker}": "err ENOENT", f"chroot-escape {REPO}": "err ENOENT",
                   "chroot-escape /bin/probe": "ok"}


# ---- mount and remount tricks ----


def test_mount_tmpfs_denied(box, root):
    assert probe(box, root, "mount-fs", "tmpfs", "/tmp") == "err EPERM"


def test_remount_root_denied(box, root):
    out = probes(box, root, [("remount", "/", "ro"), ("remount", "/", "rw")])
    assert out == {"remount / ro": "err EPERM", "remount / rw": "err EPERM"}


def test_unmask_proc_sys_denied(box, root):
    out = probes(box, root, [("umount", "/proc/sys"), ("remount", "/proc/sys", "rw"),
                              ("umount", "/proc")])
    assert out == {"umount /proc/sys": "err EPERM", "remount /proc/sys rw": "err EPERM",
                   "umount /proc": "err EPERM"}


def test_unmask_masked_proc_files_denied(box, root):
    masked = [n for n in ("kcore", "keys", "sysrq-trigger", "timer_list", "sched_debug")
              if os.path.exists(f"/proc/{n}")]
    assert masked, "none of the masked /proc files exists on this host"
    calls = []
    for n in masked:
        calls += [("stat", f"/proc/{n}"), ("umount", f"/proc/{n}"),
                  ("bind", "/proc/self/status", f"/proc/{n}")]
    out = probes(box, root, calls)
    expected = {}
    for n in masked:
        expected[f"stat /proc/{n}"] = "ok chr 1:3"  # /dev/null bound over it
        expected[f"umount /proc/{n}"] = "err EPERM"
        expected[f"bind /proc/self/status /proc/{n}"] = "err EPERM"
    assert out == expected


def test_mount_proc_and_sysfs_again_denied(box, root):
    out = probes(box, root, [("mount-fs", "proc", "/tmp"), ("mount-fs", "sysfs", "/tmp")])
    assert out == {"mount-fs proc /tmp": "err EPERM", "mount-fs sysfs /tmp": "err EPERM"}


def test_new_mount_api_denied(box, root):
    out = probes(box, root, [("fsopen",), ("open_tree",), ("move_mount",), ("pivot_root",)])
    assert out == {"fsopen": "err EPERM", "open_tree": "err EPERM", "move_mount": "err EPERM",
                   "pivot_root": "err EPERM"}


# ---- open_by_handle_at (the "shocker" escape) ----


def test_open_by_handle_at_denied(box, root):
    out = probes(box, root, [("open_by_handle_at",), ("name_to_handle_at",)])
    assert out == {"open_by_handle_at": "err EPERM", "name_to_handle_at": "err EPERM"}


# ---- device nodes ----


def test_mknod_char_device_denied(box, root):
    assert probe(box, root, "mknod-char") == "err EPERM"


def test_mknod_block_device_denied(box, root):
    assert probe(box, root, "mknod-block") == "err EPERM"


def test_host_device_nodes_unchangeable(box, root):
    # /dev/null and friends are the host's nodes bound in: their owner (host root) is not
    # mapped in the sandbox, so not even a no-op chmod is allowed.
    before = os.stat("/dev/null")
    r = box.sh("chmod 666 /dev/null; echo $?; chown 0:0 /dev/zero; echo $?", "--rootfs", root)
    assert r.stdout == "1\n1\n", r.stderr
    assert r.stderr.count("Operation not permitted") == 2, r.stderr
    after = os.stat("/dev/null")
    assert (after.st_mode, after.st_uid, after.st_gid) == (before.st_mode, before.st_uid,
                                                           before.st_gid)


# ---- ptrace and other ways into another process ----


def test_ptrace_init_denied(box, root):
    out = probes(box, root, [("ptrace-attach", 1), ("process_vm_readv", 1)])
    assert out == {"ptrace-attach 1": "err EPERM", "process_vm_readv 1": "err EPERM"}


def test_ptrace_host_process_denied(box, root, host_sleep):
    out = probes(box, root, [("ptrace-attach", host_sleep), ("process_vm_readv", host_sleep),
                              ("ptrace-traceme",)])
    assert out == {f"ptrace-attach {host_sleep}": "err EPERM",
                   f"process_vm_readv {host_sleep}": "err EPERM", "ptrace-traceme": "err EPERM"}
    assert proc_alive(host_sleep)


def test_ptrace_sibling_in_sandbox_denied(box, root):
    r = box.sh("sleep 30 & p=$!; probe ptrace-attach $p; kill $p", "--rootfs", root)
    assert (r.returncode, r.stdout) == (0, "err EPERM\n"), r.stderr


def test_steal_runtime_socket_from_init_denied(box, root):
    # init holds its socket to the runtime as fd 3: pidfd_getfd would hand it over.
    out = probes(box, root, [("pidfd-getfd", 1, 3), ("ls", "/proc/1/fd"),
                              ("readlink", "/proc/1/fd/3")])
    assert out == {"pidfd-getfd 1 3": "err EPERM", "ls /proc/1/fd": "err EACCES",
                   "readlink /proc/1/fd/3": "err EACCES"}


# ---- cgroup release_agent (CVE-2022-0492 and the notify_on_release escape) ----


def test_cgroupfs_not_mountable(box, root):
    out = probes(box, root, [("mount-fs", "cgroup", "/tmp", "rdma"),
                              ("mount-fs", "cgroup", "/tmp", "memory"),
                              ("mount-fs", "cgroup2", "/tmp")])
    assert out == {"mount-fs cgroup /tmp rdma": "err EPERM",
                   "mount-fs cgroup /tmp memory": "err EPERM", "mount-fs cgroup2 /tmp": "err EPERM"}


def test_release_agent_unwritable(box, root):
    out = probes(box, root, [("ls", "/sys/fs/cgroup"), ("write", "/sys/fs/cgroup/release_agent"),
                              ("write", "/sys/fs/release_agent")])
    # /sys/fs/cgroup is sysfs' empty mount point (it can hold nothing); sysfs is read-only.
    assert out == {"ls /sys/fs/cgroup": "ok 0", "write /sys/fs/cgroup/release_agent": "err ENOENT",
                   "write /sys/fs/release_agent": "err EROFS"}


def test_cgroup_namespace_hides_host_cgroups(box, root):
    r = box.run(["cat", "/proc/self/cgroup"], "--rootfs", root)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines and all(line.endswith(":/") for line in lines), r.stdout


# ---- core_pattern, sysrq and other kernel-wide knobs ----


def test_core_pattern_write_denied(box, root):
    before = Path("/proc/sys/kernel/core_pattern").read_text()
    out = probes(box, root, [("write-str", "/proc/sys/kernel/core_pattern", "|/tmp/evil"),
                              ("write", "/proc/sys/kernel/core_pattern")])
    # Permission first (the file is the host root's), the read-only mount behind it (O_TRUNC
    # asks the mount for write access before the permission check).
    assert out == {"write-str /proc/sys/kernel/core_pattern |/tmp/evil": "err EACCES",
                   "write /proc/sys/kernel/core_pattern": "err EROFS"}
    assert Path("/proc/sys/kernel/core_pattern").read_text() == before


def test_sysrq_trigger_write_goes_nowhere(box, root):
    if os.path.exists("/proc/sysrq-trigger"):
        expected = {"stat /proc/sysrq-trigger": "ok chr 1:3",
                    "write-str /proc/sysrq-trigger h": "ok",  # into /dev/null
                    "write-str /proc/sys/kernel/sysrq 1": "err EACCES"}
    else:  # this kernel has no sysrq: the sandbox has none either
        expected = {"stat /proc/sysrq-trigger": "err ENOENT",
                    "write-str /proc/sysrq-trigger h": "err ENOENT",
                    "write-str /proc/sys/kernel/sysrq 1": "err ENOENT"}
    out = probes(box, root, [("stat", "/proc/sysrq-trigger"),
                              ("write-str", "/proc/sysrq-trigger", "h"),
                              ("write-str", "/proc/sys/kernel/sysrq", "1")])
    assert out == expected


def test_usermode_helper_paths_unwritable(box, root):
    # modprobe and uevent_helper name programs the kernel runs as host root.
    paths = {"/proc/sys/kernel/modprobe": "err EACCES", "/sys/kernel/uevent_helper": "err EROFS"}
    expected = {f"write-str {p} /tmp/evil": (e if os.path.exists(p) else "err ENOENT")
                for p, e in paths.items()}
    out = probes(box, root, [("write-str", p, "/tmp/evil") for p in paths])
    assert out == expected


def test_oom_score_adj_lowering_denied(box, root):
    # A sandbox that made itself unkillable would have the OOM killer pick host processes.
    out = probes(box, root, [("write-str", "/proc/self/oom_score_adj", "-1000"),
                              ("write-str", "/proc/1/oom_score_adj", "-1000")])
    assert out == {"write-str /proc/self/oom_score_adj -1000": "err EACCES",
                   "write-str /proc/1/oom_score_adj -1000": "err EACCES"}


# ---- keyring, BPF and other kernel interfaces ----


@pytest.mark.parametrize("call", ["keyctl", "add_key", "request_key", "bpf", "perf_event_open",
                                  "io_uring", "userfaultfd", "kexec_load", "init_module",
                                  "finit_module", "syslog"])
def test_kernel_interface_denied(box, root, call):
    assert probe(box, root, call) == "err EPERM"


def test_proc_keys_masked(box, root):
    if not os.path.exists("/proc/keys"):
        pytest.skip("this kernel has no /proc/keys")
    assert probe(box, root, "stat", "/proc/keys") == "ok chr 1:3"


def test_nftables_denied(box, root):
    # nf_tables bugs (CVE-2022-1015, CVE-2024-1086) are reached from a user namespace with
    # CAP_NET_ADMIN; the sandbox has none, so the kernel refuses every nf_tables message.
    out = probes(box, root, [("nftables",), ("lo-down",)])
    assert out == {"nftables": "err EPERM", "lo-down": "err EPERM"}


# ---- new namespaces: unshare, clone, clone3, setns ----


@pytest.mark.parametrize("ns", ["user", "mnt", "pid", "net", "uts", "ipc", "cgroup", "time"])
def test_new_namespace_denied(box, root, ns):
    out = probes(box, root, [("unshare", ns), ("clone", ns), ("clone3-ns", ns),
                              ("setns-ns", ns)])
    # clone3's flags are out of seccomp's sight: it is ENOSYS, so libc falls back to clone.
    assert out == {f"unshare {ns}": "err EPERM", f"clone {ns}": "err EPERM",
                   f"clone3-ns {ns}": "err ENOSYS", f"setns-ns {ns}": "err EPERM"}


def test_x32_syscall_abi_killed(box, root):
    # The x32 numbers (bit 30 set) would reach the same kernel code past a filter that only
    # knows the x86_64 numbers: seccomp kills the process.
    r = box.run(["probe", "x32"], "--rootfs", root)
    assert (r.returncode, r.stdout) == (SIGSYS_EXIT, ""), r.stderr


def test_i386_syscall_abi_killed(box, root):
    # int 0x80 from a 64-bit process uses the i386 numbers (unshare is 310 there). Where the
    # kernel runs 32-bit calls at all, seccomp kills the process; where it doesn't (this host
    # decides), the instruction faults.
    host = subprocess.run([str(PROBE), "int80", "20"], capture_output=True, text=True)
    assert host.returncode in (0, -signal.SIGSEGV), host
    expected = SIGSYS_EXIT if host.returncode == 0 else SIGSEGV_EXIT
    r = box.run(["probe", "int80", "310", hex(0x10000000)], "--rootfs", root)
    assert (r.returncode, r.stdout) == (expected, ""), r.stderr


# ---- symlink and hardlink races on the way out ----


def test_state_dir_out_of_reach(box, root):
    # The runtime touches the host after start only in /run/skiff/<inst>/<id>/ and in cgroup
    # directories: neither is visible inside, and the state directory is root's alone.
    p = spawn(box, "--rootfs", root, "--", "sh", "-c",
                   "probe stat /run/skiff; probe stat /sys/fs/cgroup/pids; probe ls /run; "
                   "echo ready; read x", stdin=subprocess.PIPE)
    lines = [read_line(p) for _ in range(4)]
    try:
        image_run = len(os.listdir(root / "run"))
        assert lines == ["err ENOENT", "err ENOENT", f"ok {image_run}", "ready"]
        dirs = state_dirs(box.instance)
        assert len(dirs) == 1, dirs
        d = Path(dirs[0])
        assert sorted(os.listdir(d)) == ["lock"]
        st = os.stat(d)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o700)
        st = os.stat(d / "lock")
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)
    finally:
        p.stdin.write(b"\n")
        p.stdin.close()
    assert p.wait(timeout=30) == 0


PLANT = """
for n in lock upper work lower root cgroup.procs release_agent notify_on_release tasks; do
    ln -sf /etc/shadow /$n; ln -sf /etc/shadow /tmp/$n; ln -sf /etc/shadow /dev/shm/$n
done
mkdir -p /run/skiff/{inst}
ln -sf /etc/shadow /run/skiff/{inst}/lock; ln -sf / /run/skiff/{inst}/sb-x; ln -sf /etc /upper2
ln /etc/passwd /tmp/hardlink
ln /etc/shadow /tmp/hardlink2 2>/dev/null || echo no-shadow
echo planted
"""


def _host_targets():
    return {p: file_state(p) for p in ("/etc/shadow", "/etc/passwd", "/etc/hostname")
            if os.path.exists(p)}


def test_planted_links_leave_host_untouched(box, root):
    host_before = _host_targets()
    root_before = tree_state(root)
    r = box.sh(PLANT.format(inst=box.instance), "--rootfs", root)
    assert (r.returncode, r.stdout) == (0, "no-shadow\nplanted\n"), r.stderr
    assert wait_no_leaks(box.instance) == []
    assert _host_targets() == host_before
    assert tree_state(root) == root_before
    assert os.listdir(RUN_DIR / box.instance) == []


def test_planted_links_then_runtime_killed(box, root):
    # The cleanup helper, not skiff-box, tears this one down.
    host_before = _host_targets()
    root_before = tree_state(root)
    p = spawn(box, "--rootfs", root, "--", "sh", "-c",
                   PLANT.format(inst=box.instance) + "sleep 60")
    assert read_line(p) == "no-shadow"
    assert read_line(p) == "planted"
    p.kill()
    p.wait()
    assert wait_no_leaks(box.instance) == []
    assert _host_targets() == host_before
    assert tree_state(root) == root_before
    assert os.listdir(RUN_DIR / box.instance) == []


# ---- fd leaks from the runtime into the sandbox ----


def test_no_fd_leaks_into_sandbox(box, root, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("host secret\n")
    fd = os.open(secret, os.O_RDONLY)
    try:
        # skiff-box itself inherits an open host file: nothing of it may reach the sandbox.
        script = f"probe fds; probe read /proc/self/fd/{fd}; probe fds"
        p = subprocess.run(box.argv("--rootfs", root, "--", "sh", "-c", script),
                           capture_output=True, text=True, env=box.env(), timeout=60,
                           pass_fds=(fd,), stdin=subprocess.DEVNULL)
    finally:
        os.close(fd)
    assert (p.returncode, p.stdout) == (0, "0\nerr ENOENT\n0\n"), p.stderr


# ---- signals to host processes ----


def test_kill_host_process_esrch(box, root, host_sleep):
    out = probes(box, root, [("kill", host_sleep, 9), ("kill", host_sleep, 0),
                              ("kill", os.getpid(), 9)])
    assert out == {f"kill {host_sleep} 9": "err ESRCH", f"kill {host_sleep} 0": "err ESRCH",
                   f"kill {os.getpid()} 9": "err ESRCH"}
    assert proc_alive(host_sleep)


def test_kill_all_from_inside_spares_host(box, root, host_sleep):
    # kill(-1, SIGKILL) reaches every process the sender may signal: in its pid namespace,
    # that is the sandbox's own (but init) and nothing else.
    r = box.sh("sleep 100 & sleep 100 & kill -9 -1; wait; echo done", "--rootfs", root,
                timeout=30)
    assert (r.returncode, r.stdout) == (0, "done\n"), r.stderr
    assert proc_alive(host_sleep)


def test_kill_init_from_inside_ignored(box, root):
    # A pid namespace's init takes from inside only the signals it handles: SIGKILL and
    # SIGSTOP are dropped, so the sandbox's init (and with it the sandbox) carries on.
    r = box.sh("probe kill 1 9; probe kill 1 19; sleep 0.1; grep State: /proc/1/status",
                "--rootfs", root)
    assert (r.returncode, r.stdout) == (0, "ok\nok\nState:\tS (sleeping)\n"), r.stderr


# ---- other sandboxes ----


def test_other_sandbox_unreachable(box, root):
    token = uuid.uuid4().hex
    a = spawn(box, "--rootfs", root, "--", "sh", "-c",
                   f"echo {token} > /tmp/a-secret; echo {token} > /dev/shm/a-secret; "
                   "echo ready; read x", stdin=subprocess.PIPE)
    try:
        assert read_line(a) == "ready"
        a_pids = sorted(pid for pid, _ in sandbox_pids(box.instance))
        assert a_pids
        kills = "; ".join(f"probe kill {pid} 0" for pid in a_pids)
        script = (
            "test -e /tmp/a-secret && echo tmp-visible; "
            "test -e /dev/shm/a-secret && echo shm-visible; "
            "for f in /proc/[0-9]*/root/tmp/a-secret; do test -e $f && echo proc-visible; done; "
            f"find / -xdev -name 'a-secret*'; grep -rl {token} /tmp /dev/shm /run /var; "
            "n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo $n; " + kills)
        r = box.sh(script, "--rootfs", root)
        # Only its own processes (init and the shell); every pid of the other sandbox: ESRCH.
        assert r.stdout == "2\n" + "err ESRCH\n" * len(a_pids), r.stderr
    finally:
        a.stdin.write(b"\n")
        a.stdin.close()
    assert a.wait(timeout=30) == 0


# ---- exhausting host resources ----


def test_fork_bomb_bounded_host_can_fork(box, root):
    p = spawn(box, "--rootfs", root, "--pids", "32", "--", "sh", "-c",
                   "probe fork-bomb; echo ready; read x", stdin=subprocess.PIPE)
    try:
        # init, sh and the probe leave room for 29 children; they wait, holding their pids.
        assert read_line(p) == "29 EAGAIN"
        assert read_line(p) == "ready"
        cur = sandbox_cgroup_file(box.instance, "pids.current")
        if cur:
            assert int(cur.read_text()) == 31  # init, sh and the 29
        # The host still forks, and the instance's parent cgroup bounds all sandboxes together.
        assert subprocess.run(["true"]).returncode == 0
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
        agg = [c / "pids.max" for c in parent_cgroups(box.instance) if (c / "pids.max").exists()]
        for f in agg:
            assert int(f.read_text()) <= pid_max * 3 // 4
    finally:
        p.stdin.write(b"\n")
        p.stdin.close()
    assert p.wait(timeout=30) == 0


def test_memory_hog_oom_killed(box, root):
    r = box.run(["probe", "memory", "256"], "--rootfs", root, "--memory", "64")
    assert (r.returncode, r.stdout) == (137, ""), r.stderr
    assert "out of memory" in r.stderr
    assert subprocess.run(["true"]).returncode == 0


def test_memory_hog_through_tmpfs_bounded(box, root):
    # Files in /dev/shm are memory: charged to the sandbox, so they can't outgrow its limit.
    r = box.run(["dd", "if=/dev/zero", "of=/dev/shm/fill", "bs=1M", "count=256"], "--rootfs",
                 root, "--memory", "64")
    assert r.returncode == 137, (r.stdout, r.stderr)
    assert "out of memory" in r.stderr


def test_fd_exhaustion_stops_at_rlimit(box, root):
    r = box.sh("ulimit -n; probe fill-fds", "--rootfs", root)
    assert r.returncode == 0, r.stderr
    limit, filled = r.stdout.splitlines()
    assert 0 < int(limit) <= NOFILE_MAX
    # fds 0, 1 and 2 are open: the rest of the limit, then EMFILE.
    assert filled == f"{int(limit) - 3} EMFILE"
    with open("/dev/null") as f:
        assert f.fileno() >= 0


# ---- credentials, /proc/sys, /sys, terminal, host name, network ----


def test_setuid_to_unmapped_uid_fails(box, root):
    assert probe(box, root, "setuid-host") == "err EINVAL"


def test_proc_sys_writes_fail(box, root):
    out = probes(box, root, [("write-str", "/proc/sys/kernel/hostname", "evil"),
                              ("write-str", "/proc/sys/vm/drop_caches", "3"),
                              ("write-str", "/proc/sys/net/ipv4/ip_forward", "1"),
                              ("write", "/proc/sys/kernel/hostname"),
                              ("write", "/proc/sys/evil")])
    assert out == {"write-str /proc/sys/kernel/hostname evil": "err EACCES",
                   "write-str /proc/sys/vm/drop_caches 3": "err EACCES",
                   "write-str /proc/sys/net/ipv4/ip_forward 1": "err EACCES",
                   "write /proc/sys/kernel/hostname": "err EROFS",
                   "write /proc/sys/evil": "err ENOENT"}


def test_sys_read_only(box, root):
    # lo's attributes belong to the sandbox's own network namespace (its root owns them): only
    # the read-only mount stops the write.
    out = probes(box, root, [("write-str", "/sys/class/net/lo/mtu", "1000"),
                              ("write", "/sys/evil"), ("write", "/sys/kernel/evil")])
    assert out == {"write-str /sys/class/net/lo/mtu 1000": "err EROFS",
                   "write /sys/evil": "err EROFS", "write /sys/kernel/evil": "err EROFS"}


def test_tiocsti_denied(box, root):
    # Given a terminal as stdin, the sandbox must not type into it.
    master, slave = os.openpty()
    try:
        p = subprocess.run(box.argv("--rootfs", root, "--", "probe", "tiocsti"), stdin=slave,
                           capture_output=True, text=True, env=box.env(), timeout=60)
        assert (p.returncode, p.stdout) == (0, "err EPERM\n"), p.stderr
        r, _, _ = select.select([master], [], [], 0.2)
        typed = os.read(master, 1024) if r else b""
        assert b"x" not in typed
    finally:
        os.close(master)
        os.close(slave)


def test_sethostname_denied(box, root):
    host = socket.gethostname()
    r = box.sh("probe sethostname; hostname", "--rootfs", root, "--hostname", "box")
    assert (r.returncode, r.stdout) == (0, "err EPERM\nbox\n"), r.stderr
    assert socket.gethostname() == host


def test_host_loopback_and_addresses_unreachable(box, root):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        srv.bind(("0.0.0.0", 0))  # every host address, 127.0.0.1 included
        srv.listen(8)
        srv.setblocking(False)
        port = srv.getsockname()[1]
        addrs = host_ipv4_addresses()
        assert "127.0.0.1" in addrs
        out = probes(box, root, [("connect", a, port) for a in addrs])
        # The sandbox's 127.0.0.1 is its own (nothing listens there); no other address exists.
        assert out == {f"connect {a} {port}": "err ECONNREFUSED" if a.startswith("127.")
                       else "err ENETUNREACH" for a in addrs}
        with pytest.raises(BlockingIOError):
            srv.accept()
    finally:
        srv.close()


# ---- defences added after review ----


def test_vsock_denied(box, root):
    # vsock ignores network namespaces: it would reach the hypervisor or other guests.
    assert probe(box, root, "vsock") == "err EPERM"


def test_personality_restricted_to_dockers_values(box, root):
    out = probes(box, root, [("personality", "0"), ("personality", "8"),
                             ("personality", "ffffffff"), ("personality", "40000"),
                             ("personality", "400000")])
    assert out == {"personality 0": "ok", "personality 8": "ok", "personality ffffffff": "ok",
                   # ADDR_NO_RANDOMIZE and READ_IMPLIES_EXEC help exploits
                   "personality 40000": "err EPERM", "personality 400000": "err EPERM"}


def test_syscalls_newer_than_the_profile_get_enosys(box, root):
    # x86_64 numbers past the last call libseccomp 2.5.4 knows (456): lsm_set_self_attr (460),
    # mseal (462), a number no kernel has yet (1000). A denylist must not allow what it has
    # never heard of; ENOSYS makes libc fall back.
    out = probes(box, root, [("syscall-nr", "460"), ("syscall-nr", "462"), ("syscall-nr", "1000"),
                             ("syscall-nr", "39")])
    assert out == {"syscall-nr 460": "err ENOSYS", "syscall-nr 462": "err ENOSYS",
                   "syscall-nr 1000": "err ENOSYS", "syscall-nr 39": "ok"}  # 39: getpid


@pytest.mark.parametrize("name,target", [("proc", "."), ("dev", "/dev"), ("sys", "/"),
                                         ("tmp", "/etc")])
def test_image_symlink_where_the_runtime_mounts_refused(box, root, tmp_path, name, target):
    # mount follows symlinks: an image whose /proc points at its root would get procfs over /
    # with nothing masked, and a /tmp pointing at the host's /etc must not be chmod'ed.
    img = tmp_path / "img"
    shutil.copytree(root, img, symlinks=True)
    shutil.rmtree(img / name)
    (img / name).symlink_to(target)
    etc_before = file_state("/etc")
    r = box.run(["true"], "--rootfs", img)
    assert r.returncode == 125, (r.returncode, r.stderr)
    assert f"the image's /{name}: Not a directory" in r.stderr
    assert file_state("/etc") == etc_before


def test_oom_of_init_never_takes_the_runtime(box, root):
    # Files in /dev/shm are charged to the sandbox but belong to no process, so the OOM killer
    # picks init here (the largest process left; dmesg names skiff-init). init owns its memory:
    # the kernel kills every process sharing its victim's memory, so were init's shared with
    # skiff-box, skiff-box could die with it (exit -9, nothing reported). Whatever the victim,
    # the sandbox must end as out of memory and skiff-box must say so.
    for _ in range(3):
        r = box.run(["probe", "fill-shm"], "--rootfs", root, "--memory", "24")
        assert r.returncode == 137, (r.returncode, r.stderr)
        assert "out of memory" in r.stderr


def test_vsock_with_high_bits_denied(box, root):
    # The kernel reads the family as an int: 0x1_00000028 is AF_VSOCK to it.
    assert probe(box, root, "vsock-high-bits") == "err EPERM"
