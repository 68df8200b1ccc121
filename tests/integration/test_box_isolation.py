"""Isolation, checked from inside real sandboxes: processes, files, /proc, /dev, capabilities,
seccomp, user namespace and id mapping, the read-only image, network and host name."""

import errno
import os
import platform
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import REPO, descendants, read_line, tree_state, wait_for

DOCKER_DEFAULT_CAPS = "00000000a80425fb"


def ok(r):
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r.stdout


# ---- processes and files ----


def test_only_sandbox_processes_visible(box):
    # A shell loop runs no other process: the sandbox holds init (1) and the shell (2).
    out = ok(box.sh("for p in /proc/[0-9]*; do echo ${p#/proc/}; done"))
    assert sorted(int(p) for p in out.split()) == [1, 2]


def test_ps_shows_only_sandbox(box):
    out = ok(box.run(["ps"]))
    lines = out.splitlines()
    pids = sorted(int(line.split()[0]) for line in lines[1:])
    assert pids == [1, 2], out
    assert " ps" in lines[-1] or lines[-1].endswith("ps"), out


def test_host_pid_namespace_unreachable(box):
    # The host's init and this test's process are not there to signal.
    r = box.sh(f"kill -0 {os.getpid()} 2>/dev/null && echo visible; echo done")
    assert ok(r) == "done\n"


def test_host_files_invisible(box, tmp_path):
    marker = Path("/tmp") / f"skiff-marker-{uuid.uuid4().hex}"
    marker.write_text("host secret\n")
    try:
        r = box.sh(f"test -e {marker} && echo visible; test -e {REPO} && echo repo; "
                   f"test -e {tmp_path} && echo tmp; ls -A /tmp; echo end")
        assert ok(r) == "end\n"
    finally:
        marker.unlink()


def test_root_is_the_image(box):
    out = ok(box.run(["ls", "/"]))
    assert set(out.split()) >= {"bin", "etc", "proc", "dev", "tmp"}
    assert ok(box.run(["cat", "/etc/hostname"])) == "sandbox\n"


# ---- /proc, /sys, /dev ----

PROC_MASKED = ["kcore", "keys", "sysrq-trigger", "timer_list", "sched_debug", "latency_stats",
               "timer_stats"]


def test_proc_masked_paths(box):
    present = [n for n in PROC_MASKED if os.path.exists(f"/proc/{n}")]
    if not present:
        pytest.skip("none of the masked /proc files exists on this host")
    script = "; ".join(f'echo "{n} $(cat /proc/{n} | wc -c)"' for n in present)
    out = ok(box.sh(script))
    assert out.splitlines() == [f"{n} 0" for n in present]


def test_proc_masked_dirs(box):
    present = [d for d in ("acpi", "scsi") if os.path.isdir(f"/proc/{d}")]
    if not present:
        pytest.skip("/proc/acpi and /proc/scsi are absent on this host")
    for d in present:
        assert ok(box.run(["ls", "-A", f"/proc/{d}"])) == ""


def test_proc_sys_read_only(box):
    r = box.sh("echo evil > /proc/sys/kernel/hostname")
    assert r.returncode != 0
    assert "Read-only file system" in r.stderr
    r = box.sh("echo 1 > /proc/sys/vm/drop_caches")
    assert r.returncode != 0
    # still readable
    assert ok(box.run(["cat", "/proc/sys/kernel/ostype"])) == "Linux\n"


def test_proc_sysrq_trigger_harmless(box):
    if not os.path.exists("/proc/sysrq-trigger"):
        pytest.skip("/proc/sysrq-trigger is absent on this host")
    # Masked: the write goes to /dev/null (or fails); either way nothing happens to the host.
    box.sh("echo h > /proc/sysrq-trigger")
    assert ok(box.run(["cat", "/proc/sysrq-trigger"])) == ""


def test_sys_read_only(box):
    r = box.sh("mkdir /sys/evil || touch /sys/evil")
    assert r.returncode != 0


def test_dev_minimal(box):
    out = ok(box.run(["ls", "-A", "/dev"]))
    assert set(out.split()) == {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm",
                                "ptmx", "fd", "stdin", "stdout", "stderr"}


def test_dev_nodes_work(box):
    script = ("echo x > /dev/null && echo null-ok; "
              "head -c 4 /dev/zero | od -An -tx1; "
              "head -c 16 /dev/urandom | wc -c; "
              "echo x > /dev/full || echo full-fails")
    r = box.sh(script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:4] == ["null-ok", " 00 00 00 00", "16", "full-fails"]
    assert "No space left on device" in r.stderr


