"""Sandbox timeouts enforced by the server: `timeout_s` (moved by PATCH) and `idle_timeout_s`
(no exec running and no I/O through the API for that long) end a sandbox as `timeout` with exit
code 124, also when its worker is stopped, and after a server restart a deadline that passed while
the server was down ends its sandbox at once. An exec's `timeout_s` ends the exec with 124."""

import datetime
import os
import signal
import time

import pytest

from conftest import proc_info, read_bytes, sandbox_pids, wait_for
from test_split import running_split

MARGIN_S = 2  # SERVER_TIMEOUT_MARGIN_MS: how long the server waits for a worker to end a sandbox


def t(stamp):
    """An RFC 3339 time of the API in seconds since the epoch."""
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def create(d, body):
    s, sb = d.api("POST", "/v1/sandboxes", body)
    assert s == 201, sb
    return sb


def wait_end(d, sb, timeout=20):
    s, w = d.api("POST", f"/v1/sandboxes/{sb['id']}/wait?timeout_s={timeout}")
    assert s == 200, w
    return w


def state(d, sb):
    s, g = d.api("GET", f"/v1/sandboxes/{sb['id']}")
    assert s == 200, g
    return g


def ended_by_timeout(w):
    return w["state"] == "timeout" and w["exit_code"] == 124 and w["ended_at"]


# ---- timeout_s ----


def test_timeout_ends_the_sandbox_and_keeps_its_output(skiffd):
    sb = create(skiffd, {"command": ["sh", "-c", "echo before; sleep 100"], "timeout_s": 2})
    w = wait_end(skiffd, sb)
    assert ended_by_timeout(w), w
    assert t(w["ended_at"]) - t(w["started_at"]) >= 1.9, w
    # Whoever ended it first, the spawner or the server, the output is there until DELETE.
    s, _, out = skiffd.raw("GET", f"/v1/sandboxes/{sb['id']}/logs",
                           headers={"Authorization": f"Bearer {skiffd.token}"})
    assert s == 200 and out == b"before\n", (s, out)


def test_patch_keeps_the_sandbox_past_its_old_deadline(skiffd):
    sb = create(skiffd, {"timeout_s": 3})
    s, p = skiffd.api("PATCH", f"/v1/sandboxes/{sb['id']}", {"timeout_s": 6})
    assert s == 200 and p["timeout_s"] == 6, p
    # A 200 means the PATCH came before the old deadline (after it: 409). Past that deadline
    # (by the server's own clock: started_at), it runs, or it ended at the new one only (a
    # loaded machine may take that long to look).
    started = t(sb["started_at"])
    while time.time() < started + 3.5:
        time.sleep(0.1)
    g = state(skiffd, sb)
    assert g["state"] == "running" or t(g["ended_at"]) - started >= 5.9, g
    w = wait_end(skiffd, sb)
    assert ended_by_timeout(w), w
    assert t(w["ended_at"]) - t(w["started_at"]) >= 5.9, w
    s, body = skiffd.api("PATCH", f"/v1/sandboxes/{sb['id']}", {"timeout_s": 10})
    assert s == 409, body


# ---- idle_timeout_s ----


def test_idle_sandbox_ends(skiffd):
    sb = create(skiffd, {"idle_timeout_s": 2})
    assert sb["idle_timeout_s"] == 2 and sb["timeout_s"] == 300, sb
    w = wait_end(skiffd, sb)
    assert ended_by_timeout(w), w
    assert t(w["ended_at"]) - t(w["started_at"]) >= 1.9, w


def test_a_running_exec_keeps_the_sandbox_from_idling(skiffd):
    # The exec must start within the idle limit; a machine too slow for that (409: the sandbox
    # idled out first) shows nothing, and the setup is tried again.
    for _ in range(5):
        sb = create(skiffd, {"idle_timeout_s": 2})
        s, ex = skiffd.api("POST", f"/v1/sandboxes/{sb['id']}/exec", {
            "command": ["sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.05; done"]})
        if s == 201:
            break
        assert s == 409 and state(skiffd, sb)["state"] == "timeout", ex
    assert s == 201, ex
    started = time.monotonic()
    while time.monotonic() < started + 3:
        time.sleep(0.1)
    assert state(skiffd, sb)["state"] == "running"
    s, _, _ = skiffd.raw("PUT", f"/v1/sandboxes/{sb['id']}/files?path=/tmp/go", b"",
                         headers={"Authorization": f"Bearer {skiffd.token}"})
    assert s == 200
    w = wait_end(skiffd, sb)
    assert ended_by_timeout(w), w
    s, e = skiffd.api("GET", f"/v1/sandboxes/{sb['id']}/execs/{ex['id']}")
    assert e["state"] == "exited" and e["exit_code"] == 0, e
    # The idle clock started when the exec ended.
    assert t(w["ended_at"]) - t(e["ended_at"]) >= 1.9, (w, e)


