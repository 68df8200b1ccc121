"""Exec output and logs as streams: ndjson with one offset per stream, follow=true until the
process ends, reads that resume from offsets after a cut connection or a killed skiffd, and a
server whose memory stays bounded whatever the reader does."""
import base64
import http.client
import json
import os
import threading
import time

import pytest

from conftest import rss_kib, wait_for


def create(d, body=None):
    s, sb = d.api("POST", "/v1/sandboxes", body or {})
    assert s == 201, sb
    return sb["id"]


def start(d, sid, script, **extra):
    s, ex = d.api("POST", f"/v1/sandboxes/{sid}/exec",
                  {"command": ["sh", "-c", script], **extra})
    assert s == 201, ex
    return ex["id"]


def open_stream(d, path, timeout=60):
    """GET path on its own connection; (connection, response) with the reply's head read."""
    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=timeout)
    c.request("GET", path, headers={"Authorization": f"Bearer {d.token}"})
    return c, c.getresponse()


def events(resp):
    """The ndjson events of resp as they come, as (arrival time, event)."""
    while True:
        line = resp.readline()
        if not line:
            return
        assert line.endswith(b"\n"), line
        yield time.monotonic(), json.loads(line)


def collect(evs):
    """stdout bytes, stderr bytes and the exit_code event's value (None when absent) from a
    list of events, checking that the offsets run on without gaps."""
    out = {"stdout": b"", "stderr": b""}
    code = None
    for ev in evs:
        if "exit_code" in ev:
            code = ev["exit_code"]
            continue
        assert ev["offset"] == len(out[ev["stream"]]), ev
        out[ev["stream"]] += base64.b64decode(ev["data_b64"])
    return out["stdout"], out["stderr"], code


def asan(pid):
    """True when the process runs an ASan build: its allocator keeps freed memory in a
    quarantine (256 MiB), so its RSS says nothing about what the server holds."""
    with open(f"/proc/{pid}/maps") as f:
        return "libasan" in f.read()


def output_path(sid, exid, **q):
    query = "&".join(f"{k}={v}" for k, v in q.items())
    return f"/v1/sandboxes/{sid}/execs/{exid}/output?{query}"


def test_follow_reads_live_output_and_the_exit_code(skiffd):
    """A command printing for a while is read as it prints, both streams, then its exit code."""
    sid = create(skiffd)
    exid = start(skiffd, sid, "for i in 1 2 3 4 5 6; do echo out$i; echo err$i >&2; "
                              "sleep 0.5; done; exit 3")
    t0 = time.monotonic()
    c, r = open_stream(skiffd, output_path(sid, exid, format="ndjson", follow="true"))
    assert r.status == 200 and r.getheader("Content-Type") == "application/x-ndjson"
    got = list(events(r))
    c.close()
    out, err, code = collect(e for _, e in got)
    assert out == b"".join(b"out%d\n" % i for i in range(1, 7))
    assert err == b"".join(b"err%d\n" % i for i in range(1, 7))
    assert code == 3 and "exit_code" in got[-1][1]
    # Live: the first bytes came well before the command ended (~3 s), not all at the end.
    first = got[0][0] - t0
    last = got[-1][0] - t0
    assert first < 1.5 and last > 2.0, (first, last)
    # The same read again, without follow, gives the same bytes at once.
    s, _, body = skiffd.raw("GET", output_path(sid, exid, format="ndjson"),
                            headers={"Authorization": f"Bearer {skiffd.token}"})
    assert s == 200
    assert collect(json.loads(l) for l in body.splitlines()) == (out, err, 3)


def test_raw_follow_and_logs_follow(skiffd):
    sid = create(skiffd, {"command": ["sh", "-c", "for i in 1 2 3; do echo main$i; sleep 0.3;"
                                                  " done; echo bye >&2"]})
    c, r = open_stream(skiffd, f"/v1/sandboxes/{sid}/logs?follow=true")
    assert r.status == 200 and r.getheader("X-Skiff-Offset") == "0"
    assert r.read() == b"main1\nmain2\nmain3\n"
    c.close()
    c, r = open_stream(skiffd, f"/v1/sandboxes/{sid}/logs?format=ndjson&follow=true")
    out, err, code = collect(e for _, e in events(r))
    c.close()
    assert (out, err, code) == (b"main1\nmain2\nmain3\n", b"bye\n", 0)
    # From an offset: the rest only.
    c, r = open_stream(skiffd, f"/v1/sandboxes/{sid}/logs?follow=true&stream=stdout&offset=6")
    assert r.getheader("X-Skiff-Offset") == "6" and r.read() == b"main2\nmain3\n"
    c.close()


