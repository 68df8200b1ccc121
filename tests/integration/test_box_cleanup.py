"""When skiff-box exits, is killed, or crashes, its sandbox is gone: processes, mounts,
cgroups, directories, uid ranges. And signals sent to skiff-box reach the sandbox."""

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import (RUN_DIR, leaks, proc_info, read_line, same_process_alive,
                      sandbox_cgroups, sandbox_pids, state_dirs, uid_slots, wait_for,
                      wait_no_leaks)


def test_200_sequential_runs_leave_nothing(box):
    t0 = time.monotonic()
    for i in range(200):
        r = box.run(["true"])
        assert r.returncode == 0, f"run {i}: {r.stderr}"
    elapsed = time.monotonic() - t0
    assert leaks(box.instance) == []
    assert elapsed < 120, f"200 runs took {elapsed:.1f} s"


def test_parallel_runs_leave_nothing(box):
    def one(i):
        return box.sh(f"echo {i}; sleep 0.2")

    with ThreadPoolExecutor(max_workers=8) as ex:
        results = list(ex.map(one, range(16)))
    for i, r in enumerate(results):
        assert (r.returncode, r.stdout) == (0, f"{i}\n"), r.stderr
    assert leaks(box.instance) == []


def start_sleeper(box, *args):
    """Start skiff-box running `sleep 1000`; return it once the sandbox's processes run, with
    their host pids and start times."""
    p = box.spawn(*args, "--", "sleep", "1000")
    procs = wait_for(lambda: {x for x in sandbox_pids(box.instance)
                              if (proc_info(x[0]) or (None, None))[1] == "sleep"}
                     and sandbox_pids(box.instance), 15)
    assert procs, "the sandbox never started"
    return p, procs


def test_sigkill_mid_run(box):
    p, procs = start_sleeper(box)
    assert len(procs) == 2, procs  # init and sleep
    assert state_dirs(box.instance) and uid_slots(box.instance) and sandbox_cgroups(box.instance)
    t0 = time.monotonic()
    p.kill()
    p.wait()
    # The sandbox's processes die at once (init has PDEATHSIG; the pid namespace goes with it).
    gone = wait_for(lambda: not any(same_process_alive(*x) for x in procs), 2)
    assert gone, f"still running 2 s after SIGKILL: {procs}"
    # The cleanup helper removes cgroups, the state directory and the uid slot.
    left = wait_no_leaks(box.instance, timeout=3)
    assert not left, f"left {time.monotonic() - t0:.1f} s after SIGKILL:\n" + "\n".join(left)


def test_sigkill_with_busy_sandbox(box):
    # Many processes, some ignoring signals: still all gone.
    p = box.spawn("--", "sh", "-c", "trap '' TERM HUP INT; for i in 1 2 3 4 5 6 7 8; do "
                  "sh -c 'trap \"\" TERM; while :; do :; done' & done; echo ready; wait")
    try:
        assert read_line(p) == b"ready\n"
        procs = wait_for(lambda: len(sandbox_pids(box.instance)) >= 10
                         and sandbox_pids(box.instance), 10)
        assert procs, sandbox_pids(box.instance)
    finally:
        p.kill()
        p.wait()
    assert wait_for(lambda: not any(same_process_alive(*x) for x in procs), 2)
    left = wait_no_leaks(box.instance, timeout=3)
    assert not left, "\n".join(left)


def cleanup_helper_of(pid):
    kids = [c for c in os.listdir("/proc") if c.isdigit()]
    found = []
    for c in kids:
        info = proc_info(int(c))
        if info and info[0] == pid and info[1] == "skiff-cleanup":
            found.append(int(c))
    return found


def test_gc_after_crash(box):
    p, procs = start_sleeper(box)
    helpers = cleanup_helper_of(p.pid)
    assert len(helpers) == 1, f"no single skiff-cleanup child of skiff-box: {helpers}"
    # A crash that takes the helper too: nothing is left to clean up but gc.
    os.kill(helpers[0], signal.SIGKILL)
    p.kill()
    p.wait()
    assert wait_for(lambda: not any(same_process_alive(*x) for x in procs), 2)
    assert wait_for(lambda: not any(same_process_alive(h, proc_info(h)[2])
                                    for h in helpers if proc_info(h)), 2)
    left = leaks(box.instance)
    assert any(x.startswith("state dir") for x in left), left
    assert any(x.startswith("uid slot") for x in left), left
    assert any(x.startswith("cgroup") for x in left), left
    r = box.gc()
    assert r.returncode == 0, r.stderr
    assert r.stdout == "removed 1 abandoned sandbox\n"
    assert leaks(box.instance) == []


def test_gc_leaves_running_sandbox_alone(box):
    p, procs = start_sleeper(box)
    try:
        r = box.gc()
        assert r.returncode == 0, r.stderr
        assert r.stdout == "removed 0 abandoned sandboxes\n"
        assert all(same_process_alive(*x) for x in procs)
        assert state_dirs(box.instance) and uid_slots(box.instance)
        assert sandbox_cgroups(box.instance)
        assert p.poll() is None
    finally:
        p.terminate()
        p.wait(timeout=10)
    assert p.returncode == 143


def test_gc_when_nothing_to_do(box):
    r = box.gc()
    assert (r.returncode, r.stdout) == (0, "removed 0 abandoned sandboxes\n")
    assert not (RUN_DIR / box.instance).exists()
    assert box.run(["true"]).returncode == 0, "the instance works again after gc"


@pytest.mark.parametrize(
    "sig,trap,code",
    [
        (signal.SIGTERM, "TERM", 7),
        (signal.SIGINT, "INT", 8),
        (signal.SIGHUP, "HUP", 9),
        (signal.SIGUSR1, "USR1", 10),
    ],
)
def test_signal_forwarded(box, sig, trap, code):
    p = box.spawn("--", "sh", "-c", f'trap "exit {code}" {trap}; sleep 100 & echo ready; wait')
    try:
        assert read_line(p) == b"ready\n"
        t0 = time.monotonic()
        p.send_signal(sig)
        assert p.wait(timeout=10) == code
        assert time.monotonic() - t0 < 5
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_sigterm_without_trap(box):
    p = box.spawn("--", "sh", "-c", "echo ready; exec sleep 100")
    try:
        assert read_line(p) == b"ready\n"
        p.terminate()
        assert p.wait(timeout=10) == 143
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_gc_racing_starts_never_breaks_them(box):
    # gc removes the instance's parent cgroups and state directory only when no runtime of the
    # instance holds its lock: starts running beside a gc loop must all succeed.
    import threading

    stop = threading.Event()
    gcs = []

    def gc_loop():
        while not stop.is_set():
            gcs.append(box.gc().returncode)

    t = threading.Thread(target=gc_loop)
    t.start()
    try:
        runs = [box.run(["true"]) for _ in range(40)]
        codes = [r.returncode for r in runs]
    finally:
        stop.set()
        t.join()
    assert codes == [0] * 40, [r.stderr for r in runs if r.returncode]
    assert gcs and set(gcs) == {0}