def test_file_reads_keep_the_sandbox_from_idling(skiffd):
    sb = create(skiffd, {"idle_timeout_s": 2})
    auth = {"Authorization": f"Bearer {skiffd.token}"}
    path = f"/v1/sandboxes/{sb['id']}/files?path=/tmp/note"
    s, _, _ = skiffd.raw("PUT", path, b"kept busy", headers=auth)
    assert s == 200
    until = time.monotonic() + 3
    last = time.time()
    while time.monotonic() < until:
        s, _, body = skiffd.raw("GET", path, headers=auth)
        assert s == 200 and body == b"kept busy", (s, body)
        last = time.time()
        time.sleep(0.5)
    g = state(skiffd, sb)
    # Running, or (a machine too slow to read every 0.5 s) ended no sooner than 2 s after the
    # last read: never while reads came.
    assert g["state"] == "running" or t(g["ended_at"]) >= last + 1.9, (g, last)
    w = wait_end(skiffd, sb)
    assert ended_by_timeout(w), w
    assert t(w["ended_at"]) >= last + 1.9, (w, last)


def test_bad_timeouts_are_refused_and_create_nothing(skiffd):
    s, before = skiffd.api("GET", "/v1/sandboxes?limit=1000")
    for body in [{"idle_timeout_s": 0}, {"idle_timeout_s": -1}, {"idle_timeout_s": 86401},
                 {"idle_timeout_s": "5"}, {"idle_timeout_s": True}, {"idle_timeout_s": [2]},
                 {"timeout_s": -1}, {"timeout_s": 86401}, {"timeout_s": "5"}]:
        s, r = skiffd.api("POST", "/v1/sandboxes", body)
        assert s == 400 and r["error"]["code"] == "invalid_argument", (body, s, r)
        assert next(iter(body)) in r["error"]["message"], r
    s, after = skiffd.api("GET", "/v1/sandboxes?limit=1000")
    assert [x["id"] for x in after["items"]] == [x["id"] for x in before["items"]]
    assert create(skiffd, {"idle_timeout_s": None})["idle_timeout_s"] is None
    sb = create(skiffd, {"idle_timeout_s": 86400})
    assert sb["idle_timeout_s"] == 86400
    s, r = skiffd.api("PATCH", f"/v1/sandboxes/{sb['id']}", {"idle_timeout_s": 5})
    assert s == 400, r


# ---- exec timeout_s ----


def test_exec_timeout_ends_the_exec_with_124(skiffd):
    sb = create(skiffd, {})
    s, r = skiffd.api("POST", f"/v1/sandboxes/{sb['id']}/exec?wait=true",
                      {"command": ["sleep", "10"], "timeout_s": 0.5})
    assert s == 200 and r["state"] == "exited" and r["exit_code"] == 124, r
    s, ex = skiffd.api("POST", f"/v1/sandboxes/{sb['id']}/exec",
                       {"command": ["sh", "-c", "echo started; sleep 10"], "timeout_s": 0.5})
    assert s == 201, ex
    ex_path = f"/v1/sandboxes/{sb['id']}/execs/{ex['id']}"
    e = wait_for(lambda: (lambda g: g if g["state"] not in ("pending", "running") else None)(
        skiffd.api("GET", ex_path)[1]), 10, 0.05)
    assert e and e["state"] == "exited" and e["exit_code"] == 124, e
    assert t(e["ended_at"]) - t(e["started_at"]) >= 0.4, e
    s, _, out = skiffd.raw("GET", ex_path + "/output",
                           headers={"Authorization": f"Bearer {skiffd.token}"})
    assert s == 200 and out == b"started\n", (s, out)
    assert state(skiffd, sb)["state"] == "running"


# ---- a worker that is stopped or gone; a server restart ----


@pytest.fixture
def split(tmp_path):
    # Workers are not declared lost during these tests: the server's own timing is what ends
    # their sandboxes.
    with running_split(tmp_path, lost_s=60) as s:
        yield s


def running(split, marker):
    """Processes of the instance's sandboxes whose command line holds marker."""
    return [p for p, _ in sandbox_pids(split.instance)
            if marker.encode() in read_bytes(f"/proc/{p}/cmdline")]


def stop_worker(split):
    """SIGSTOP the worker and its spawner; returns their pids."""
    pids = [split.worker.pid] + [
        int(p) for p in os.listdir("/proc")
        if p.isdigit() and (proc_info(int(p)) or (0,))[0] == split.worker.pid]
    for p in pids:
        os.kill(p, signal.SIGSTOP)
    return pids


