"""Detached sandboxes: `skiff-box --detach`, `exec`, `kill`, `ls`, `gc`; what survives the
process that started a sandbox or an exec, pids that could be recycled, crashes, and two
instances on one host. Every test kills the sandboxes it made, failed or not (the `detached`
fixture), so that the autouse leak check sees an empty instance."""

import json
import os
import re
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import (DEFAULT_TIMEOUT_S, REPO, RUN_DIR, SKIFF_BOX, Box, descendants,
                      end_instance, new_instance, proc_alive, proc_info, same_process_alive,
                      sandbox_cgroups, sandbox_pids, state_dirs, uid_slots, wait_for,
                      wait_no_leaks)

ID_RE = re.compile(r"sb-[0-9A-HJKMNP-TV-Z]{26}")  # sb- and 26 Crockford base32 characters


def sub(b, cmd, *args, input=None, timeout=DEFAULT_TIMEOUT_S, binary=False, **kw):
    """Run `skiff-box CMD --instance <inst> ARGS...` (a subcommand must come first)."""
    if input is None:
        kw.setdefault("stdin", subprocess.DEVNULL)
    elif isinstance(input, str):
        input = input.encode()
    p = subprocess.run([b.binary, cmd, "--instance", b.instance, *map(str, args)],
                       capture_output=True, timeout=timeout, env=b.env(), input=input, **kw)
    if not binary:
        p.stdout = p.stdout.decode(errors="replace")
        p.stderr = p.stderr.decode(errors="replace")
    return p


def exec_(b, sbid, *cmd, opts=(), **kw):
    return sub(b, "exec", *opts, sbid, "--", *cmd, **kw)


def spawn_exec(b, sbid, *cmd, **popen_kw):
    """Start `skiff-box exec` in the background (registered with the box for teardown)."""
    popen_kw.setdefault("stdin", subprocess.DEVNULL)
    popen_kw.setdefault("stdout", subprocess.DEVNULL)
    popen_kw.setdefault("stderr", subprocess.PIPE)
    p = subprocess.Popen([b.binary, "exec", "--instance", b.instance, sbid, "--", *cmd],
                         env=b.env(), **popen_kw)
    b.procs.append(p)
    return p


def ls(b):
    """`skiff-box ls --json` as {id: entry}."""
    r = sub(b, "ls", "--json")
    assert r.returncode == 0, r.stderr
    items = json.loads(r.stdout)
    assert isinstance(items, list), r.stdout
    return {e["id"]: e for e in items}


def one_line(stderr):
    lines = stderr.splitlines()
    assert len(lines) == 1 and stderr.endswith("\n"), f"expected one line on stderr: {stderr!r}"
    assert lines[0].startswith("skiff-box: "), lines[0]
    return lines[0]


def state_dir(b, sbid):
    return RUN_DIR / b.instance / sbid


def read_init(b, sbid):
    """(pid, start time, uid slot) from the sandbox's 'init' record (its pids limit follows)."""
    pid, start, slot = (state_dir(b, sbid) / "init").read_text().split()[:3]
    return int(pid), int(start), int(slot)


def events(b, sbid):
    try:
        return (state_dir(b, sbid) / "events").read_text().splitlines()
    except FileNotFoundError:
        return []


def procs_named(b, comm):
    """(host pid, start time) of the instance's sandboxed processes called comm."""
    # One look per process: one that exits between two looks must not break the listing.
    return sorted(x for x in sandbox_pids(b.instance)
                  if (proc_info(x[0]) or (None, None))[1] == comm)


def top_shells(b):
    """The instance's sandboxed `sh` processes whose parent is not a `sh` (a shell's fork is
    called sh too until it execs)."""
    out = []
    for pid, start in procs_named(b, "sh"):
        info = proc_info(pid)
        parent = proc_info(info[0]) if info else None
        if parent and parent[1] != "sh":
            out.append((pid, start))
    return out


def ns_pid(pid):
    """pid's pid in its innermost pid namespace (the last NSpid field)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    raise AssertionError(f"no NSpid in /proc/{pid}/status")


def file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return -1


def grows(path, within=2.0):
    """True when path's size goes up within `within` seconds."""
    s0 = file_size(path)
    return bool(wait_for(lambda: file_size(path) > s0, within))