def test_mknod_device_denied(box):
    r = box.sh("mknod /tmp/sda b 8 0 || exit 9; head -c 1 /tmp/sda")
    assert r.returncode == 9, (r.returncode, r.stderr)


def test_shm_writable(box):
    assert ok(box.sh("echo hi > /dev/shm/x && cat /dev/shm/x")) == "hi\n"


# ---- credentials, capabilities, seccomp ----


def status_fields(text):
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def test_capabilities_docker_default(box):
    st = status_fields(ok(box.run(["cat", "/proc/self/status"])))
    assert st["CapEff"] == DOCKER_DEFAULT_CAPS
    assert st["CapPrm"] == DOCKER_DEFAULT_CAPS
    assert st["CapBnd"] == DOCKER_DEFAULT_CAPS
    assert st["CapAmb"] == "0000000000000000"


def test_inheritable_capabilities_empty(box):
    # Docker empties the inheritable set (CVE-2022-24769): with it full, a program with
    # inheritable file capabilities would gain them even when run by a non-root user.
    st = status_fields(ok(box.run(["cat", "/proc/self/status"])))
    assert st["CapInh"] == "0000000000000000"


def test_no_new_privs_and_seccomp(box):
    st = status_fields(ok(box.run(["cat", "/proc/self/status"])))
    assert st["NoNewPrivs"] == "1"
    assert st["Seccomp"] == "2"


def test_network_namespace_is_the_sandboxs_own(box):
    # Without egress, init makes the network namespace itself (after the runtime's part): the
    # command must still find only its own loopback, in the kernel's view and in sysfs, which
    # the root filesystem mounts after that.
    r = box.run(["sh", "-c", "readlink /proc/self/ns/net; ls /sys/class/net; "
                 "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"])
    assert r.returncode == 0, r.stderr
    ns, *names = r.stdout.split()
    assert ns.startswith("net:[") and ns != os.readlink("/proc/self/ns/net"), r.stdout
    assert names == ["lo", "lo"], r.stdout


def test_init_has_no_capabilities(box):
    st = status_fields(ok(box.run(["cat", "/proc/1/status"])))
    assert st["CapEff"] == "0000000000000000"
    assert st["NoNewPrivs"] == "1"
    assert st["Seccomp"] == "2"


def test_unshare_denied(box):
    r = box.run(["unshare", "-U", "true"])
    assert r.returncode != 0
    assert "Operation not permitted" in r.stderr
    r = box.run(["unshare", "-n", "true"])
    assert r.returncode != 0
    assert "Operation not permitted" in r.stderr


def test_mount_denied(box):
    r = box.sh("mkdir -p /mnt && mount -t tmpfs x /mnt")
    assert r.returncode != 0
    assert "permission denied" in r.stderr.lower() or "not permitted" in r.stderr
    r = box.sh("mount -o remount,rw /")
    assert r.returncode != 0


def test_chroot_allowed_but_contained(box):
    # CAP_SYS_CHROOT is in Docker's set: chroot works, inside the sandbox's root.
    out = ok(box.sh("chroot / /bin/sh -c 'echo in-chroot'"))
    assert out == "in-chroot\n"


def test_busybox_tools_available(box):
    out = ok(box.sh("for t in sh ls cat ps nc ip dd mount unshare id hostname sleep; do "
                    "command -v $t >/dev/null || echo missing $t; done; echo end"))
    assert out == "end\n"


# ---- user namespace and id mapping ----


def uid_map_base(text):
    fields = text.split()
    assert len(fields) == 3, text
    inside, base, count = map(int, fields)
    assert inside == 0 and count == 65536, text
    return base


def test_uid_gid_map(box):
    out = ok(box.sh("cat /proc/self/uid_map; echo --; cat /proc/self/gid_map; echo --; id"))
    uid_map, gid_map, ident = out.split("--\n")
    base = uid_map_base(uid_map)
    assert uid_map_base(gid_map) == base
    assert base >= 65536, "the host range must be unprivileged, far from real users"
    assert ident.startswith("uid=0(root) gid=0(root)")


def test_each_sandbox_own_range(box):
    a = uid_map_base(ok(box.run(["cat", "/proc/self/uid_map"])))
    # Three at once: each holds its range while the others start.
    procs = [box.spawn("--", "sh", "-c", "cat /proc/self/uid_map; exec sleep 30")
             for _ in range(3)]
    try:
        bases = [uid_map_base(read_line(p).decode()) for p in procs]
    finally:
        for p in procs:
            p.terminate()
            p.wait()
    assert len(set(bases)) == 3, bases
    assert a > 0


