"""`skiffd server` and `skiffd worker` as separate processes on one host, over the same worker
link `skiffd dev` uses: a killed worker's sandboxes become `lost`, a late report under its old
epoch is refused, a restarted worker is reconciled, and a restarted server takes its live worker
back."""

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from conftest import (SKIFF_BOX, SKIFFD, Box, end_instance, free_port, kill_all, new_instance,
                      sandbox_cgroups, state_dirs, wait_for)

LOST_S = 2


class Split:
    def __init__(self, tmp, lost_s=LOST_S):
        self.tmp = tmp
        self.lost_s = lost_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.instance = new_instance("s")
        self.server = self.worker = None
        self.logs = []
        self.worker_args = []  # more options for skiffd worker

    def _log(self, name):
        f = open(self.tmp / f"{name}.log", "ab")
        self.logs.append(f)
        return f

    def start_server(self, env=None):
        """env: variables to add to the server's environment (SKIFF_CLOCK_OFFSET_MS)."""
        self.server = subprocess.Popen(
            [str(SKIFFD), "server", "--data", str(self.tmp / "srv"), "--listen",
             f"127.0.0.1:{self.port}", "--worker-lost-s", str(self.lost_s)],
            stdin=subprocess.DEVNULL, stdout=self._log("server"), stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})})
        assert wait_for(lambda: self._healthy() or self.server.poll() is not None, 30, 0.05)
        assert self.server.poll() is None, self.log("server")
        self.token = (self.tmp / "srv" / "admin.token").read_text().strip()
        self.worker_token = (self.tmp / "srv" / "worker.token").read_text().strip()

    def start_worker(self):
        self.worker = subprocess.Popen(
            [str(SKIFFD), "worker", "--server", self.url, "--token-file",
             str(self.tmp / "srv" / "worker.token"), "--data", str(self.tmp / "wk"),
             "--instance", self.instance, "--pool", "1", "--name", "w1", *self.worker_args],
            stdin=subprocess.DEVNULL, stdout=self._log("worker"), stderr=subprocess.STDOUT)
        assert wait_for(self.connected, 30, 0.05), self.log("worker")

    def log(self, name):
        return (self.tmp / f"{name}.log").read_text(errors="replace")[-3000:]

    def _healthy(self):
        try:
            return self.api("GET", "/healthz", token=None)[0] == 200
        except OSError:
            return False

    def connected(self):
        s, body = self.api("GET", "/v1/workers")
        return s == 200 and any(w["connected"] for w in body["items"])

    def raw(self, method, path, data=None, token="", timeout=60):
        """One request with the admin token (token="") or the given one (None: none):
        (status, body bytes)."""
        tok = self.token if token == "" else token
        req = urllib.request.Request(self.url + path, method=method, data=data)
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def api(self, method, path, body=None, token="", timeout=60):
        """raw() with a JSON body and reply: (status, parsed body)."""
        s, raw = self.raw(method, path, None if body is None else json.dumps(body).encode(),
                          token, timeout)
        return s, json.loads(raw or b"null")

    def stop(self, proc, sig=signal.SIGTERM):
        if proc and proc.poll() is None:
            proc.send_signal(sig)
            return proc.wait(30)
        return proc.returncode if proc else 0


@contextlib.contextmanager
def running_split(tmp_path, lost_s=LOST_S, worker_args=()):
    """A server and a worker of their own; afterwards every sandbox is deleted, both stop
    cleanly and nothing of the runtime instance is left."""
    if os.geteuid() != 0:
        pytest.skip("the skiffd tests need root")
    s = Split(tmp_path, lost_s)
    s.worker_args = list(worker_args)
    try:
        s.start_server()
        s.start_worker()
        yield s
    finally:
        try:
            st, body = s.api("GET", "/v1/sandboxes?limit=1000")
            for sb in body["items"] if st == 200 else []:
                s.api("DELETE", f"/v1/sandboxes/{sb['id']}")
        except OSError:
            pass
        rc_w = s.stop(s.worker)
        rc_s = s.stop(s.server)
        for f in s.logs:
            f.close()
        box = Box(SKIFF_BOX, s.instance, tmp_path / "wk")
        kill_all(box)
        end_instance(box)
        assert rc_w == 0 and rc_s == 0, (rc_w, rc_s, s.log("worker"), s.log("server"))


@pytest.fixture
def split(tmp_path):
    with running_split(tmp_path) as s:
        yield s


