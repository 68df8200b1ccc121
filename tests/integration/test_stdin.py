"""Exec stdin, signals and terminals through the REST API of `skiffd dev`: bytes written in
pieces (more than a pipe holds, every byte value) come out of `cat` as they went in; EOF with and
without a body; writes that are refused (after EOF, without stdin, too large, to an ended exec);
signals by name and number; a terminal's path, size, resize and TERM; a stdin and a terminal
that outlive skiffd being SIGKILLed and go on once it is back. Nothing is left behind: the
holder processes that keep stdin open go with their exec, their sandbox, and gc."""

import json
import os
import signal
import threading

import pytest

from conftest import (SKIFF_BOX, Box, Skiffd, all_pids, end_instance, free_port, kill_all,
                      new_instance, proc_alive, proc_info, read_bytes, wait_for)
from conftest import LOW_LIMITS, limited_skiffd, _module_limited_skiffd  # noqa: F401

HOLDER = "skiff-stdin"
MAX_WRITE = 1024 * 1024


def holders(inst):
    """Live stdin holders in the instance's sandbox cgroups."""
    key = f"/skiff-{inst}/".encode()
    out = []
    for pid in all_pids():
        info = proc_info(pid)
        if info and info[1] == HOLDER and proc_alive(pid) \
                and key in read_bytes(f"/proc/{pid}/cgroup"):
            out.append(pid)
    return out


def expect_holders(d, n, timeout=5):
    assert wait_for(lambda: len(holders(d.instance)) == n, timeout), holders(d.instance)


def err_code(body):
    assert isinstance(body, dict) and body.get("error", {}).get("message"), body
    return body["error"]["code"]


def new_sandbox(d):
    s, sb = d.api("POST", "/v1/sandboxes", {})
    assert s == 201, sb
    return sb["id"]


def start(d, sbid, cmd, **extra):
    s, ex = d.api("POST", f"/v1/sandboxes/{sbid}/exec", {"command": cmd, **extra})
    assert s == 201, ex
    assert ex["state"] == "running", ex
    return ex["id"]


def write(d, sbid, exid, data, eof=False, query=None):
    """POST raw bytes to the exec's stdin: (status, parsed reply)."""
    q = query if query is not None else ("?eof=true" if eof else "")
    s, _, raw = d.raw("POST", f"/v1/sandboxes/{sbid}/execs/{exid}/stdin{q}", data,
                      {"Authorization": f"Bearer {d.token}"})
    return s, json.loads(raw) if raw else None


def write_ok(d, sbid, exid, data, eof=False):
    s, body = write(d, sbid, exid, data, eof)
    assert s == 200, body
    assert body["written"] == len(data) and body["eof"] is eof, body


def output(d, sbid, exid, stream="stdout"):
    """Everything the exec wrote to stream so far, read by offset."""
    out = b""
    while True:
        s, hdr, raw = d.raw("GET", f"/v1/sandboxes/{sbid}/execs/{exid}/output?stream={stream}"
                            f"&offset={len(out)}", None, {"Authorization": f"Bearer {d.token}"})
        assert s == 200, raw
        if not raw:
            return out
        out += raw


def wait_output(d, sbid, exid, needle, timeout=20):
    ok = wait_for(lambda: needle in output(d, sbid, exid), timeout, 0.05)
    assert ok, f"{needle!r} not in {output(d, sbid, exid)!r}"


def wait_end(d, sbid, exid, timeout=20):
    def ended():
        s, ex = d.api("GET", f"/v1/sandboxes/{sbid}/execs/{exid}")
        assert s == 200, ex
        return ex if ex["state"] not in ("pending", "running") else None
    ex = wait_for(ended, timeout, 0.05)
    assert ex, f"exec {exid} still runs"
    return ex


def send_signal(d, sbid, exid, sig):
    return d.api("POST", f"/v1/sandboxes/{sbid}/execs/{exid}/signal", {"signal": sig})