def test_sandbox_runs_as_unprivileged_host_uid(box):
    p = box.spawn("--", "sh", "-c", "cat /proc/self/uid_map; echo ready; exec sleep 30")
    try:
        base = uid_map_base(read_line(p).decode())
        assert read_line(p) == b"ready\n"
        sleeper = wait_for(lambda: [d for d in descendants(p.pid)
                                    if Path(f"/proc/{d}/comm").read_text().strip() == "sleep"],
                           10)
        assert sleeper, "the sandbox's sleep is not visible from the host"
        st = status_fields(Path(f"/proc/{sleeper[0]}/status").read_text())
        assert st["Uid"].split() == [str(base)] * 4
        assert st["Gid"].split() == [str(base)] * 4
        # Its capabilities are its own user namespace's, not the host's.
        assert os.readlink(f"/proc/{sleeper[0]}/ns/user") != os.readlink("/proc/self/ns/user")
        p.terminate()  # forwarded: sleep dies of SIGTERM
        assert p.wait(timeout=10) == 143
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_image_root_files_owned_by_root(box):
    out = ok(box.sh("ls -ln /bin/busybox; stat -c '%u %g' /etc/passwd /etc"))
    fields = out.splitlines()[0].split()
    assert fields[2:4] == ["0", "0"], out
    assert out.splitlines()[1:] == ["0 0", "0 0"]


def test_image_non_root_owner_mapped(box, custom_root):
    f = custom_root / "owned"
    f.write_text("x")
    os.chown(f, 1000, 1001)
    assert ok(box.run(["stat", "-c", "%u %g", "/owned"], "--rootfs", custom_root)) == "1000 1001\n"


def test_created_files_owned_by_root_inside(box):
    out = ok(box.sh("touch /newfile /tmp/f; mkdir /d; stat -c '%u %g' /newfile /tmp/f /d"))
    assert out.splitlines() == ["0 0"] * 3


def test_chown_inside(box):
    out = ok(box.sh("touch /f && chown 1234:2345 /f && stat -c '%u %g' /f"))
    assert out == "1234 2345\n"


def test_writable_layer_private(box):
    # The sandbox's writable layer is mounted in its own mount namespace: nothing of it shows
    # under the sandbox's state directory on the host (a btrfs layer lives under the data
    # directory, which is root's alone).
    token = uuid.uuid4().hex
    p = box.spawn("--", "sh", "-c", f"echo {token} > /written; echo ready; exec sleep 30")
    try:
        assert read_line(p) == b"ready\n"
        inst_dir = Path("/run/skiff") / box.instance
        found = []
        for dirpath, _, files in os.walk(inst_dir):
            for n in files:
                if n == "written":
                    found.append(os.path.join(dirpath, n))
        assert not found, found
        sb_dirs = [d for d in inst_dir.iterdir() if d.name.startswith("sb-")]
        assert len(sb_dirs) == 1
        assert sorted(os.listdir(sb_dirs[0])) == ["lock"]
    finally:
        p.kill()
        p.wait()


# ---- the image is read-only underneath ----


def test_rootfs_unchanged_by_writes(box, custom_root):
    before = tree_state(custom_root)
    passwd = (custom_root / "etc" / "passwd").read_bytes()
    script = ("echo new > /bin/newfile && rm /etc/passwd && echo changed >> /etc/group && "
              "chmod 700 /bin && rm /bin/ls && mkdir /newdir && "
              "cat /bin/newfile && test ! -e /etc/passwd && echo ok")
    out = ok(box.sh(script, "--rootfs", custom_root))
    assert out == "new\nok\n"
    assert tree_state(custom_root) == before
    assert (custom_root / "etc" / "passwd").read_bytes() == passwd
    # and the next sandbox starts from the image again
    out = ok(box.sh("test -e /bin/newfile && echo leaked; cat /etc/passwd | head -1",
                    "--rootfs", custom_root))
    assert out == "root:x:0:0:root:/root:/bin/sh\n"


def test_default_image_unchanged_by_writes(box, busybox_root):
    before = tree_state(busybox_root)
    ok(box.sh("rm -f /bin/busybox.bak; echo x > /etc/passwd; rm /bin/ls; touch /evil"))
    assert tree_state(busybox_root) == before


# ---- network ----