def test_separate_processes_run_sandboxes(split):
    s, sb = split.api("POST", "/v1/sandboxes", {"tags": {"split": "1"}})
    assert s == 201 and sb["state"] == "running", sb
    s, out = split.api("POST", f"/v1/sandboxes/{sb['id']}/exec?wait=true",
                       {"command": ["sh", "-c", "echo from the worker"]})
    assert s == 200 and out["stdout"] == "from the worker\n", out
    s, workers = split.api("GET", "/v1/workers")
    assert [w["name"] for w in workers["items"]] == ["w1"]
    assert sb["worker"] == workers["items"][0]["id"]


def test_worker_token_is_needed_and_api_tokens_are_refused(split):
    s, body = split.api("POST", "/internal/v1/workers/register",
                        {"version": 1, "name": "x", "sandboxes": []})
    assert s == 401
    s, body = split.api("GET", "/v1/sandboxes", token=split.worker_token)
    assert s == 401
    assert (split.tmp / "srv" / "worker.token").stat().st_mode & 0o777 == 0o600


def test_killed_worker_is_lost_and_its_old_epoch_refused(split):
    s, sb = split.api("POST", "/v1/sandboxes", {})
    assert s == 201
    s, workers = split.api("GET", "/v1/workers")
    w = workers["items"][0]
    old_epoch = w["epoch"]
    split.worker.kill()  # SIGKILL: no goodbye
    split.worker.wait()
    t0 = time.monotonic()
    assert wait_for(lambda: split.api("GET", f"/v1/sandboxes/{sb['id']}")[1]["state"] == "lost",
                    LOST_S + 10, 0.1)
    assert time.monotonic() - t0 >= LOST_S - 0.5  # not before its heartbeats were missed
    s, body = split.api("GET", f"/v1/sandboxes/{sb['id']}")
    assert body["exit_code"] is None and body["ended_at"]
    # A report under the old epoch is refused.
    s, body = split.api("POST", f"/internal/v1/workers/{w['id']}/events",
                        {"epoch": old_epoch, "events": [
                            {"type": "sandbox_ended", "sandbox": sb["id"], "state": "exited",
                             "exit_code": 0}]}, token=split.worker_token)
    assert s == 409, body
    assert split.api("GET", f"/v1/sandboxes/{sb['id']}")[1]["state"] == "lost"
    # The worker comes back: it registers under a new epoch, and what the server considers
    # lost is ended on it (the sandbox was still running there).
    split.start_worker()
    s, workers = split.api("GET", "/v1/workers")
    assert workers["items"][0]["epoch"] > old_epoch
    assert wait_for(lambda: len(state_dirs(split.instance)) <= 1
                    and len({os.path.basename(c) for c in sandbox_cgroups(split.instance)}) <= 1,
                    20, 0.1), state_dirs(split.instance)
    s, sb2 = split.api("POST", "/v1/sandboxes", {})
    assert s == 201 and sb2["state"] == "running"


def test_server_restart_under_a_live_worker(split):
    s, sb = split.api("POST", "/v1/sandboxes", {})
    assert s == 201
    assert split.stop(split.server) == 0
    time.sleep(0.5)
    assert split.worker.poll() is None  # the worker waits for its server
    split.start_server()
    assert wait_for(split.connected, 20, 0.1)
    s, got = split.api("GET", f"/v1/sandboxes/{sb['id']}")
    assert s == 200 and got["state"] == "running", got
    s, out = split.api("POST", f"/v1/sandboxes/{sb['id']}/exec?wait=true",
                       {"command": ["echo", "again"]})
    assert s == 200 and out["stdout"] == "again\n", out


# ---- execs and their output across restarts ----