def resize(d, sbid, exid, body):
    return d.api("POST", f"/v1/sandboxes/{sbid}/execs/{exid}/resize", body)


# ---- stdin ----


def test_cat_round_trip(skiffd):
    sb = new_sandbox(skiffd)
    ex = start(skiffd, sb, ["cat"], stdin=True)
    expect_holders(skiffd, 1)
    chunks = [b"first:", bytes(range(256)) * 400, b"", b"\x00\xff\r\n\x04 middle",
              bytes(reversed(range(256))) * 300]
    assert sum(map(len, chunks)) > 64 * 1024  # more than a pipe holds
    for c in chunks:
        write_ok(skiffd, sb, ex, c)
    write_ok(skiffd, sb, ex, b"last", eof=True)
    got = wait_end(skiffd, sb, ex)
    assert got["state"] == "exited" and got["exit_code"] == 0, got
    assert output(skiffd, sb, ex) == b"".join(chunks) + b"last"
    expect_holders(skiffd, 0)
    s, body = write(skiffd, sb, ex, b"late")
    assert s == 409 and err_code(body) == "conflict", body


def test_eof_without_body_and_writes_after_it(skiffd):
    sb = new_sandbox(skiffd)
    ex = start(skiffd, sb, ["sh", "-c", "cat; echo seen-eof; sleep 60"], stdin=True)
    write_ok(skiffd, sb, ex, b"x")
    write_ok(skiffd, sb, ex, b"", eof=True)
    wait_output(skiffd, sb, ex, b"xseen-eof\n")
    expect_holders(skiffd, 0)  # closed: nothing to hold
    s, body = write(skiffd, sb, ex, b"y")
    assert s == 409 and "closed" in body["error"]["message"], body
    s, body = write(skiffd, sb, ex, b"", eof=True)
    assert s == 409, body
    s, body = skiffd.api("GET", f"/v1/sandboxes/{sb}/execs/{ex}")
    assert body["state"] == "running"  # refused writes changed nothing


def test_writes_refused(skiffd):
    sb = new_sandbox(skiffd)
    plain = start(skiffd, sb, ["sleep", "60"])
    s, body = write(skiffd, sb, plain, b"x")
    assert s == 409 and "without stdin" in body["error"]["message"], body
    ex = start(skiffd, sb, ["cat"], stdin=True)
    s, body = write(skiffd, sb, ex, b"\0" * (MAX_WRITE + 1))
    assert s == 413, body
    for q in ["?eof=maybe", "?eof="]:
        s, body = write(skiffd, sb, ex, b"x", query=q)
        assert s == 400 and err_code(body) == "invalid_argument", (q, body)
    s, body = write(skiffd, sb, "ex-00000000000000000000000000", b"x")
    assert s == 404, body
    s, body = write(skiffd, "sb-00000000000000000000000000", ex, b"x")
    assert s == 404, body
    write_ok(skiffd, sb, ex, b"\0" * MAX_WRITE)  # the largest write goes through
    write_ok(skiffd, sb, ex, b"end", eof=True)
    assert wait_end(skiffd, sb, ex)["exit_code"] == 0
    assert output(skiffd, sb, ex) == b"\0" * MAX_WRITE + b"end"
    for bad in [{"stdin": "yes"}, {"pty": 1}, {"pty_size": {"rows": 10, "cols": 10}},
                {"pty": True, "pty_size": {"rows": 0, "cols": 10}},
                {"pty": True, "pty_size": {"rows": 10, "cols": 1001}},
                {"pty": True, "pty_size": {"rows": 10}},
                {"pty": True, "pty_size": {"rows": 10, "cols": 10, "x": 1}}]:
        s, body = skiffd.api("POST", f"/v1/sandboxes/{sb}/exec", {"command": ["true"], **bad})
        assert s == 400 and err_code(body) == "invalid_argument", (bad, body)
    # A viewer may read, not write.
    s, t = skiffd.api("POST", "/v1/tokens", {"name": "v", "role": "viewer"})
    s, _, _ = skiffd.raw("POST", f"/v1/sandboxes/{sb}/execs/{plain}/stdin", b"x",
                         {"Authorization": f"Bearer {t['secret']}"})
    assert s == 403