def test_only_loopback(box):
    out = ok(box.sh("cat /proc/net/dev"))
    ifaces = {line.split(":")[0].strip() for line in out.splitlines()[2:]}
    assert ifaces == {"lo"}
    out = ok(box.run(["ip", "-o", "link", "show", "lo"]))
    assert "UP" in out.split("<")[1].split(">")[0].split(",")
    out = ok(box.run(["ip", "-o", "-4", "addr", "show", "lo"]))
    assert "127.0.0.1/8" in out
    assert ok(box.run(["ip", "route"])) == "", "no route out of the sandbox"


def test_loopback_tcp_and_low_port(box):
    script = ("nc -l -p 80 > /tmp/got & "
              "i=0; until echo hello | nc -w 2 127.0.0.1 80; do "
              "i=$((i+1)); [ $i -ge 100 ] && exit 9; sleep 0.05; done; "
              "wait; cat /tmp/got")
    r = box.sh(script, "--timeout", "30")
    assert (r.returncode, r.stdout) == (0, "hello\n"), r.stderr


class HostServer:
    """A TCP server on the host's loopback that counts the connections it accepts."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = False
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            try:
                c.sendall(b"host-secret\n")
            finally:
                c.close()

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


def test_host_loopback_service_unreachable(box):
    srv = HostServer()
    try:
        # the server works from the host
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as c:
            assert c.recv(100) == b"host-secret\n"
        assert wait_for(lambda: srv.accepted == 1, 5)
        r = box.sh(f"echo hi | nc -w 2 127.0.0.1 {srv.port}; echo rc=$?")
        assert r.returncode == 0
        assert "host-secret" not in r.stdout
        assert r.stdout.strip().endswith("rc=1"), r.stdout
        time.sleep(0.1)
        assert srv.accepted == 1, "a connection from the sandbox reached the host's loopback"
    finally:
        srv.close()


def test_abstract_unix_socket_of_host_unreachable(box):
    # Abstract unix sockets belong to the network namespace: the host's are out of reach.
    name = f"skiff-test-{uuid.uuid4().hex}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind("\0" + name)
    s.listen(1)
    try:
        out = ok(box.sh("cat /proc/net/unix"))
        assert name not in out
    finally:
        s.close()


# ---- host name ----


def test_hostname_isolated(box):
    host = socket.gethostname()
    r = box.sh("hostname changed-inside 2>/dev/null; hostname", "--hostname", "inner")
    assert r.returncode == 0
    assert r.stdout.strip() in ("inner", "changed-inside")
    assert r.stdout.strip() != host
    assert socket.gethostname() == host


# ---- with Python inside: raw system calls and threads ----

X86_64_SYSCALLS = {
    # name: (number, expected errno)
    "mount": (165, errno.EPERM),
    "umount2": (166, errno.EPERM),
    "pivot_root": (155, errno.EPERM),
    "unshare": (272, errno.EPERM),
    "setns": (308, errno.EPERM),
    "clone3": (435, errno.ENOSYS),
    "io_uring_setup": (425, errno.EPERM),
    "io_uring_enter": (426, errno.EPERM),
    "io_uring_register": (427, errno.EPERM),
    "keyctl": (250, errno.EPERM),
    "add_key": (248, errno.EPERM),
    "request_key": (249, errno.EPERM),
    "bpf": (321, errno.EPERM),
    "perf_event_open": (298, errno.EPERM),
    "userfaultfd": (323, errno.EPERM),
    "kexec_load": (246, errno.EPERM),
    "kexec_file_load": (320, errno.EPERM),
    "init_module": (175, errno.EPERM),
    "finit_module": (313, errno.EPERM),
    "delete_module": (176, errno.EPERM),
    "ptrace": (101, errno.EPERM),
    "process_vm_readv": (310, errno.EPERM),
    "process_vm_writev": (311, errno.EPERM),
    "reboot": (169, errno.EPERM),
    "swapon": (167, errno.EPERM),
    "swapoff": (168, errno.EPERM),
    "open_by_handle_at": (304, errno.EPERM),
    "name_to_handle_at": (303, errno.EPERM),
    "fsopen": (430, errno.EPERM),
    "fsmount": (432, errno.EPERM),
    "fspick": (433, errno.EPERM),
    "open_tree": (428, errno.EPERM),
    "move_mount": (429, errno.EPERM),
    "mount_setattr": (442, errno.EPERM),
    "syslog": (103, errno.EPERM),
    "acct": (163, errno.EPERM),
    "settimeofday": (164, errno.EPERM),
    "clock_settime": (227, errno.EPERM),
    "clock_adjtime": (305, errno.EPERM),
    "iopl": (172, errno.EPERM),
    "ioperm": (173, errno.EPERM),
    "quotactl": (179, errno.EPERM),
    "vhangup": (153, errno.EPERM),
    "kcmp": (312, errno.EPERM),
    "pidfd_getfd": (438, errno.EPERM),
    "lookup_dcookie": (212, errno.EPERM),
    "uselib": (134, errno.EPERM),
    "ustat": (136, errno.EPERM),
    "sysfs": (139, errno.EPERM),
    "get_mempolicy": (239, errno.EPERM),
    "set_mempolicy": (238, errno.EPERM),
    "mbind": (237, errno.EPERM),
    "move_pages": (279, errno.EPERM),
    "migrate_pages": (256, errno.EPERM),
    "fanotify_init": (300, errno.EPERM),
    "nfsservctl": (180, errno.EPERM),
}

SYSCALL_PROBE = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
for line in sys.stdin.read().split():
    name, nr = line.split("=")
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(int(nr)), ctypes.c_long(0), ctypes.c_long(0),
                     ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))
    if r == 0 and name.startswith("clone"):
        os._exit(0)  # a child: never reached when the call is denied
    print(name, r, ctypes.get_errno(), flush=True)
"""