def follow_all(split, sid, exid, offsets=(0, 0), stop_after=None):
    """ndjson events of an exec's output from offsets, following; (events, complete), where
    complete says the stream ended with its exit_code (stop_after: leave after that many)."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", split.port, timeout=60)
    c.request("GET", f"/v1/sandboxes/{sid}/execs/{exid}/output?format=ndjson&follow=true"
                     f"&stdout_offset={offsets[0]}&stderr_offset={offsets[1]}",
              headers={"Authorization": f"Bearer {split.token}"})
    r = c.getresponse()
    assert r.status == 200
    evs = []
    try:
        while stop_after is None or len(evs) < stop_after:
            line = r.readline()
            if not line:
                break
            evs.append(json.loads(line))
    except (ConnectionError, http.client.IncompleteRead):
        pass
    c.close()
    return evs, bool(evs) and "exit_code" in evs[-1]


def stdout_of(evs):
    import base64
    out = b""
    for ev in evs:
        if ev.get("stream") == "stdout":
            assert ev["offset"] == len(out), ev
            out += base64.b64decode(ev["data_b64"])
    return out


def counting(split, word, n, code):
    """A new sandbox and an exec in it that prints word1..wordN, 0.1 s apart, then exits with
    code: (sandbox, exec)."""
    s, sb = split.api("POST", "/v1/sandboxes", {})
    assert s == 201
    s, ex = split.api("POST", f"/v1/sandboxes/{sb['id']}/exec",
                      {"command": ["sh", "-c", f"for i in $(seq 1 {n}); do echo {word}$i; "
                                               f"sleep 0.1; done; exit {code}"]})
    assert s == 201
    return sb, ex


def test_execs_survive_a_killed_and_restarted_worker(split):
    sb, ex = counting(split, "w", 25, 6)
    s, quick = split.api("POST", f"/v1/sandboxes/{sb['id']}/exec",
                         {"command": ["sh", "-c", "exit 9"]})
    evs, _ = follow_all(split, sb["id"], ex["id"], stop_after=2)
    split.worker.kill()  # SIGKILL, then back before it is declared lost
    split.worker.wait()
    split.start_worker()
    out = stdout_of(evs)
    more, complete = follow_all(split, sb["id"], ex["id"], (len(out), 0))
    assert complete, more
    assert stdout_of(evs + more) == b"".join(b"w%d\n" % i for i in range(1, 26))
    assert more[-1]["exit_code"] == 6
    for exid, code in ((ex["id"], 6), (quick["id"], 9)):
        s, got = split.api("GET", f"/v1/sandboxes/{sb['id']}/execs/{exid}")
        assert got["state"] == "exited" and got["exit_code"] == code, got


def test_execs_survive_a_server_restart_under_a_live_worker(split):
    sb, ex = counting(split, "s", 20, 4)
    evs, _ = follow_all(split, sb["id"], ex["id"], stop_after=1)
    assert split.stop(split.server, signal.SIGKILL) == -signal.SIGKILL
    split.start_server()
    assert wait_for(split.connected, 20, 0.1)
    more, complete = follow_all(split, sb["id"], ex["id"], (len(stdout_of(evs)), 0))
    assert complete and more[-1]["exit_code"] == 4, more
    assert stdout_of(evs + more) == b"".join(b"s%d\n" % i for i in range(1, 21))


def test_output_route_refuses_bad_bodies(split):
    s, workers = split.api("GET", "/v1/workers")
    w = workers["items"][0]
    url = f"/internal/v1/workers/{w['id']}/output"

    def post(body):
        req = urllib.request.Request(split.url + url, method="POST", data=body)
        req.add_header("Authorization", f"Bearer {split.worker_token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    meta = {"epoch": w["epoch"], "request": "fr-x", "sandbox": "sb-x",
            "result": {"offset": 0, "length": 5, "size": 5, "eof": True}}
    assert post(b"no newline at all") == 400
    assert post(json.dumps(meta).encode() + b"\nabc") == 400  # 3 bytes, not 5
    assert post(json.dumps(meta).encode() + b"\nabcdefg") == 400  # 7 bytes, not 5
    assert post(json.dumps(dict(meta, epoch=w["epoch"] - 1)).encode() + b"\nabcde") == 409
    assert post(json.dumps(meta).encode() + b"\nabcde") == 200  # no such call: dropped
    assert split.api("GET", "/v1/workers")[1]["items"][0]["connected"]


def test_an_exec_that_ends_while_no_worker_runs_reports_its_code(tmp_path):
    """The worker is down while an exec ends and while another passes its timeout: the
    restarted worker's spawner finds their records, reports the first's code and ends the
    second as timed out (124)."""
    with running_split(tmp_path, lost_s=60) as split:
        s, sb = split.api("POST", "/v1/sandboxes", {})
        assert s == 201
        s, ex = split.api("POST", f"/v1/sandboxes/{sb['id']}/exec",
                          {"command": ["sh", "-c", "sleep 0.5; exit 9"]})
        s, slow = split.api("POST", f"/v1/sandboxes/{sb['id']}/exec",
                            {"command": ["sleep", "30"], "timeout_s": 0.8})
        assert s == 201
        time.sleep(0.3)
        split.worker.kill()
        split.worker.wait()
        time.sleep(1.5)  # both end meanwhile, with no spawner to see it
        split.start_worker()
        for exid, code in ((ex["id"], 9), (slow["id"], 124)):
            assert wait_for(lambda: split.api("GET", f"/v1/sandboxes/{sb['id']}/execs/{exid}")
                            [1]["state"] != "running", 20, 0.1)
            s, got = split.api("GET", f"/v1/sandboxes/{sb['id']}/execs/{exid}")
            assert got["state"] == "exited" and got["exit_code"] == code, got