def test_write_waits_for_room_one_at_a_time(skiffd):
    """A write larger than the pipe waits until the exec reads; a second one meanwhile is
    refused; the exec's end answers the waiting one."""
    import threading
    sb = new_sandbox(skiffd)
    ex = start(skiffd, sb, ["sleep", "60"], stdin=True)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=write(skiffd, sb, ex, b"a" * MAX_WRITE)))
    t.start()
    # The first write is in progress (the pipe is full, sleep reads nothing).
    assert wait_for(lambda: write(skiffd, sb, ex, b"b")[0] == 409, 10, 0.05)
    s, body = write(skiffd, sb, ex, b"b")
    assert s == 409 and "in progress" in body["error"]["message"], body
    s, body = send_signal(skiffd, sb, ex, "KILL")
    assert s == 200, body
    t.join(30)
    s, body = result["r"]
    assert s == 409 and "bytes were written" in body["error"]["message"], body
    got = wait_end(skiffd, sb, ex)
    assert got["exit_code"] == 137, got
    expect_holders(skiffd, 0)


# ---- signals ----


def test_signals(skiffd):
    sb = new_sandbox(skiffd)
    ex = start(skiffd, sb, ["sleep", "60"])
    s, body = send_signal(skiffd, sb, ex, "TERM")
    assert s == 200 and body["signal"] == signal.SIGTERM, body
    got = wait_end(skiffd, sb, ex)
    assert got["state"] == "exited" and got["exit_code"] == 143, got
    s, body = send_signal(skiffd, sb, ex, "TERM")
    assert s == 409 and err_code(body) == "conflict", body

    ex = start(skiffd, sb, ["sh", "-c", "trap 'echo got-usr1; exit 3' USR1; "
                                        "echo ready; while :; do sleep 0.05; done"])
    wait_output(skiffd, sb, ex, b"ready")
    s, body = send_signal(skiffd, sb, ex, int(signal.SIGUSR1))
    assert s == 200, body
    assert wait_end(skiffd, sb, ex)["exit_code"] == 3
    assert output(skiffd, sb, ex) == b"ready\ngot-usr1\n"

    ex = start(skiffd, sb, ["sleep", "60"])
    for bad in ["NOPE", "SIGNOPE", "", "0", "65", 0, 65, -9, 1.5, None, ["TERM"], "TERM "]:
        s, body = send_signal(skiffd, sb, ex, bad)
        assert s == 400 and err_code(body) == "invalid_argument", (bad, body)
    s, body = skiffd.api("POST", f"/v1/sandboxes/{sb}/execs/{ex}/signal",
                         {"signal": "TERM", "extra": 1})
    assert s == 400, body
    s, body = skiffd.api("GET", f"/v1/sandboxes/{sb}/execs/{ex}")
    assert body["state"] == "running"  # nothing sent
    s, body = send_signal(skiffd, sb, ex, "sigkill")
    assert s == 200 and body["signal"] == 9, body
    assert wait_end(skiffd, sb, ex)["exit_code"] == 137
    s, body = send_signal(skiffd, sb, "ex-00000000000000000000000000", "TERM")
    assert s == 404, body


# ---- terminals ----