class Detached:
    """Starts detached sandboxes and, at teardown, kills every one it started (a test's failure
    must not leave them to the leak check)."""

    def __init__(self):
        self.made = []  # (box, id)

    def start(self, b, *cmd, opts=(), timeout=15, env=None):
        argv = b.argv(*opts, "--detach", *(("--", *cmd) if cmd else ()))
        t0 = time.monotonic()
        try:
            # capture_output: returns only once nothing holds our stdout/stderr pipes.
            r = subprocess.run(argv, capture_output=True, timeout=timeout, env=b.env(env),
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            m = ID_RE.search((e.stdout or b"").decode(errors="replace"))
            if m:
                self.made.append((b, m.group(0)))
            pytest.fail(f"skiff-box --detach did not return within {timeout} s "
                        f"(stdout {e.stdout!r}): does the sandbox hold its stdio?")
        elapsed = time.monotonic() - t0
        out = r.stdout.decode(errors="replace")
        m = ID_RE.search(out)
        if m:
            self.made.append((b, m.group(0)))
        assert r.returncode == 0, f"--detach failed ({r.returncode}): {r.stderr!r}"
        assert ID_RE.fullmatch(out.rstrip("\n")) and out.count("\n") == 1, \
            f"--detach printed {out!r}, not one sandbox id"
        assert r.stderr == b"", r.stderr
        return out.strip(), elapsed

    def __call__(self, b, *cmd, opts=(), env=None):
        return self.start(b, *cmd, opts=opts, env=env)[0]

    def cleanup(self):
        for b, sbid in self.made:
            if state_dir(b, sbid).exists():
                sub(b, "kill", sbid)


@pytest.fixture
def detached(box):
    d = Detached()
    try:
        yield d
    finally:
        d.cleanup()


def assert_gone(b, sbid, procs=()):
    """Nothing of sandbox sbid is left: not listed, no state, no cgroups, no processes."""
    assert sbid not in ls(b)
    assert not state_dir(b, sbid).exists(), sorted(os.listdir(state_dir(b, sbid)))
    cgs = [c for c in sandbox_cgroups(b.instance) if c.endswith("/" + sbid)]
    assert cgs == [], cgs
    gone = wait_for(lambda: not any(same_process_alive(*p) for p in procs), 10)
    assert gone, f"still running: {[p for p in procs if same_process_alive(*p)]}"


# ---- detach, ls, exec, kill ----


def test_detach_prints_id_returns_and_ls_shows_it_running(box, detached):
    sbid, elapsed = detached.start(box)
    assert elapsed < 5, f"--detach took {elapsed:.2f} s"
    entries = ls(box)
    assert list(entries) == [sbid]
    e = entries[sbid]
    pid, start, _ = read_init(box, sbid)
    assert (e["state"], e["pid"], e["command"]) == ("running", pid, "")
    assert "exit_code" not in e
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", e["created_at"]), e
    # The pid is the sandbox's init, in the sandbox's cgroups, with the recorded start time
    # (once it has exec'd skiff-init, which names itself right after the exec).
    assert wait_for(lambda: proc_info(pid)[1:] == ("skiff-init", start), 10), proc_info(pid)
    assert (pid, start) in sandbox_pids(box.instance)
    # Nothing of the sandbox holds a host terminal or our pipes: init's stdio are /dev/null and
    # the state directory's files.
    fds = {n: os.readlink(f"/proc/{pid}/fd/{n}") for n in ("0", "1", "2")}
    assert fds == {"0": "/dev/null", "1": str(state_dir(box, sbid) / "stdout"),
                   "2": str(state_dir(box, sbid) / "stderr")}
    # The plain listing too.
    r = sub(box, "ls")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATE", "EXIT", "CREATED", "COMMAND"]
    assert [ln.split()[:3] for ln in lines[1:]] == [[sbid, "running", "-"]]


def status_fields(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def test_idle_init_is_skiff_init_small_and_closed(box, detached):
    # A detached sandbox's init execs skiff-init once its command runs: a small program of its
    # own instead of a copy of its starter, with no capabilities and not dumpable (the sandbox
    # can't read its memory, maps or executable).
    sbid = detached(box, "sh", "-c", "sleep 1000")
    pid, start, _ = read_init(box, sbid)
    exe = os.path.join(os.path.dirname(box.binary), "skiff-init")
    assert wait_for(lambda: os.readlink(f"/proc/{pid}/exe") == exe, 10), os.readlink(
        f"/proc/{pid}/exe")
    assert proc_info(pid)[2] == start  # the same process: an exec keeps pid and start time
    st = status_fields(pid)
    assert (st["CapPrm"], st["CapEff"], st["NoNewPrivs"]) == ("0" * 16, "0" * 16, "1"), st
    assert st["Seccomp"] == "2", st
    # Its own pages: a static program's few, not the starter's heap and libraries.
    anon = int(st["RssAnon"].split()[0])
    assert anon < 256, st["RssAnon"]
    # From inside: pid 1 is there but closed.
    r = exec_(box, sbid, "sh", "-c",
              "cat /proc/1/comm; readlink /proc/1/exe; cat /proc/1/maps; cat /proc/1/environ")
    assert r.stdout == "skiff-init\n", r  # readlink printed nothing: it failed
    assert r.stderr.count("Permission denied") == 2, r.stderr
    # It holds stdio (the state directory's files), the events log and its socket to the
    # runtime, nothing else (skiff-init's own fd is close-on-exec).
    fds = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    sd = str(state_dir(box, sbid))
    assert [fds[i] for i in (0, 1, 2)] == ["/dev/null", sd + "/stdout", sd + "/stderr"], fds
    rest = sorted(t for fd, t in fds.items() if fd > 2)
    assert len(rest) == 2 and rest[0] == sd + "/events" and rest[1].startswith("socket:"), fds
    # It still does init's work: forwards a signal to the command and reports its status.
    os.kill(pid, signal.SIGTERM)
    e = wait_for(lambda: ls(box)[sbid]["state"] == "exited" and ls(box)[sbid], 10)
    assert e and e["exit_code"] == 128 + 15, ls(box)


def init_closed_from_inside(b, sbid):
    """What the sandbox's root sees of pid 1: its name only (exe, maps, fds closed)."""
    r = exec_(b, sbid, "sh", "-c", "cat /proc/1/comm; readlink /proc/1/exe; "
              "cat /proc/1/maps; ls /proc/1/fd; head -c 1 /proc/1/mem")
    assert r.stdout == "skiff-init\n", r  # the rest printed nothing: it failed
    assert r.stderr.count("Permission denied") == 3, r.stderr


@pytest.mark.parametrize("value", [1, 2])
def test_idle_init_stays_closed_whatever_suid_dumpable_says(box, detached, suid_dumpable, value):
    # The kernel gives a process that execs a file it can't read the dumpability of
    # fs.suid_dumpable. 1 would open skiff-init to the sandbox's root (/proc/1/mem for writing:
    # init holds the runtime's socket and the events log), so init then stays as it is; 2 keeps
    # it closed (dumpable for the host's root only). Dumpability is settled at the exec: the
    # setting is put back as soon as init has had time to make it.
    suid_dumpable.set(value)
    try:
        sbid = detached(box, "sh", "-c", "sleep 1000")
        pid = read_init(box, sbid)[0]
        exe = os.path.join(os.path.dirname(box.binary), "skiff-init")
        execd = wait_for(lambda: os.readlink(f"/proc/{pid}/exe") == exe, 0.5)
    finally:
        suid_dumpable.restore()
    init_closed_from_inside(box, sbid)
    assert bool(execd) == (value == 2), os.readlink(f"/proc/{pid}/exe")
    os.kill(pid, signal.SIGTERM)
    e = wait_for(lambda: ls(box)[sbid]["state"] == "exited" and ls(box)[sbid], 10)
    assert e and e["exit_code"] == 128 + 15, ls(box)


def test_idle_init_without_a_usable_skiff_init_stays_as_it_is(box, detached, tmp_path):
    # Missing, not root's, writable by others, not a file, another root-owned program under the
    # name (a directory on the way, a hard link): init does its work in place.
    probe = Path(os.environ.get("SKIFF_PROBE", str(REPO / "build" / "tests" / "skiff-probe")))
    if not probe.exists():
        pytest.skip(f"no {probe}: build it with make")
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(probe, other / "skiff-init")
    os.chmod(other / "skiff-init", 0o711)
    mine = tmp_path / "not-roots"
    shutil.copy(os.path.join(os.path.dirname(box.binary), "skiff-init"), mine)
    os.chown(mine, 65534, 65534)
    open_to_all = tmp_path / "writable"
    shutil.copy(os.path.join(os.path.dirname(box.binary), "skiff-init"), open_to_all)
    os.chmod(open_to_all, 0o777)
    for given in ("/nonexistent/skiff-init", str(mine), str(open_to_all), str(tmp_path),
                  str(other / "skiff-init")):
        sbid = detached(box, "sh", "-c", "sleep 1000", env={"SKIFF_INIT": given})
        pid = read_init(box, sbid)[0]
        in_place = os.path.realpath(box.binary)
        assert not wait_for(lambda: os.readlink(f"/proc/{pid}/exe") != in_place, 0.5), given
        init_closed_from_inside(box, sbid)
        os.kill(pid, signal.SIGTERM)
        e = wait_for(lambda: ls(box)[sbid]["state"] == "exited" and ls(box)[sbid], 10)
        assert e and e["exit_code"] == 128 + 15, (given, ls(box))


def test_idle_init_from_a_readable_skiff_init_runs_a_sealed_copy(box, detached, tmp_path):
    # A skiff-init others may read (a package's 0755) is exec'd from a sealed memfd copy that
    # they can't: init stays closed.
    readable = tmp_path / "skiff-init"
    shutil.copy(os.path.join(os.path.dirname(box.binary), "skiff-init"), readable)
    os.chmod(readable, 0o755)
    sbid = detached(box, "sh", "-c", "sleep 1000", env={"SKIFF_INIT": str(readable)})
    pid = read_init(box, sbid)[0]
    assert wait_for(lambda: os.readlink(f"/proc/{pid}/exe").startswith("/memfd:skiff-init"),
                    10), os.readlink(f"/proc/{pid}/exe")
    init_closed_from_inside(box, sbid)
    os.kill(pid, signal.SIGTERM)
    e = wait_for(lambda: ls(box)[sbid]["state"] == "exited" and ls(box)[sbid], 10)
    assert e and e["exit_code"] == 128 + 15, ls(box)


def test_commands_that_end_around_inits_exec_report_their_status(box, detached):
    # The command may end, or be signalled, before, during or after init's exec: its SIGCHLD
    # or the forwarded signal waits, blocked, across the exec, and every status is reported.
    want = {}

    def start(i):
        if i % 3 == 2:  # a signal sent to init as soon as the start returns
            sbid = detached(box, "sleep", "1000")
            os.kill(read_init(box, sbid)[0], signal.SIGTERM)
            return sbid, 128 + 15
        if i % 3 == 1:  # a command that ends before init can exec
            return detached(box, "false"), 1
        return detached(box, "sh", "-c", f"exit {i}"), i

    with ThreadPoolExecutor(4) as ex:
        want = dict(ex.map(start, range(24)))

    def ended():
        entries = ls(box)
        return all(entries[s]["state"] == "exited" for s in want) and entries
    entries = wait_for(ended, 20)
    assert entries, {s: ls(box)[s]["state"] for s in want}
    got = {s: entries[s].get("exit_code") for s in want}
    assert got == want


def test_detach_with_command_returns_even_when_it_runs_on(box, detached):
    # The command never ends and would write to our pipes if it held them.
    sbid, elapsed = detached.start(box, "sh", "-c", "echo started; sleep 1000")
    assert elapsed < 5, f"--detach took {elapsed:.2f} s"
    e = ls(box)[sbid]
    assert (e["state"], e["command"]) == ("running", "sh -c echo started; sleep 1000")
    out = state_dir(box, sbid) / "stdout"
    assert wait_for(lambda: out.read_text() == "started\n", 5), out.read_text()


@pytest.mark.parametrize("script,code", [
    ("exit 0", 0),
    ("exit 3", 3),
    ("exit 255", 255),
    ("kill -TERM $$", 128 + 15),
    ("kill -KILL $$", 128 + 9),
])
def test_exec_exit_status(box, detached, script, code):
    sbid = detached(box)
    r = exec_(box, sbid, "sh", "-c", script)
    assert (r.returncode, r.stdout, r.stderr) == (code, "", "")


def test_exec_not_found_and_not_executable(box, detached):
    sbid = detached(box)
    r = exec_(box, sbid, "no-such-command")
    assert r.returncode == 127, r.stderr
    assert "no-such-command" in one_line(r.stderr)
    r = exec_(box, sbid, "/etc")
    assert r.returncode == 126, r.stderr
    assert "/etc" in one_line(r.stderr)
    # The sandbox is none the worse for it.
    assert exec_(box, sbid, "true").returncode == 0
    assert ls(box)[sbid]["state"] == "running"


def test_exec_stdio_binary_round_trip(box, detached):
    sbid = detached(box)
    data = os.urandom(1 << 20) + bytes(range(256))
    r = exec_(box, sbid, "cat", input=data, binary=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout == data
    assert r.stderr == b""
    r = exec_(box, sbid, "sh", "-c", "cat >&2; printf 'o\\0k'", input=data, binary=True)
    assert r.returncode == 0
    assert (r.stdout, r.stderr) == (b"o\0k", data)
    # stdin at EOF (not held open by anything of the sandbox).
    r = exec_(box, sbid, "cat", input=b"")
    assert (r.returncode, r.stdout) == (0, "")


def test_exec_env_and_workdir(box, detached):
    sbid = detached(box)
    r = exec_(box, sbid, "sh", "-c", 'echo "$A|$B|$(pwd)"',
              opts=("--env", "A=1", "--env", "B=two words", "--workdir", "/tmp"))
    assert (r.returncode, r.stdout, r.stderr) == (0, "1|two words|/tmp\n", "")
    # Per exec: the next exec has neither.
    r = exec_(box, sbid, "sh", "-c", 'echo "${A-unset}|$(pwd)"')
    assert (r.returncode, r.stdout) == (0, "unset|/\n")
    # Execs share the sandbox's filesystem.
    assert exec_(box, sbid, "sh", "-c", "echo kept > /tmp/f").returncode == 0
    r = exec_(box, sbid, "cat", "/tmp/f")
    assert (r.returncode, r.stdout) == (0, "kept\n")


def test_exec_forwards_signals(box, detached):
    sbid = detached(box)
    p = spawn_exec(box, sbid, "sleep", "1000")
    assert wait_for(lambda: procs_named(box, "sleep"), 10), "the exec never started"
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 128 + 15
    assert procs_named(box, "sleep") == []


def test_exec_into_unknown_or_killed_sandbox(box, detached):
    unknown = "sb-" + "0" * 26
    r = exec_(box, unknown, "true")
    assert r.returncode == 2
    assert unknown in one_line(r.stderr)
    r = exec_(box, "not-an-id", "true")
    assert r.returncode == 2
    one_line(r.stderr)
    sbid = detached(box)
    r = sub(box, "kill", sbid)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    r = exec_(box, sbid, "echo", "hello")
    assert (r.returncode, r.stdout) == (2, "")
    assert sbid in one_line(r.stderr)


def test_kill_removes_everything(box, detached):
    sbid = detached(box)
    pid, start, slot = read_init(box, sbid)
    p = spawn_exec(box, sbid, "sleep", "1000")
    assert wait_for(lambda: procs_named(box, "sleep"), 10), "the exec never started"
    # The exec's helpers are in the sandbox's cgroups until they have handed the command over.
    wait_for(lambda: len(sandbox_pids(box.instance)) == 2, 10)
    procs = sandbox_pids(box.instance)
    assert len(procs) == 2 and (pid, start) in procs, procs  # init and the exec's sleep
    assert uid_slots(box.instance) and sandbox_cgroups(box.instance)
    t0 = time.monotonic()
    r = sub(box, "kill", sbid)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert time.monotonic() - t0 < 5
    assert_gone(box, sbid, procs)
    # The exec's starter learns that its command was killed.
    assert p.wait(timeout=10) == 137
    assert ls(box) == {}
    assert uid_slots(box.instance) == []
    # Once more: it is unknown now.
    r = sub(box, "kill", sbid)
    assert r.returncode == 2
    assert sbid in one_line(r.stderr)


def test_kill_unknown_ids(box, detached):
    unknown = "sb-" + "1" * 26
    r = sub(box, "kill", unknown)
    assert r.returncode == 2
    assert unknown in one_line(r.stderr)
    assert sub(box, "kill", "bogus").returncode == 2
    # Several at once: the known ones are killed, the status says one was unknown.
    a, b = detached(box), detached(box)
    r = sub(box, "kill", a, unknown, b)
    assert r.returncode == 2
    assert unknown in one_line(r.stderr)
    assert ls(box) == {}
    assert state_dirs(box.instance) == []


def test_foreground_sandbox_is_listed_but_not_touched(box, detached):
    # A sandbox that runs in the foreground of its skiff-box belongs to that process: ls shows
    # it, exec and kill refuse it (a usage error, as for an unknown id) and leave it running.
    p = box.spawn("--", "sh", "-c", "echo ready; read x; echo done; exit 6",
                  stdin=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"ready\n"
        entries = ls(box)
        assert len(entries) == 1, entries
        (sbid, e), = entries.items()
        assert ID_RE.fullmatch(sbid) and e["state"] == "foreground" and "pid" not in e, e
        r = exec_(box, sbid, "true")
        assert r.returncode == 2
        assert sbid in one_line(r.stderr)
        r = sub(box, "kill", sbid)
        assert r.returncode == 2
        assert sbid in one_line(r.stderr)
        r = box.gc()
        assert (r.returncode, r.stdout) == (0, "removed 0 abandoned sandboxes\n")
        out, err = p.communicate(b"go\n", timeout=15)
        assert (p.returncode, out, err) == (6, b"done\n", b"")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_detached_command_output_and_exit(box, detached):
    sbid = detached(box, "sh", "-c", "echo out; echo err >&2; printf 'bin\\0'; sleep 0.3; exit 7")
    assert ls(box)[sbid]["state"] == "running"
    e = wait_for(lambda: ls(box)[sbid]["state"] == "exited" and ls(box)[sbid], 10)
    assert e, ls(box)
    assert (e["exit_code"], "pid" in e) == (7, False)
    d = state_dir(box, sbid)
    assert (d / "stdout").read_bytes() == b"out\nbin\0"
    assert (d / "stderr").read_bytes() == b"err\n"
    assert events(box, sbid) == [f"main {7 << 8}"]
    # Nothing runs in it any more: exec is refused.
    r = exec_(box, sbid, "true")
    assert r.returncode == 2
    assert sbid in one_line(r.stderr)
    assert sandbox_pids(box.instance) == set()
    # kill removes what is left.
    r = sub(box, "kill", sbid)
    assert (r.returncode, r.stderr) == (0, "")
    assert_gone(box, sbid)


def test_detached_command_killed_by_signal_then_gc(box, detached):
    keep = detached(box)
    sbid = detached(box, "sh", "-c", "kill -KILL $$")
    e = wait_for(lambda: ls(box)[sbid]["state"] == "exited" and ls(box)[sbid], 10)
    assert e and e["exit_code"] == 128 + 9, ls(box)
    r = box.gc()
    assert (r.returncode, r.stdout) == (0, "removed 1 abandoned sandbox\n"), r.stderr
    assert_gone(box, sbid)
    assert list(ls(box)) == [keep] and ls(box)[keep]["state"] == "running"


# ---- many execs ----


def test_200_execs_into_one_sandbox(box, detached):
    sbid = detached(box)
    pid, start, _ = read_init(box, sbid)
    # Counted once init is skiff-init: before its exec it also holds the program's fd.
    assert wait_for(lambda: os.readlink(f"/proc/{pid}/exe").endswith("/skiff-init"), 10)
    fds0 = len(os.listdir(f"/proc/{pid}/fd"))
    for i in range(200):
        r = exec_(box, sbid, "sh", "-c", f"echo {i}; exit {i % 251}")
        assert (r.returncode, r.stdout, r.stderr) == (i % 251, f"{i}\n", ""), f"exec {i}"
    # Nothing left behind: only init runs, it has no children (no zombies), holds no more fds
    # than before, and logged one exit per exec.
    assert sandbox_pids(box.instance) == {(pid, start)}
    assert descendants(pid) == []
    kids = [p for p in os.listdir("/proc")
            if p.isdigit() and (proc_info(int(p)) or (None,))[0] == pid]
    assert kids == [], kids
    assert len(os.listdir(f"/proc/{pid}/fd")) == fds0
    ev = events(box, sbid)
    assert len(ev) == 200, ev[-5:]
    assert [int(x.split()[3]) for x in ev] == [(i % 251) << 8 for i in range(200)]
    assert ls(box)[sbid]["state"] == "running"


def test_exec_status_found_in_a_long_events_log(box, detached):
    # A sandbox that lives for hours logs an exit per exec: statuses must still be found once
    # the log is larger than what a lookup reads (4 MiB). Fill it as many execs would.
    sbid = detached(box)
    with open(state_dir(box, sbid) / "events", "a") as f:
        f.write("exit 99999 1 0\n" * (5 * 1024 * 1024 // 15))
    r = exec_(box, sbid, "sh", "-c", "exit 3")
    assert (r.returncode, r.stderr) == (3, "")  # a status not found would be "lost"


def test_parallel_execs(box, detached):
    sbid = detached(box)
    pid, start, _ = read_init(box, sbid)

    def one(i):
        return exec_(box, sbid, "sh", "-c", f"sleep 0.1; echo {i}; exit {i}")

    with ThreadPoolExecutor(max_workers=8) as ex:
        results = list(ex.map(one, range(24)))
    assert [(r.returncode, r.stdout, r.stderr) for r in results] == \
        [(i, f"{i}\n", "") for i in range(24)]
    assert sandbox_pids(box.instance) == {(pid, start)}
    assert sorted(int(x.split()[3]) >> 8 for x in events(box, sbid)) == list(range(24))


# ---- what outlives the process that started it ----


LOOP = "i=0; while :; do echo $i; i=$((i+1)); sleep 0.05; done"


def test_exec_survives_its_starter_sigkill(box, detached, tmp_path):
    sbid = detached(box)
    pid, start, _ = read_init(box, sbid)
    out = tmp_path / "out"
    with open(out, "wb") as f:
        p = spawn_exec(box, sbid, "sh", "-c", LOOP, stdout=f)
    sh = wait_for(lambda: top_shells(box), 10)
    assert sh and len(sh) == 1, sh
    assert wait_for(lambda: out.read_text().count("\n") >= 3, 10), out.read_text()
    p.kill()
    p.wait()
    # The command is init's child (not its starter's), runs on, its output grows. It is
    # reparented when the short-lived process that forked it exits, which may come a little
    # after the command is seen.
    assert wait_for(lambda: (proc_info(sh[0][0]) or [0])[0] == pid, 5), proc_info(sh[0][0])
    time.sleep(0.2)
    assert same_process_alive(*sh[0])
    assert grows(out), "the exec's output stopped growing after its starter died"
    lines = out.read_text().splitlines()
    assert lines[:len(lines) - 1] == [str(i) for i in range(len(lines) - 1)]
    # The sandbox is found again: ls, a new exec.
    e = ls(box)[sbid]
    assert (e["state"], e["pid"]) == ("running", pid)
    r = exec_(box, sbid, "sh", "-c", "echo again; exit 4")
    assert (r.returncode, r.stdout, r.stderr) == (4, "again\n", "")
    assert same_process_alive(*sh[0]) and grows(out)
    # kill ends it all, the running exec included.
    procs = sandbox_pids(box.instance)
    r = sub(box, "kill", sbid)
    assert (r.returncode, r.stderr) == (0, "")
    assert_gone(box, sbid, procs)
    assert not same_process_alive(*sh[0])
    assert not grows(out, within=0.4), "output still grows after kill"


def test_exec_exit_status_survives_its_starter(box, detached):
    sbid = detached(box)
    pid, _, _ = read_init(box, sbid)
    p = spawn_exec(box, sbid, "sh", "-c", "sleep 1; exit 9")
    sh = wait_for(lambda: top_shells(box), 10)
    assert sh and len(sh) == 1, sh
    host_pid, sh_start = sh[0]
    inner = ns_pid(host_pid)
    assert inner != host_pid and inner > 1
    p.kill()
    p.wait()
    assert same_process_alive(host_pid, sh_start), "the exec died with its starter"
    assert wait_for(lambda: (proc_info(host_pid) or [0])[0] == pid, 5), proc_info(host_pid)
    want = f"exit {inner} {sh_start} {9 << 8}"
    assert wait_for(lambda: want in events(box, sbid), 5), (want, events(box, sbid))
    assert events(box, sbid) == [want]
    assert ls(box)[sbid]["state"] == "running"


# ---- pids that are not the sandbox's ----


def test_init_killed_from_host_is_lost_not_running(box, detached):
    sbid = detached(box)
    pid, start, _ = read_init(box, sbid)
    assert ls(box)[sbid]["pid"] == pid
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not proc_alive(pid), 5)
    e = ls(box)[sbid]
    assert e["state"] == "lost" and "pid" not in e and "exit_code" not in e, e
    r = exec_(box, sbid, "true")
    assert r.returncode == 2
    assert sbid in one_line(r.stderr)
    r = sub(box, "kill", sbid)
    assert (r.returncode, r.stderr) == (0, "")
    assert_gone(box, sbid)


def forge_init(b, sbid, pid, start, slot):
    p = state_dir(b, sbid) / "init"
    p.write_text(f"{pid} {start} {slot}\n")


@pytest.mark.parametrize("cleanup", ["kill", "gc"])
def test_recycled_pid_is_never_taken(box, detached, cleanup):
    sbid = detached(box)
    pid, start, slot = read_init(box, sbid)
    # A host process now has the pid the record names (as if init's pid were recycled): the
    # start time still is init's. (Start times count clock ticks: start it a tick later.)
    time.sleep(0.05)
    other = subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL)
    try:
        other_start = proc_info(other.pid)[2]
        assert other_start > start
        forge_init(box, sbid, other.pid, start, slot)
        e = ls(box)[sbid]
        assert e["state"] == "lost" and "pid" not in e, e
        r = exec_(box, sbid, "echo", "in")
        assert (r.returncode, r.stdout) == (2, "")
        assert sbid in one_line(r.stderr)
        if cleanup == "kill":
            r = sub(box, "kill", sbid)
            assert (r.returncode, r.stderr) == (0, "")
        else:
            r = box.gc()
            assert (r.returncode, r.stdout) == (0, "removed 1 abandoned sandbox\n"), r.stderr
        # The unrelated process is untouched; the real init, in the sandbox's cgroups, is gone.
        time.sleep(0.2)
        assert same_process_alive(other.pid, other_start), "kill/gc killed an unrelated process"
        assert other.poll() is None
        assert_gone(box, sbid, [(pid, start)])
    finally:
        other.kill()
        other.wait()


def test_record_of_a_live_process_with_another_start_time(box, detached):
    # Same pid, start time off by one tick: not init.
    sbid = detached(box)
    pid, start, slot = read_init(box, sbid)
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not proc_alive(pid), 5)
    other = subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL)
    try:
        other_start = proc_info(other.pid)[2]
        forge_init(box, sbid, other.pid, other_start + 1, slot)
        assert ls(box)[sbid]["state"] == "lost"
        assert exec_(box, sbid, "true").returncode == 2
        # And the record of the same process with its right start time is taken: the check is
        # the start time, not something else that happens to differ.
        forge_init(box, sbid, other.pid, other_start, slot)
        e = ls(box)[sbid]
        assert (e["state"], e["pid"]) == ("running", other.pid)
        forge_init(box, sbid, other.pid, other_start + 1, slot)
        r = sub(box, "kill", sbid)
        assert (r.returncode, r.stderr) == (0, "")
        assert same_process_alive(other.pid, other_start)
        assert_gone(box, sbid)
    finally:
        other.kill()
        other.wait()


# ---- gc after crashes ----


def test_gc_after_init_killed(box, detached):
    keep = detached(box)
    keep_init = read_init(box, keep)
    lost = detached(box, "sleep", "1000")
    pid, start, _ = read_init(box, lost)
    procs = sandbox_pids(box.instance)
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: ls(box)[lost]["state"] == "lost", 5), ls(box)
    r = box.gc()
    assert (r.returncode, r.stdout) == (0, "removed 1 abandoned sandbox\n"), r.stderr
    assert_gone(box, lost, [p for p in procs if p[0] != keep_init[0]])
    # The running one is left alone and works.
    e = ls(box)
    assert list(e) == [keep] and (e[keep]["state"], e[keep]["pid"]) == ("running", keep_init[0])
    assert same_process_alive(keep_init[0], keep_init[1])
    r = exec_(box, keep, "echo", "fine")
    assert (r.returncode, r.stdout) == (0, "fine\n")
    # A second gc finds nothing.
    r = box.gc()
    assert (r.returncode, r.stdout) == (0, "removed 0 abandoned sandboxes\n")


def test_gc_removes_a_half_made_state_dir(box, detached):
    # What a skiff-box SIGKILLed between making its state directory (under a dot-name) and
    # renaming it leaves: the directory with an unlocked lock file. Nobody will rename it.
    keep = detached(box)
    half = RUN_DIR / box.instance / (".new-sb-" + "2" * 26)
    half.mkdir()
    (half / "lock").touch()
    try:
        r = box.gc()
        assert r.returncode == 0, r.stderr
        assert not half.exists(), f"gc left {half}"
        assert list(ls(box)) == [keep] and ls(box)[keep]["state"] == "running"
    finally:
        if half.exists():
            shutil.rmtree(half)


def test_gc_after_detach_sigkilled_while_starting(box, detached):
    keep = detached(box)
    keep_init = read_init(box, keep)
    for delay in (0.0, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08):
        p = box.spawn("--detach", "--", "sleep", "1000")
        time.sleep(delay)
        p.kill()
        p.wait()
    # Some may have got as far as a complete sandbox (then it is a running one, left to its
    # owner: kill it); the rest are abandoned and gc removes them.
    for sbid, e in ls(box).items():
        if sbid != keep and e["state"] == "running":
            assert sub(box, "kill", sbid).returncode == 0
    r = box.gc()
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"removed \d+ abandoned sandbox(es)?\n", r.stdout), r.stdout
    left = [x for x in wait_no_leaks(box.instance, timeout=3) if keep not in x
            and f"pid {keep_init[0]} " not in x]
    assert left == [], "\n".join(left)
    assert list(ls(box)) == [keep]
    assert exec_(box, keep, "true").returncode == 0