def test_resume_from_offsets_after_a_cut(skiffd):
    """A reader that drops its connection mid-stream resumes from the offsets it has: nothing
    twice, nothing missing."""
    sid = create(skiffd)
    exid = start(skiffd, sid, "i=0; while [ $i -lt 40 ]; do echo line$i; echo e$i >&2; "
                              "i=$((i+1)); sleep 0.05; done")
    seen = []
    c, r = open_stream(skiffd, output_path(sid, exid, format="ndjson", follow="true"))
    for _, ev in events(r):
        seen.append(ev)
        if len(seen) == 3:
            break
    c.close()  # cut: the server notices and stops (nothing leaks: checked at the end)
    out, err, _ = collect(seen)
    c, r = open_stream(skiffd, output_path(sid, exid, format="ndjson", follow="true",
                                           stdout_offset=len(out), stderr_offset=len(err)))
    rest = [e for _, e in events(r)]
    c.close()
    for ev in rest:
        if "offset" in ev:
            assert ev["offset"] >= (len(out) if ev["stream"] == "stdout" else len(err))
    full_out, full_err, code = collect(seen + rest)
    assert full_out == b"".join(b"line%d\n" % i for i in range(40))
    assert full_err == b"".join(b"e%d\n" % i for i in range(40))
    assert code == 0


def test_bad_queries(skiffd):
    sid = create(skiffd)
    exid = start(skiffd, sid, "echo hi")
    for q, word in [("format=xml", "format"), ("format=ndjson&stream=stdout", "stream"),
                    ("stream=both", "stream"), ("offset=-1", "offset"),
                    ("follow=maybe", "follow"), ("format=ndjson&stdout_offset=x", "stdout_offset"),
                    ("max=1e3", "max"), ("max=0&follow=true", "max"),
                    ("offset=99999999999999999999", "offset"), ("offset=+5", "offset")]:
        s, body = skiffd.api("GET", f"/v1/sandboxes/{sid}/execs/{exid}/output?{q}")
        assert s == 400 and word in body["error"]["message"], (q, body)
    s, _ = skiffd.api("GET", f"/v1/sandboxes/{sid}/execs/ex-nope/output?follow=true")
    assert s == 404