def test_pty(skiffd):
    sb = new_sandbox(skiffd)
    ex = start(skiffd, sb, ["sh"], pty=True, pty_size={"rows": 30, "cols": 100})
    expect_holders(skiffd, 1)
    write_ok(skiffd, sb, ex, b"tty; stty size; [ -t 0 ] && [ -t 1 ] && echo is-a-tty; "
                             b"echo TERM=$TERM; echo err >&2\n")
    for needle in [b"\n/dev/pts/", b"\n30 100", b"\nis-a-tty", b"\nTERM=xterm-256color",
                   b"\nerr"]:
        wait_output(skiffd, sb, ex, needle)
    s, body = resize(skiffd, sb, ex, {"rows": 50, "cols": 132})
    assert s == 200 and body == {"rows": 50, "cols": 132}, body
    write_ok(skiffd, sb, ex, b"stty size\n")
    wait_output(skiffd, sb, ex, b"\n50 132")
    for bad in [{"rows": 0, "cols": 10}, {"rows": 10, "cols": 1001}, {"rows": 10},
                {"rows": "10", "cols": 10}, {"rows": 10, "cols": 10, "x": 1}]:
        s, body = resize(skiffd, sb, ex, bad)
        assert s == 400 and err_code(body) == "invalid_argument", (bad, body)
    write_ok(skiffd, sb, ex, b"exit 5\n")
    got = wait_end(skiffd, sb, ex)
    assert got["exit_code"] == 5, got
    assert output(skiffd, sb, ex, "stderr") == b""  # a terminal merges them
    expect_holders(skiffd, 0)
    s, body = resize(skiffd, sb, ex, {"rows": 10, "cols": 10})
    assert s == 409, body

    plain = start(skiffd, sb, ["sleep", "60"], stdin=True)
    s, body = resize(skiffd, sb, plain, {"rows": 10, "cols": 10})
    assert s == 409 and "no terminal" in body["error"]["message"], body
    # TERM from env wins; ^D (eof) ends a terminal's input.
    ex = start(skiffd, sb, ["sh", "-c", "echo TERM=$TERM; cat; echo after-eof"], pty=True,
               env={"TERM": "dumb"})
    wait_output(skiffd, sb, ex, b"TERM=dumb")
    write_ok(skiffd, sb, ex, b"", eof=True)
    assert wait_end(skiffd, sb, ex)["exit_code"] == 0
    wait_output(skiffd, sb, ex, b"after-eof")


def test_terminal_eof_again_and_after_part_of_a_line(skiffd):
    """eof on a terminal is a character, not a close: the terminal takes more input and more
    ends of file after it; and an eof right after part of a line still ends the reader's input
    (the part goes first)."""
    sb = new_sandbox(skiffd)
    ex = start(skiffd, sb, ["sh", "-c", "cat >/tmp/a; echo first-end; cat >/tmp/b; "
                            "echo second-end; echo \"[$(cat /tmp/a)|$(cat /tmp/b)]\"; "
                            "read line; echo \"got=$line\""], pty=True)
    write_ok(skiffd, sb, ex, b"abc", eof=True)  # mid-line
    wait_output(skiffd, sb, ex, b"first-end")
    write_ok(skiffd, sb, ex, b"def\n", eof=True)  # at a line's start
    wait_output(skiffd, sb, ex, b"second-end")
    write_ok(skiffd, sb, ex, b"more\n")  # still a terminal that takes input
    got = wait_end(skiffd, sb, ex)
    assert got["exit_code"] == 0, got
    out = output(skiffd, sb, ex)
    assert b"[abc|def]" in out and b"got=more" in out, out


# ---- restarts and cleanup ----


def spawner_of(d):
    return [p for p in all_pids()
            if (i := proc_info(p)) and i[0] == d.proc.pid and i[1] == "skiff-spawner"]


def kill_and_restart(d):
    """SIGKILL skiffd (its spawner ends when it sees it gone), then start it again."""
    spawners = spawner_of(d)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(30)
    d.log.close()
    assert wait_for(lambda: not any(proc_alive(p) for p in spawners), 20)
    d.start(pool=d.pool)