# ---- two instances ----


def test_two_instances_do_not_touch_each_other(box, detached, tmp_path):
    other = Box(SKIFF_BOX, new_instance("u"), tmp_path / "data2")
    try:
        a = detached(box)
        b = detached(other)
        assert list(ls(box)) == [a]
        assert list(ls(other)) == [b]
        assert [c.rsplit("/", 1)[1] for c in sandbox_cgroups(box.instance)] == [a] * len(
            sandbox_cgroups(box.instance))
        assert [c.rsplit("/", 1)[1] for c in sandbox_cgroups(other.instance)] == [b] * len(
            sandbox_cgroups(other.instance))
        # Across instances: unknown.
        for x, sbid in ((box, b), (other, a)):
            r = exec_(x, sbid, "true")
            assert r.returncode == 2
            assert sbid in one_line(r.stderr)
            r = sub(x, "kill", sbid)
            assert r.returncode == 2
            assert sbid in one_line(r.stderr)
        # Each instance's execs land in its own sandbox.
        for x, sbid in ((box, a), (other, b)):
            assert exec_(x, sbid, "sh", "-c", f"echo {sbid} > /tmp/who").returncode == 0
        for x, sbid in ((box, a), (other, b)):
            r = exec_(x, sbid, "cat", "/tmp/who")
            assert (r.returncode, r.stdout) == (0, sbid + "\n")
        # gc of one leaves the other's running.
        for x in (box, other):
            r = x.gc()
            assert (r.returncode, r.stdout) == (0, "removed 0 abandoned sandboxes\n")
            assert ls(box)[a]["state"] == "running" and ls(other)[b]["state"] == "running"
        # Kill in one: the other's runs on.
        assert sub(other, "kill", b).returncode == 0
        assert ls(other) == {}
        assert ls(box)[a]["state"] == "running"
        assert exec_(box, a, "true").returncode == 0
    finally:
        for sbid, _ in ls(other).items():
            sub(other, "kill", sbid)
        end_instance(other)