def test_100_mib_through_one_exec_with_server_memory_bounded(skiffd):
    """100 MiB written as fast as the command can: the reader gets every byte that was not
    dropped (offsets say which), in order and intact, and the server's memory stays bounded
    (it holds one read at a time, never the stream)."""
    total = 100 * 1024 * 1024
    sid = create(skiffd)
    before = rss_kib(skiffd.proc.pid)
    exid = start(skiffd, sid, f"yes 0123456789abcde | head -c {total}")
    peak = [before]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kib(skiffd.proc.pid))
            time.sleep(0.02)

    t = threading.Thread(target=sample)
    t.start()
    line = b"0123456789abcde\n"
    got = 0
    end = 0
    code = None
    try:
        c, r = open_stream(skiffd, output_path(sid, exid, format="ndjson", follow="true"))
        for _, ev in events(r):
            if "exit_code" in ev:
                code = ev["exit_code"]
                continue
            if ev["stream"] != "stdout":
                continue
            data = base64.b64decode(ev["data_b64"])
            off = ev["offset"]
            assert off >= end  # never backwards; forward jumps are drops
            # Intact: the bytes are the pattern at their offset.
            k = off % len(line)
            want = (line[k:] + line * (len(data) // len(line) + 2))[:len(data)]
            assert data == want, off
            got += len(data)
            end = off + len(data)
        c.close()
    finally:
        stop.set()
        t.join()
    assert code == 0 and end == total, (code, end)
    assert got > 16 * 1024 * 1024  # at least what a stream keeps
    if not asan(skiffd.proc.pid):
        assert peak[0] - before < 64 * 1024, (before, peak[0])


def test_a_slow_reader_holds_up_neither_the_process_nor_the_server(skiffd):
    """A follower that reads slowly: the command ends on its own time, the server holds a
    bounded amount, and the reader still gets the tail after the end, with what was dropped
    meanwhile shown by the offsets."""
    total = 48 * 1024 * 1024
    sid = create(skiffd)
    exid = start(skiffd, sid, f"yes 0123456789abcde | head -c {total}; echo done >&2")
    before = rss_kib(skiffd.proc.pid)
    c, r = open_stream(skiffd, output_path(sid, exid, format="ndjson", follow="true"))
    r.readline()
    # The process ends while the reader sits on its connection.
    assert wait_for(lambda: skiffd.api("GET", f"/v1/sandboxes/{sid}/execs/{exid}")[1]["state"]
                    != "running", 30)
    peak = before
    line = b"0123456789abcde\n"
    end = {"stdout": 0, "stderr": 0}
    got, code = 0, None
    for _, ev in events(r):
        peak = max(peak, rss_kib(skiffd.proc.pid))
        time.sleep(0.005)
        if "exit_code" in ev:
            code = ev["exit_code"]
            continue
        data = base64.b64decode(ev["data_b64"])
        assert ev["offset"] >= end[ev["stream"]]
        if ev["stream"] == "stdout":
            k = ev["offset"] % len(line)
            assert data == (line[k:] + line * (len(data) // len(line) + 2))[:len(data)]
            got += len(data)
        end[ev["stream"]] = ev["offset"] + len(data)
    c.close()
    if not asan(skiffd.proc.pid):
        assert peak - before < 64 * 1024, (before, peak)
    assert end["stdout"] == total and code == 0
    assert 16 * 1024 * 1024 <= got <= total
    s, ex = skiffd.api("GET", f"/v1/sandboxes/{sid}/execs/{exid}")
    assert ex["state"] == "exited" and ex["exit_code"] == 0


def test_many_followers_and_clients_that_leave(skiffd):
    """Twenty followers of one exec each get the whole output; ten more leave mid-stream; the
    server serves the rest and keeps answering."""
    sid = create(skiffd)
    exid = start(skiffd, sid, "for i in $(seq 1 20); do echo tick$i; sleep 0.1; done")
    results = []

    def follow(leave):
        c, r = open_stream(skiffd, output_path(sid, exid, format="ndjson", follow="true"))
        evs = []
        for _, ev in events(r):
            evs.append(ev)
            if leave:
                break
        c.close()
        if not leave:
            results.append(collect(evs))

    threads = [threading.Thread(target=follow, args=(i % 3 == 0,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    want = (b"".join(b"tick%d\n" % i for i in range(1, 21)), b"", 0)
    assert len(results) == 20 and all(x == want for x in results)
    s, _ = skiffd.api("GET", f"/v1/sandboxes/{sid}")
    assert s == 200


def test_streams_survive_a_killed_skiffd(skiffd):
    """kill -9 of skiffd dev while an exec runs and is followed: the exec runs on, and after
    the restart its output is read on from the offsets the client had, to its exit code."""
    sid = create(skiffd)
    exid = start(skiffd, sid, "for i in $(seq 1 30); do echo n$i; sleep 0.1; done; exit 5")
    c, r = open_stream(skiffd, output_path(sid, exid, format="ndjson", follow="true"))
    seen = []
    for _, ev in events(r):
        seen.append(ev)
        if len(seen) == 2:
            break
    skiffd.proc.kill()
    skiffd.proc.wait()
    skiffd.log.close()
    # The cut stream ends (the connection closes) rather than hanging.
    rest_of_cut = b""
    try:
        rest_of_cut = r.read()
    except (http.client.IncompleteRead, ConnectionError) as e:
        rest_of_cut = getattr(e, "partial", b"")
    c.close()
    for line in rest_of_cut.splitlines():
        if line.strip():
            seen.append(json.loads(line))
    skiffd.start(pool=skiffd.pool)
    out, err, code = collect(seen)
    assert code is None
    c, r = open_stream(skiffd, output_path(sid, exid, format="ndjson", follow="true",
                                           stdout_offset=len(out), stderr_offset=len(err)))
    rest = [e for _, e in events(r)]
    c.close()
    full_out, _, code = collect(seen + rest)
    assert full_out == b"".join(b"n%d\n" % i for i in range(1, 31))
    assert code == 5
    s, ex = skiffd.api("GET", f"/v1/sandboxes/{sid}/execs/{exid}")
    assert ex["state"] == "exited" and ex["exit_code"] == 5


def test_half_closed_and_stalled_clients_do_not_starve_others(skiffd):
    """Clients that stall mid-head, followers that half-close (taken as gone: the server drops
    them), followers that never read a noisy stream: a normal follower still gets its whole
    stream and a normal client is served meanwhile."""
    import socket
    sid = create(skiffd)
    exid = start(skiffd, sid, "i=0; while [ $i -lt 200 ]; do head -c 65536 /dev/zero; "
                              "i=$((i+1)); done; echo end >&2")
    req = (f"GET {output_path(sid, exid, format='ndjson', follow='true')} HTTP/1.1\r\n"
           f"Host: x\r\nAuthorization: Bearer {skiffd.token}\r\n\r\n").encode()
    socks = []
    try:
        for i in range(60):
            s = socket.create_connection(("127.0.0.1", skiffd.port))
            socks.append(s)
            if i < 20:  # slowloris: half a head, then nothing
                s.sendall(b"GET /v1/whoami HTTP/1.1\r\nHost: x\r\n")
            elif i < 40:  # a follower that half-closes
                s.sendall(req)
                s.shutdown(socket.SHUT_WR)
            else:  # a follower that never reads
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.sendall(req)
        c, r = open_stream(skiffd, output_path(sid, exid, format="ndjson", follow="true"))
        out, err, code = collect(e for _, e in events(r))
        c.close()
        assert len(out) == 200 * 65536 and out.count(0) == len(out)
        assert (err, code) == (b"end\n", 0)
        s2, body = skiffd.api("POST", f"/v1/sandboxes/{sid}/exec?wait=true",
                              {"command": ["echo", "served"]}, timeout=30)
        assert s2 == 200 and body["stdout"] == "served\n"
        # The half-closed followers were let go: their connections end (no timeout).
        for s in socks[20:40]:
            s.settimeout(20)
            try:
                while s.recv(1 << 16):
                    pass
            except ConnectionResetError:
                pass
    finally:
        for s in socks:
            s.close()


def test_reads_without_follow_over_one_mib(skiffd, tmp_path):
    """One read returns at most 1 MiB a stream: the CLI and the SDK read on to the end."""
    import subprocess
    import sys
    from conftest import REPO, SKIFF
    sid = create(skiffd)
    exid = start(skiffd, sid, "yes 0123456789abcdef | head -c 3000000")
    assert wait_for(lambda: skiffd.api("GET", f"/v1/sandboxes/{sid}/execs/{exid}")[1]["state"]
                    == "exited", 30)
    want = (b"0123456789abcdef\n" * 200000)[:3000000]
    env = dict(os.environ, SKIFF_URL=skiffd.url, SKIFF_TOKEN=skiffd.token,
               XDG_CONFIG_HOME=str(tmp_path))
    p = subprocess.run([str(SKIFF), "sandbox", "logs", "--exec", exid, sid], env=env,
                       capture_output=True, timeout=60)
    assert p.returncode == 0 and p.stdout == want, (p.returncode, len(p.stdout), p.stderr)
    sys.path.insert(0, str(REPO / "sdk" / "python"))
    import skiff
    c = skiff.Client(url=skiffd.url, token=skiffd.token)
    from skiff.stream import OutputStream
    out = OutputStream(c, f"/v1/sandboxes/{sid}/execs/{exid}/output", "stdout")
    assert b"".join(out.iter_bytes(follow=False)) == want


def test_a_raw_follow_never_ends_whole_with_a_hole(skiffd):
    """A writer far faster than the reader: bytes get dropped. A raw follow can't say so in
    its bytes, so it is cut short; when it does end whole, it has every byte from where it
    started."""
    total = 64 * 1024 * 1024
    sid = create(skiffd)
    exid = start(skiffd, sid, f"head -c {total} /dev/zero")
    c, r = open_stream(skiffd, output_path(sid, exid, follow="true"))
    start_at = int(r.getheader("X-Skiff-Offset"))
    n, whole = 0, True
    try:
        while True:
            b = r.read(1 << 20)
            if not b:
                break
            n += len(b)
    except (http.client.IncompleteRead, ConnectionError):
        whole = False
    c.close()
    if whole:
        assert n == total - start_at, (n, start_at)
    else:
        assert n < total