@pytest.fixture
def x86_64():
    if platform.machine() != "x86_64":
        pytest.skip("the syscall numbers here are x86_64's")


def test_denied_syscalls_errno(box, pyroot, x86_64):
    stdin = " ".join(f"{n}={nr}" for n, (nr, _) in X86_64_SYSCALLS.items())
    r = box.run(pyroot.cmd(SYSCALL_PROBE), "--rootfs", pyroot.root, input=stdin)
    assert r.returncode == 0, r.stderr
    got = {}
    for line in r.stdout.splitlines():
        name, ret, err = line.split()
        got[name] = (int(ret), int(err))
    wrong = {n: (got.get(n), errno.errorcode[e])
             for n, (_, e) in X86_64_SYSCALLS.items() if got.get(n) != (-1, e)}
    assert not wrong, f"(ret, errno) differs from the expected errno: {wrong}"


CLONE_NS_PROBE = r"""
import ctypes, os, signal
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
flags = {"NEWUSER": 0x10000000, "NEWNS": 0x00020000, "NEWPID": 0x20000000,
         "NEWNET": 0x40000000, "NEWUTS": 0x04000000, "NEWIPC": 0x08000000,
         "NEWCGROUP": 0x02000000, "NEWTIME": 0x00000080}
for name, f in flags.items():
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(56), ctypes.c_long(f | signal.SIGCHLD), ctypes.c_long(0),
                     ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))
    if r == 0:
        os._exit(0)
    if r > 0:
        os.waitpid(r, 0)
    print(name, r, ctypes.get_errno(), flush=True)
"""


def test_clone_with_namespace_flags_denied(box, pyroot, x86_64):
    r = box.run(pyroot.cmd(CLONE_NS_PROBE), "--rootfs", pyroot.root)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 8, r.stdout
    for line in lines:
        name, ret, err = line.split()
        assert (int(ret), int(err)) == (-1, errno.EPERM), line


THREADS_PROBE = r"""
import os, threading
results = []
lock = threading.Lock()
def work(i):
    s = sum(range(20000 * (i + 1)))
    with lock:
        results.append((i, threading.get_native_id()))
threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
for t in threads: t.start()
for t in threads: t.join()
tids = {tid for _, tid in results}
pid = os.fork()
if pid == 0:
    os._exit(3)
_, status = os.waitpid(pid, 0)
print(len(results), len(tids) > 1, os.waitstatus_to_exitcode(status))
"""


def test_threads_work(box, pyroot):
    r = box.run(pyroot.cmd(THREADS_PROBE), "--rootfs", pyroot.root)
    assert (r.returncode, r.stdout, r.stderr) == (0, "16 True 3\n", "")


def test_io_uring_unavailable_to_python(box, pyroot, x86_64):
    # Denied with EPERM, not merely unimplemented: a sandbox can't probe its way in.
    code = ("import ctypes; l=ctypes.CDLL(None, use_errno=True); "
            "p=ctypes.create_string_buffer(120); "
            "r=l.syscall(425, 8, p); print(r, ctypes.get_errno())")
    r = box.run(pyroot.cmd(code), "--rootfs", pyroot.root)
    assert (r.returncode, r.stdout) == (0, f"-1 {errno.EPERM}\n")
