#!/usr/bin/env python3
"""Exec output streaming against a real `skiffd dev`: first byte, follow wake-up, throughput.

Starts its own skiffd dev (a temporary --data directory, a free port on 127.0.0.1, its own runtime
instance) with one idle sandbox, and measures over keep-alive connections (TCP_NODELAY), timing
with perf_counter_ns (CLOCK_MONOTONIC) on the client's side:

  1. time to first byte, N rounds: t0 before `POST …/exec` of `echo hi` (no wait: it answers once
     the command runs), then `GET …/execs/{ex}/output?format=ndjson&follow=true` on the same
     connection; t1 when the first event with data has arrived (the stream is then read to its
     exit_code and checked: `hi\\n`, exit 0). In the same rounds, interleaved: the exec of `echo hi`
     with ?wait=true (one round trip).
  2. follow wake-up: `sh -c 'sleep 0.2; echo hi'`, the ndjson follow GET sent right after the POST,
     so the read waits in the spawner when the command writes. The write is seen on the host by
     inotify (IN_MODIFY) on the exec's stdout file, /run/skiff/<instance>/<sandbox>/execs/<ex>.stdout,
     which the command writes itself; the wake-up is the event's arrival at the client minus that,
     one clock (CLOCK_MONOTONIC) for both. (busybox `date` has no %N and adjtimex is refused in the
     sandbox, so the sandbox can't stamp its write finer than /proc/uptime's 10 ms.)
  3. throughput: an exec writing S MiB to stdout (`yes 0123456789abcdef | dd bs=1M count=S
     iflag=fullblock`), read with follow=true raw (stream=stdout) and ndjson, the GET sent right
     after the POST. MB/s = bytes received / (last byte - first byte), 10^6 bytes. The writer
     outruns the reader and each stream keeps only its last 16 MiB: received vs written (the
     exec's X-Skiff-Size) and, for ndjson, the bytes skipped by offsets that jump; a raw follow
     cut short where bytes were dropped is resumed from its offset (the jump shown by the next
     X-Skiff-Offset), and one that skips them silently is caught by its content: every byte
     received is checked against the pattern at its offset.
     Also the CPU (user + system) and the minor page faults of skiffd (server and worker, one
     process in dev) and its spawner per MiB received, which a loaded machine changes less than
     MB/s, and the client's own CPU per MiB (this Python process: reading, decoding, checking).
  4. kept output, all of it there: an exec's finished 15 MiB output read from offset 0 with
     follow=true raw and ndjson, and in plain 1 MiB raw reads (one request each).
  5. anchors, in the same run, interleaved with 3: the same S MiB of the pattern from a host file
     by `cat` into a pipe that this process reads and discards, and `skiff-box -- sh -c '<the same
     writer>'` (a one-shot sandbox, no server) whose stdout is such a pipe; same MB/s definition.

Nothing here asserts on timings. Everything it made is removed at the end: the sandbox deleted
over the API, skiffd stopped with SIGTERM, `skiff-box gc` for both instances, /run/skiff/<instance>
checked gone, the data directory removed.

Usage (as root): bench/exec_stream.py [--runs 200] [--wake-runs 30] [--size-mib 256]
                 [--tp-runs 2] [--kept-runs 5] [--instance bns1] [--build build/bench]
The last line is one summary for scripts: `exec_stream key=value ...`.
"""

import argparse
import binascii
import calendar
import ctypes
import glob
import http.client
import json
import os
import select
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from api_cycle import (Api, cleanup, log, ms, pct, preflight, proc_cpu_s,  # noqa: E402
                       proc_minflt, run_end, run_start, skiffd_args)

