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
             "--instance", self.instance, "--pool", "1", "--name", "w1"],
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

    def api(self, method, path, body=None, token="", timeout=60):
        tok = self.token if token == "" else token
        req = urllib.request.Request(self.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def stop(self, proc, sig=signal.SIGTERM):
        if proc and proc.poll() is None:
            proc.send_signal(sig)
            return proc.wait(30)
        return proc.returncode if proc else 0


@contextlib.contextmanager
def running_split(tmp_path, lost_s=LOST_S):
    """A server and a worker of their own; afterwards every sandbox is deleted, both stop
    cleanly and nothing of the runtime instance is left."""
    if os.geteuid() != 0:
        pytest.skip("the skiffd tests need root")
    s = Split(tmp_path, lost_s)
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