def test_exec_gets_the_sandboxs_nproc_limit(box, detached):
    sid, _ = detached.start(box, opts=("--pids", "321"))
    r = box("exec", sid, "--", "sh", "-c", "ulimit -u")
    assert (r.returncode, r.stdout) == (0, "321\n"), r.stderr


def test_a_sandbox_stopping_everything_cannot_hang_exec(box, detached):
    # Its processes may SIGSTOP whatever joins its pid namespace, the exec's helpers included:
    # the start gives up after its deadline, and leaves nothing running.
    sid, _ = detached.start(box, "sh", "-c", "while :; do kill -STOP -1 2>/dev/null; done")
    t0 = time.monotonic()
    r = box("exec", sid, "--", "echo", "hi", timeout=40)
    assert time.monotonic() - t0 < 30
    assert r.returncode != 0 and "not started within" in r.stderr, (r.returncode, r.stderr)


def test_gc_removes_a_state_dir_made_without_lock_by_a_dead_process(box):
    # A start killed between mkdir and creating its lock: the name says who made it.
    p = subprocess.Popen(["true"])
    p.wait()
    half = RUN_DIR / box.instance / f".new-{p.pid}-sb-{'3' * 26}"
    box.run(["true"])  # the instance directory
    half.mkdir()
    try:
        r = box.gc()
        assert r.returncode == 0, r.stderr
        assert not half.exists(), f"gc left {half}"
    finally:
        if half.exists():
            half.rmdir()