MIB = 1024 * 1024
PATTERN = b"0123456789abcdef\n"
# The pattern from any phase, for a comparison of up to 2 MiB at a time.
PATTERN_RUN = PATTERN * ((2 * MIB) // len(PATTERN) + 2)
COMPARE_BYTES = 2 * MIB
KEPT_MIB = 15  # under the 16 MiB a stream keeps: nothing dropped
MAX_RESUMES = 100  # ndjson streams of one read that end without their exit_code
IN_MODIFY = 0x2


def writer_cmd(mib):
    return ["sh", "-c", f"yes 0123456789abcdef | dd bs=1048576 count={mib} iflag=fullblock 2>/dev/null"]


def pattern_ok(offset, data):
    """Whether data is the writer's pattern as it stands at offset."""
    view = memoryview(data)
    for i in range(0, len(data), COMPARE_BYTES):
        part = view[i:i + COMPARE_BYTES]
        p = (offset + i) % len(PATTERN)
        if part != PATTERN_RUN[p:p + len(part)]:
            return False
    return True


def server_usage(sk):
    """CPU seconds (user + system) and minor page faults of skiffd (server and worker) and its
    spawner so far."""
    pids = [sk.proc.pid, sk.spawner_pid()]
    return proc_cpu_s(pids), proc_minflt(pids)


def per_mib(u0, u1, nbytes):
    """CPU ms and page faults per MiB between two server_usage()s."""
    mib = max(nbytes, 1) / MIB
    return (u1[0] - u0[0]) * 1000 / mib, (u1[1] - u0[1]) / mib


def mb_s(nbytes, ns):
    return nbytes / (ns / 1e9) / 1e6 if ns > 0 else float("nan")


class Stream:
    """A streamed GET on api's keep-alive connection, read as it comes. A body that ends without
    its last chunk (the server cut the stream short) ends it with cut set."""

    def __init__(self, api, path):
        self.api = api
        self.cut = False
        api.conn.request("GET", path, headers={"Authorization": "Bearer " + api.token})
        self.r = api.conn.getresponse()
        if self.r.status != 200:
            body = self.r.read()[:300]
            self.done()
            raise RuntimeError(f"GET {path}: HTTP {self.r.status}: {body!r}")
        self.buf = b""

    def chunk(self):
        """What has come (at most 1 MiB), b"" at the end."""
        try:
            return self.r.read1(MIB)
        except (http.client.HTTPException, OSError):
            self.cut = True
            return b""

    def line(self):
        """The next line, without its newline; None at the end (a last partial line is an error).
        A line's pieces are joined once (an event's line can be more than a MiB)."""
        parts = []
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                parts.append(self.buf[:i])
                self.buf = self.buf[i + 1:]
                return b"".join(parts)
            parts.append(self.buf)
            self.buf = self.chunk()
            if not self.buf:
                if any(parts) and not self.cut:
                    raise RuntimeError(f"stream ended inside a line: {parts[0][:100]!r}")
                return None

    def done(self):
        if not self.cut:
            self.r.read()
        if self.cut or self.r.will_close:
            self.api.connect()


class NdjsonReader:
    """An exec's output as ndjson with follow=true, resumed from its offsets when a stream ends
    without its exit_code (cut short or not). on_data(stream, offset, data, t_ns) sees every
    event with data."""

    def __init__(self, api, sid, ex):
        self.api, self.sid, self.ex = api, sid, ex
        self.offset = [0, 0]
        self.skipped = [0, 0]  # bytes an offset jumped over (dropped before they were read)
        self.resumes = 0
        self.exit_code = None

    def run(self, on_data):
        names = ("stdout", "stderr")
        while True:
            s = Stream(self.api, f"/v1/sandboxes/{self.sid}/execs/{self.ex}/output?format=ndjson"
                                 f"&follow=true&stdout_offset={self.offset[0]}"
                                 f"&stderr_offset={self.offset[1]}")
            ended = False
            while True:
                ln = s.line()
                if ln is None:
                    break
                t = time.perf_counter_ns()
                ev = json.loads(ln)
                if "exit_code" in ev:
                    self.exit_code = ev["exit_code"]
                    ended = True
                    continue
                si = names.index(ev["stream"])
                data = binascii.a2b_base64(ev["data_b64"])
                if ev["offset"] < self.offset[si]:
                    raise RuntimeError(f"{self.ex}: {ev['stream']} went back to {ev['offset']}")
                self.skipped[si] += ev["offset"] - self.offset[si]
                self.offset[si] = ev["offset"] + len(data)
                on_data(si, ev["offset"], data, t)
            s.done()
            if ended:
                return
            self.resumes += 1
            if self.resumes > MAX_RESUMES:
                raise RuntimeError(f"{self.ex}: {MAX_RESUMES} ndjson streams without exit_code")


def post_exec(api, sid, command, wait=False):
    st, doc = api.call("POST", f"/v1/sandboxes/{sid}/exec" + ("?wait=true" if wait else ""),
                       {"command": command})
    if st not in (200, 201) or not isinstance(doc, dict):
        raise RuntimeError(f"exec {command}: HTTP {st}: {doc}")
    return doc


def exec_ended(api, sid, ex, timeout=120.0):
    """The exec's record once it ended (polled every 20 ms)."""
    deadline = time.monotonic() + timeout
    while True:
        st, doc = api.call("GET", f"/v1/sandboxes/{sid}/execs/{ex}")
        if st != 200:
            raise RuntimeError(f"exec {ex}: HTTP {st}: {doc}")
        if doc.get("state") not in ("pending", "running"):
            return doc
        if time.monotonic() > deadline:
            raise RuntimeError(f"exec {ex} still {doc.get('state')} after {timeout:.0f} s")
        time.sleep(0.02)


def raw_read(api, sid, ex, offset, max_bytes=None):
    """One plain raw read of stdout: (body, X-Skiff-Offset, X-Skiff-Size, X-Skiff-Eof)."""
    path = f"/v1/sandboxes/{sid}/execs/{ex}/output?stream=stdout&offset={offset}"
    if max_bytes is not None:
        path += f"&max={max_bytes}"
    api.conn.request("GET", path, headers={"Authorization": "Bearer " + api.token})
    r = api.conn.getresponse()
    body = r.read()
    if r.will_close:
        api.connect()
    if r.status != 200:
        raise RuntimeError(f"GET {path}: HTTP {r.status}: {body[:300]!r}")
    return (body, int(r.getheader("X-Skiff-Offset")), int(r.getheader("X-Skiff-Size")),
            r.getheader("X-Skiff-Eof") == "true")


def rfc3339_ms(s):
    """Milliseconds since the epoch of the server's "YYYY-MM-DDTHH:MM:SS.mmmZ"."""
    t = time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S")
    return calendar.timegm(t) * 1000 + int(s[20:23])


def exec_duration_ms(doc):
    if not doc.get("started_at") or not doc.get("ended_at"):
        return float("nan")
    return rfc3339_ms(doc["ended_at"]) - rfc3339_ms(doc["started_at"])


# ---- 1. time to first byte, with the ?wait=true round trip interleaved ----

def first_byte(api, sid, runs, warmup):
    res = {"ttfb": [], "post": [], "get": [], "wait": [], "resumes": 0}
    for i in range(warmup + runs):
        t0 = time.perf_counter_ns()
        ex = post_exec(api, sid, ["echo", "hi"])["id"]
        t_post = time.perf_counter_ns()
        first = []
        got = bytearray()

        def on_data(si, offset, data, t):
            if not first:
                first.append(t)
            if si == 0:
                got.extend(data)

        rd = NdjsonReader(api, sid, ex)
        rd.run(on_data)
        if bytes(got) != b"hi\n" or rd.exit_code != 0 or not first:
            raise RuntimeError(f"{ex}: stdout {bytes(got)!r} exit_code {rd.exit_code}")
        a = time.perf_counter_ns()
        doc = post_exec(api, sid, ["echo", "hi"], wait=True)
        b = time.perf_counter_ns()
        if doc.get("stdout") != "hi\n" or doc.get("exit_code") != 0:
            raise RuntimeError(f"exec ?wait=true: {doc}")
        if i >= warmup:
            res["ttfb"].append(ms(first[0] - t0))
            res["post"].append(ms(t_post - t0))
            res["get"].append(ms(first[0] - t_post))
            res["wait"].append(ms(b - a))
            res["resumes"] += rd.resumes
    return res


# ---- 2. follow wake-up ----

class WriteWatch:
    """When a file is first modified, seen by inotify in a thread (CLOCK_MONOTONIC, ns)."""

    libc = ctypes.CDLL(None, use_errno=True)

    def __init__(self, path):
        self.fd = self.libc.inotify_init1(os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if self.libc.inotify_add_watch(self.fd, path.encode(), IN_MODIFY) < 0:
            e = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(e, f"inotify_add_watch {path}")
        self.t = None
        self.th = threading.Thread(target=self.wait)
        self.th.start()

    def wait(self):
        rd, _, _ = select.select([self.fd], [], [], 30.0)
        if rd:
            self.t = time.perf_counter_ns()
            os.read(self.fd, 4096)

    def close(self):
        self.th.join()
        os.close(self.fd)
        return self.t


def wake_up(api, sk, sid, runs, warmup):
    res = {"wake": [], "post_to_write": [], "resumes": 0}
    for i in range(warmup + runs):
        t0 = time.perf_counter_ns()
        ex = post_exec(api, sid, ["sh", "-c", "sleep 0.2; echo hi"])["id"]
        paths = glob.glob(f"/run/skiff/{sk.args.instance}/*/execs/{ex}.stdout")
        if len(paths) != 1:
            raise RuntimeError(f"{ex}: its stdout file on the host: {paths}")
        w = WriteWatch(paths[0])
        arrived = []

        def on_data(si, offset, data, t):
            if not arrived:
                arrived.append(t)

        rd = NdjsonReader(api, sid, ex)
        try:
            rd.run(on_data)
        finally:
            t_write = w.close()
        if t_write is None or not arrived or rd.exit_code != 0:
            raise RuntimeError(f"{ex}: write seen {t_write}, data {arrived}, exit {rd.exit_code}")
        if i >= warmup:
            res["wake"].append(ms(arrived[0] - t_write))
            res["post_to_write"].append(ms(t_write - t0))
            res["resumes"] += rd.resumes
    return res


# ---- 3. throughput with the writer outrunning the reader ----

def follow_raw(api, sid, ex, t_sent):
    """Read stdout raw with follow=true from offset 0 to its end. Raw bytes can't show that some
    were dropped before they were read: a stream cut short there is resumed from the bytes it
    brought, and the next X-Skiff-Offset says where they go on (a jump shown). Every chunk is
    checked against the pattern at its phase; one that doesn't fit is a jump the stream did not
    show (a server that skips silently): the phase is found again from its last newline, what
    follows it checked, and the offset is lost (such a stream can't be resumed)."""
    pos, phase = 0, 0  # the offset reached (None once lost) and the pattern's phase there
    n, shown, silent, bad, resumes, t_first, t_last = 0, 0, 0, 0, 0, None, None
    tail = b""
    while True:
        s = Stream(api, f"/v1/sandboxes/{sid}/execs/{ex}/output?stream=stdout&follow=true"
                        f"&offset={pos}")
        start = int(s.r.getheader("X-Skiff-Offset", "0"))
        if start < pos:
            raise RuntimeError(f"{ex}: a raw read from {pos} started at {start}")
        shown += start > pos
        pos, phase = start, start % len(PATTERN)
        while True:
            c = s.chunk()
            if not c:
                break
            t_last = time.perf_counter_ns()
            if t_first is None:
                t_first = t_last
            if pattern_ok(phase, c):
                phase = (phase + len(c)) % len(PATTERN)
                pos = pos + len(c) if pos is not None else None
            else:
                silent += 1
                j = c.rfind(b"\n")
                if j < 0 or not pattern_ok(0, c[j + 1:]):
                    bad += 1
                phase, pos = len(c) - 1 - j, None
            n += len(c)
            tail = c[-4096:] if len(c) >= 4096 else (tail + c)[-4096:]
        s.done()
        if not s.cut:
            break
        resumes += 1
        if pos is None or resumes > MAX_RESUMES:
            raise RuntimeError(f"{ex}: raw stream cut short {resumes} times, offset "
                               f"{'lost' if pos is None else pos}")
    return {"received": n, "jumps": shown + silent, "shown": shown, "silent": silent,
            "resumes": resumes, "bad": bad, "tail": tail, "first": t_first, "last": t_last,
            "sent": t_sent}


def follow_ndjson(api, sid, ex, t_sent):
    st = {"received": 0, "bad": 0, "first": None, "last": None, "sent": t_sent, "tail": b""}

    def on_data(si, offset, data, t):
        if si != 0:
            raise RuntimeError(f"{ex}: stderr {data[:200]!r}")
        if st["first"] is None:
            st["first"] = t
        st["last"] = t
        st["received"] += len(data)
        st["bad"] += not pattern_ok(offset, data)
        st["tail"] = data[-4096:] if len(data) >= 4096 else (st["tail"] + data)[-4096:]

    rd = NdjsonReader(api, sid, ex)
    rd.run(on_data)
    st["skipped"] = rd.skipped[0]
    st["resumes"] = rd.resumes
    st["exit_code"] = rd.exit_code
    return st


def flood(sk, api, sid, mib, how):
    """One exec writing mib MiB, read by how ("raw" or "ndjson") from the moment it runs."""
    cpu0 = time.process_time()
    srv0 = server_usage(sk)
    t0 = time.perf_counter_ns()
    ex = post_exec(api, sid, writer_cmd(mib))["id"]
    t_sent = time.perf_counter_ns()
    st = (follow_raw if how == "raw" else follow_ndjson)(api, sid, ex, t_sent)
    st["client_cpu_s"] = time.process_time() - cpu0
    st["server_ms_mib"], st["faults_mib"] = per_mib(srv0, server_usage(sk), st["received"])
    st["post"] = t0
    doc = exec_ended(api, sid, ex)
    if doc.get("exit_code") != 0:
        raise RuntimeError(f"{ex}: the writer ended {doc}")
    _, _, size, eof = raw_read(api, sid, ex, mib * MIB)
    st["written"] = size
    st["writer_ms"] = exec_duration_ms(doc)
    want_tail = PATTERN_RUN[(size - 4096) % len(PATTERN):][:4096]
    if size != mib * MIB or not eof or st["bad"] or st["tail"] != want_tail:
        raise RuntimeError(f"{ex} ({how}): written {size} eof {eof}, {st['bad']} chunks off "
                           "the pattern, or the last 4 KiB are not the output's end")
    st["mb_s"] = mb_s(st["received"], st["last"] - st["first"])
    st["first_ms"] = ms(st["first"] - st["post"])
    return st


def host_pipe(cmd, env=None):
    """Run cmd with stdout a pipe that this process reads (1 MiB reads) and discards."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, bufsize=0)
    fd = p.stdout.fileno()
    n, t_first, t_last = 0, None, None
    t0 = time.perf_counter_ns()
    while True:
        b = os.read(fd, MIB)
        if not b:
            break
        t_last = time.perf_counter_ns()
        if t_first is None:
            t_first = t_last
        n += len(b)
    p.stdout.close()
    if p.wait() != 0 or t_first is None:
        raise RuntimeError(f"{cmd}: exited {p.returncode} after {n} bytes")
    return {"received": n, "mb_s": mb_s(n, t_last - t_first), "first_ms": ms(t_first - t0),
            "whole_ms": ms(t_last - t0)}


# ---- 4. kept output: all of it there ----

def kept(sk, api, sid, runs):
    ex = post_exec(api, sid, writer_cmd(KEPT_MIB))["id"]
    doc = exec_ended(api, sid, ex)
    if doc.get("exit_code") != 0:
        raise RuntimeError(f"{ex}: the writer ended {doc}")
    size = KEPT_MIB * MIB
    res = {"raw": [], "ndjson": [], "plain": [], "plain_read_ms": []}
    for i in range(runs + 1):  # the first round warms up
        c0 = server_usage(sk)
        t0 = time.perf_counter_ns()
        raw = follow_raw(api, sid, ex, t0)
        c1 = server_usage(sk)
        t1 = time.perf_counter_ns()
        nd = follow_ndjson(api, sid, ex, t1)
        c2 = server_usage(sk)
        t2 = time.perf_counter_ns()
        off, reads = 0, []
        while True:
            a = time.perf_counter_ns()
            body, start, total, eof = raw_read(api, sid, ex, off)
            reads.append(ms(time.perf_counter_ns() - a))
            if start != off or not pattern_ok(off, body):
                raise RuntimeError(f"{ex}: plain read at {off}: from {start}, off the pattern")
            off += len(body)
            if eof:
                break
        t3 = time.perf_counter_ns()
        c3 = server_usage(sk)
        for name, st in (("raw", raw), ("ndjson", nd)):
            if st["received"] != size or st["bad"] or st.get("jumps") or st.get("skipped"):
                raise RuntimeError(f"{ex}: kept {name}: {st['received']} of {size} bytes, "
                                   f"{st['bad']} off the pattern")
        if off != size:
            raise RuntimeError(f"{ex}: plain reads ended at {off} of {size}")
        if i == 0:
            continue
        res["raw"].append({"mb_s": mb_s(size, raw["last"] - raw["first"]),
                           "whole_mb_s": mb_s(size, raw["last"] - t0),
                           "first_ms": ms(raw["first"] - t0), "use": per_mib(c0, c1, size)})
        res["ndjson"].append({"mb_s": mb_s(size, nd["last"] - nd["first"]),
                              "whole_mb_s": mb_s(size, nd["last"] - t1),
                              "first_ms": ms(nd["first"] - t1), "use": per_mib(c1, c2, size)})
        res["plain"].append({"whole_mb_s": mb_s(size, t3 - t2), "reads": len(reads),
                             "use": per_mib(c2, c3, size)})
        res["plain_read_ms"] += reads
    return res


def med(rows, key, i=None):
    return statistics.median(r[key] if i is None else r[key][i] for r in rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=200, help="first-byte rounds (200)")
    ap.add_argument("--warmup", type=int, default=10, help="unmeasured rounds first (10)")
    ap.add_argument("--wake-runs", type=int, default=30, help="follow wake-up runs (30)")
    ap.add_argument("--size-mib", type=int, default=256, help="MiB the flooding exec writes (256)")
    ap.add_argument("--tp-runs", type=int, default=2,
                    help="rounds of raw, ndjson, cat and skiff-box at that size (2)")
    ap.add_argument("--kept-runs", type=int, default=5, help="reads of the kept 15 MiB (5)")
    skiffd_args(ap, 1, "bns1", "bns2", "where the temporary data directory and the anchor's "
                "file go (default: $TMPDIR or /tmp)")
    args = ap.parse_args()
    if min(args.size_mib, args.runs, args.wake_runs, args.tp_runs, args.kept_runs) < 1:
        sys.exit("exec_stream: --size-mib, --runs, --wake-runs, --tp-runs, --kept-runs: 1 or more")
    preflight("exec_stream", args)
    instances = (args.instance, args.box_instance)

    tmp, sk = run_start("exec_stream", args)
    res = {}
    ok = False
    try:
        sk.start()
        api = Api(sk.port, sk.token)
        st, doc = api.call("POST", "/v1/sandboxes", {"timeout_s": 3600})
        if st not in (200, 201) or not isinstance(doc, dict) or doc.get("state") != "running":
            raise RuntimeError(f"create: HTTP {st}: {doc}")
        sid = doc["id"]

        log(f"\nfirst byte: {args.runs} rounds after {args.warmup} warm-ups, `echo hi`, "
            "ndjson follow, with ?wait=true interleaved ...")
        res["fb"] = first_byte(api, sid, args.runs, args.warmup)

        log(f"follow wake-up: {args.wake_runs} runs of `sleep 0.2; echo hi` after 3 warm-ups ...")
        res["wake"] = wake_up(api, sk, sid, args.wake_runs, 3)

        log(f"throughput: {args.tp_runs} rounds of an exec writing {args.size_mib} MiB (raw, "
            "ndjson), host cat and skiff-box of as much ...")
        src = os.path.join(tmp, "pattern")
        with open(src, "wb") as f:
            left = args.size_mib * MIB
            block = PATTERN_RUN[:MIB - MIB % len(PATTERN)]
            while left > 0:
                left -= f.write(block[:left])
        box_env = dict(os.environ, SKIFF_DATA=sk.data, SKIFF_INSTANCE=args.box_instance)
        box_cmd = [os.path.join(sk.bin, "skiff-box"), "--"] + writer_cmd(args.size_mib)
        res["tp"] = {"raw": [], "ndjson": [], "cat": [], "box": []}
        for _ in range(args.tp_runs):
            res["tp"]["raw"].append(flood(sk, api, sid, args.size_mib, "raw"))
            res["tp"]["ndjson"].append(flood(sk, api, sid, args.size_mib, "ndjson"))
            res["tp"]["cat"].append(host_pipe(["cat", src]))
            res["tp"]["box"].append(host_pipe(box_cmd, env=box_env))
        for name in ("cat", "box"):
            for r in res["tp"][name]:
                if r["received"] != args.size_mib * MIB:
                    raise RuntimeError(f"{name}: {r['received']} bytes")
        os.unlink(src)

        log(f"kept output: {KEPT_MIB} MiB, {args.kept_runs} reads each way after one warm-up ...")
        res["kept"] = kept(sk, api, sid, args.kept_runs)
        api.close()
        ok = True
    finally:
        res["cleanup"] = cleanup(sk, instances, tmp, ok)

    # ---- report ----
    fb = res["fb"]
    log(f"\n### Time to first byte of exec output, {args.runs} rounds (ms)\n")
    log("| what | p50 | p90 | p99 | mean |")
    log("| --- | --- | --- | --- | --- |")
    for key, label in (("ttfb", "**first byte**: POST exec (no wait) + ndjson follow GET to the "
                                "first event with data"),
                       ("post", "of which the POST (answers once `echo` runs)"),
                       ("get", "of which the GET, to its first event"),
                       ("wait", "anchor: exec `echo hi` with `?wait=true`, whole round trip")):
        s = fb[key]
        log(f"| {label} | {pct(s, 50):.2f} | {pct(s, 90):.2f} | {pct(s, 99):.2f} | "
            f"{statistics.mean(s):.2f} |")
    w = res["wake"]
    log(f"\n### Follow wake-up, {args.wake_runs} runs (ms)\n")
    log("| what | p50 | p90 | p99 | max |")
    log("| --- | --- | --- | --- | --- |")
    for key, label in (("wake", "**write seen on the host (inotify) → its event at the client**"),
                       ("post_to_write", "POST sent → the write (the 0.2 s sleep)")):
        s = w[key]
        log(f"| {label} | {pct(s, 50):.2f} | {pct(s, 90):.2f} | {pct(s, 99):.2f} | {max(s):.2f} |")
    tp = res["tp"]
    size = args.size_mib * MIB
    log(f"\n### Throughput, an exec writing {args.size_mib} MiB, the reader from its start "
        "(MB/s = 10^6 bytes/s, first byte → last)\n")
    log("| run | how | MB/s | received MiB | written MiB | dropped MiB | jumps seen | first byte ms "
        "| writer ms | server CPU ms/MiB | server faults/MiB | client CPU ms/MiB |")
    log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for i in range(args.tp_runs):
        for name in ("raw", "ndjson"):
            r = tp[name][i]
            jumps = f"{r['shown']} shown, {r['silent']} silent" if name == "raw" \
                else f"{r['skipped'] / MIB:.1f} MiB skipped"
            log(f"| {i + 1} | follow {name} | **{r['mb_s']:.1f}** | {r['received'] / MIB:.1f} | "
                f"{r['written'] / MIB:.0f} | {(r['written'] - r['received']) / MIB:.1f} | {jumps} | "
                f"{r['first_ms']:.1f} | {r['writer_ms']:.0f} | {r['server_ms_mib']:.1f} | "
                f"{r['faults_mib']:.0f} | {r['client_cpu_s'] * 1000 * MIB / r['received']:.1f} |")
        for name, label in (("cat", "anchor: host `cat` of a file → pipe"),
                            ("box", "anchor: `skiff-box -- <writer>` → pipe")):
            r = tp[name][i]
            log(f"| {i + 1} | {label} | {r['mb_s']:.1f} | {r['received'] / MIB:.1f} | "
                f"{args.size_mib} | 0 | | {r['first_ms']:.1f} | {r['whole_ms']:.0f} (whole) | | | |")
    log(f"\nstreams resumed (raw: cut short; ndjson: ended without exit_code): first byte "
        f"{fb['resumes']}, wake-up {w['resumes']}, throughput raw "
        f"{sum(r['resumes'] for r in tp['raw'])}, ndjson {sum(r['resumes'] for r in tp['ndjson'])}")
    k = res["kept"]
    log(f"\n### Kept output: a finished {KEPT_MIB} MiB read from offset 0, {args.kept_runs} reads "
        "each (medians)\n")
    log("| how | MB/s first byte → last | MB/s whole request | first byte ms | server CPU ms/MiB "
        "| server faults/MiB |")
    log("| --- | --- | --- | --- | --- | --- |")
    for name, label in (("raw", "follow raw"), ("ndjson", "follow ndjson")):
        log(f"| {label} | **{med(k[name], 'mb_s'):.1f}** | {med(k[name], 'whole_mb_s'):.1f} | "
            f"{med(k[name], 'first_ms'):.1f} | {med(k[name], 'use', 0):.1f} | "
            f"{med(k[name], 'use', 1):.0f} |")
    pr = k["plain_read_ms"]
    log(f"| plain raw reads, one request per 1 MiB ({k['plain'][0]['reads']} requests) | | "
        f"{med(k['plain'], 'whole_mb_s'):.1f} | | {med(k['plain'], 'use', 0):.1f} | "
        f"{med(k['plain'], 'use', 1):.0f} |")
    log(f"\none plain 1 MiB raw read: p50 {pct(pr, 50):.2f} ms, p90 {pct(pr, 90):.2f} ms, "
        f"p99 {pct(pr, 99):.2f} ms")
    summary = {
        "ttfb_p50_ms": pct(fb["ttfb"], 50), "ttfb_p90_ms": pct(fb["ttfb"], 90),
        "ttfb_p99_ms": pct(fb["ttfb"], 99), "ttfb_get_p50_ms": pct(fb["get"], 50),
        "wait_exec_p50_ms": pct(fb["wait"], 50),
        "wake_p50_ms": pct(w["wake"], 50), "wake_p99_ms": pct(w["wake"], 99),
        "raw_mb_s": statistics.median(r["mb_s"] for r in tp["raw"]),
        "raw_received_mib": statistics.median(r["received"] for r in tp["raw"]) / MIB,
        "ndjson_mb_s": statistics.median(r["mb_s"] for r in tp["ndjson"]),
        "ndjson_received_mib": statistics.median(r["received"] for r in tp["ndjson"]) / MIB,
        "written_mib": size / MIB,
        "kept_raw_mb_s": med(k["raw"], "mb_s"), "kept_ndjson_mb_s": med(k["ndjson"], "mb_s"),
        "kept_raw_cpu_ms_mib": med(k["raw"], "use", 0),
        "kept_ndjson_cpu_ms_mib": med(k["ndjson"], "use", 0),
        "plain_read_p50_ms": pct(pr, 50),
        "cat_mb_s": statistics.median(r["mb_s"] for r in tp["cat"]),
        "box_mb_s": statistics.median(r["mb_s"] for r in tp["box"]),
        "runs": args.runs, "size_mib": args.size_mib,
    }
    run_end("exec_stream", res["cleanup"], summary)


if __name__ == "__main__":
    main()