def test_stdin_and_terminal_survive_sigkill(skiffd):
    sb = new_sandbox(skiffd)
    cat = start(skiffd, sb, ["cat"], stdin=True)
    write_ok(skiffd, sb, cat, b"a")
    term = start(skiffd, sb, ["sh"], pty=True)
    write_ok(skiffd, sb, term, b"echo one\n")
    wait_output(skiffd, sb, term, b"\none")
    expect_holders(skiffd, 2)
    kill_and_restart(skiffd)
    assert len(holders(skiffd.instance)) == 2
    for ex in (cat, term):
        s, got = skiffd.api("GET", f"/v1/sandboxes/{sb}/execs/{ex}")
        assert s == 200 and got["state"] == "running", got
    write_ok(skiffd, sb, cat, b"b", eof=True)
    got = wait_end(skiffd, sb, cat)
    assert got["state"] == "exited" and got["exit_code"] == 0, got
    assert output(skiffd, sb, cat) == b"ab"
    s, body = resize(skiffd, sb, term, {"rows": 12, "cols": 34})
    assert s == 200, body
    write_ok(skiffd, sb, term, b"stty size; echo two; exit 4\n")
    got = wait_end(skiffd, sb, term)
    assert got["exit_code"] == 4, got
    out = output(skiffd, sb, term)
    assert b"\none" in out and b"\n12 34" in out and b"\ntwo" in out, out
    expect_holders(skiffd, 0)


def test_holders_go_with_their_sandbox(skiffd):
    sb = new_sandbox(skiffd)
    start(skiffd, sb, ["cat"], stdin=True)
    start(skiffd, sb, ["sh"], pty=True)
    expect_holders(skiffd, 2)
    # A small program of its own, not a fork of skiffd that would pin a copy of its memory.
    for p in holders(skiffd.instance):
        assert os.readlink(f"/proc/{p}/exe").endswith("/" + HOLDER), os.readlink(f"/proc/{p}/exe")
    s, body = skiffd.api("DELETE", f"/v1/sandboxes/{sb}")
    assert s == 200 and body["state"] == "terminated", body
    expect_holders(skiffd, 0)


def test_holders_go_with_gc(tmp_path):
    """skiffd gone for good: what it left, holders included, goes with kill and gc."""
    d = Skiffd(tmp_path / "data", new_instance("a"), free_port())
    d.start()
    try:
        sb = new_sandbox(d)
        start(d, sb, ["cat"], stdin=True)
        start(d, sb, ["sh"], pty=True)
        expect_holders(d, 2)
        spawners = spawner_of(d)
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(30)
        assert wait_for(lambda: not any(proc_alive(p) for p in spawners), 20)
        assert len(holders(d.instance)) == 2
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
        d.log.close()
        box = Box(SKIFF_BOX, d.instance, d.data)
        kill_all(box)
        end_instance(box)
    assert holders(d.instance) == []


def test_stdin_in_flight_limit(limited_skiffd):
    """Stdin bytes on their way to executions, all together, are capped (lowered to 256 KiB
    here): a write that would pass the cap is refused with 429 while another waits, and goes
    once that one is answered."""
    d = limited_skiffd
    cap = int(LOW_LIMITS["SKIFF_MAX_STDIN_INFLIGHT_BYTES"])
    sb = new_sandbox(d)
    stuck = start(d, sb, ["sleep", "1000"], stdin=True)  # never reads: the write waits
    cat = start(d, sb, ["cat"], stdin=True)
    waiting = {}
    t = threading.Thread(target=lambda: waiting.update(r=write(d, sb, stuck, bytes(cap - 1024))))
    t.start()
    try:
        # in flight once another write to the same exec is refused as one at a time
        assert wait_for(lambda: (lambda r: r[0] == 409 and "in progress" in
                                 r[1]["error"]["message"])(write(d, sb, stuck, b"")), 10, 0.05)
        s, body = write(d, sb, cat, b"x" * 2048)
        assert s == 429 and err_code(body) == "resource_exhausted", (s, body)
        assert "on their way" in body["error"]["message"], body
        write_ok(d, sb, cat, b"x" * 512)  # what still fits goes
    finally:
        send_signal(d, sb, stuck, "KILL")
        t.join(40)
    s, body = waiting["r"]
    assert s == 409 and err_code(body) == "conflict", (s, body)
    write_ok(d, sb, cat, b"y" * 2048, eof=True)
    assert wait_end(d, sb, cat)["exit_code"] == 0