def stopped_before_deadline(split, body):
    """A sandbox with a 2 s deadline, and its worker stopped before that deadline (by the
    server's clock: started_at), so that only the server can end it: (sandbox, stopped pids).
    A machine too slow to stop the worker in time shows nothing; the setup is tried again."""
    for _ in range(5):
        s, sb = split.api("POST", "/v1/sandboxes", body)
        assert s == 201, sb
        stopped = stop_worker(split)
        if time.time() < datetime.datetime.fromisoformat(
                sb["started_at"].replace("Z", "+00:00")).timestamp() + 1.5:
            return sb, stopped
        for p in stopped:
            os.kill(p, signal.SIGCONT)
        split.api("DELETE", f"/v1/sandboxes/{sb['id']}")
    pytest.fail("the worker could not be stopped within 1.5 s of a sandbox's start")


def logs(split, sb):
    return split.raw("GET", f"/v1/sandboxes/{sb['id']}/logs")


def ended_lines(split, sb):
    return [line for line in split.log("server").splitlines()
            if "sandbox ended" in line and sb["id"] in line]


def test_a_stopped_worker_does_not_keep_a_sandbox_past_its_deadline(split):
    sb, stopped = stopped_before_deadline(
        split, {"command": ["sh", "-c", "echo before; exec sleep 7001"], "timeout_s": 2})
    try:
        s, w = split.api("POST", f"/v1/sandboxes/{sb['id']}/wait?timeout_s=20")
        assert s == 200 and ended_by_timeout(w), w
        # The server waited for the worker past the deadline, then recorded the end itself:
        # the sandbox's processes still run.
        assert t(w["ended_at"]) - t(w["started_at"]) >= 2 + MARGIN_S - 0.1, w
        assert running(split, "7001"), "the sandbox's command is gone: the worker ended it"
    finally:
        for p in stopped:
            os.kill(p, signal.SIGCONT)
    # The worker wakes up and runs the server's terminate; its report comes late and changes
    # nothing, and the output stays until DELETE.
    assert wait_for(lambda: not running(split, "7001"), 15, 0.05)
    time.sleep(1)
    s, g = split.api("GET", f"/v1/sandboxes/{sb['id']}")
    assert (g["state"], g["exit_code"], g["ended_at"]) == (w["state"], 124, w["ended_at"]), g
    assert len(ended_lines(split, sb)) == 1, ended_lines(split, sb)
    assert logs(split, sb) == (200, b"before\n")
    s, out = split.api("DELETE", f"/v1/sandboxes/{sb['id']}")
    assert s == 200 and out["state"] == "timeout", out
    assert logs(split, sb)[0] == 409


def test_a_gone_worker_does_not_keep_a_sandbox_past_its_deadline(split):
    sb, stopped = stopped_before_deadline(split, {"command": ["sleep", "7002"],
                                                  "idle_timeout_s": 2})
    try:
        s, w = split.api("POST", f"/v1/sandboxes/{sb['id']}/wait?timeout_s=20")
        assert s == 200 and ended_by_timeout(w), w
    finally:
        split.worker.kill()
        for p in stopped:
            os.kill(p, signal.SIGCONT)
        split.worker.wait()
    # A new worker re-attaches to what still runs; the server has it ended and ends it there.
    assert running(split, "7002")  # the sandbox outlived its worker
    split.start_worker()
    assert wait_for(lambda: not running(split, "7002"), 15, 0.05)
    s, g = split.api("GET", f"/v1/sandboxes/{sb['id']}")
    assert (g["state"], g["exit_code"], g["ended_at"]) == ("timeout", 124, w["ended_at"]), g
    assert len(ended_lines(split, sb)) == 1, ended_lines(split, sb)


def test_a_deadline_passed_while_the_server_was_down(split):
    s, due = split.api("POST", "/v1/sandboxes", {"command": ["sleep", "7003"], "timeout_s": 600})
    assert s == 201, due
    s, idle = split.api("POST", "/v1/sandboxes", {"timeout_s": 3600, "idle_timeout_s": 600})
    assert s == 201, idle
    assert split.stop(split.server) == 0
    # The server comes back 700 s later as its clock says: the first sandbox's deadline has
    # passed; the second's idle clock starts again at the restart.
    split.start_server(env={"SKIFF_CLOCK_OFFSET_MS": str(700 * 1000)})
    g = wait_for(lambda: (lambda x: x if x["state"] != "running" else None)(
        split.api("GET", f"/v1/sandboxes/{due['id']}")[1]), 5, 0.05)
    assert g and ended_by_timeout(g), g
    assert wait_for(split.connected, 20, 0.1)
    s, out = split.api("POST", f"/v1/sandboxes/{idle['id']}/exec?wait=true",
                       {"command": ["echo", "still here"]})
    assert s == 200 and out["stdout"] == "still here\n", out
    assert split.api("GET", f"/v1/sandboxes/{idle['id']}")[1]["state"] == "running"
    # The worker ended the first sandbox too; that changed nothing here.
    assert wait_for(lambda: not running(split, "7003"), 15, 0.05)
    s, g2 = split.api("GET", f"/v1/sandboxes/{due['id']}")
    assert (g2["state"], g2["exit_code"], g2["ended_at"]) == ("timeout", 124, g["ended_at"]), g2
