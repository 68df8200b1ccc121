"""The Python SDK (sdk/python/skiff) against a real `skiffd dev`: sandboxes made, run, waited
on and terminated through it; exec output as bytes; API errors as typed exceptions; lists with
filters and cursors; one keep-alive connection per client, and a new one when the server has
closed it while idle; config resolution; an install into a fresh venv without network; files
(skipped while the server has no file routes)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, wait_for

SDK_DIR = REPO / "sdk" / "python"
sys.path.insert(0, str(SDK_DIR))

import skiff  # noqa: E402
from skiff import client as skiff_client  # noqa: E402

BAD_ID = "sb-00000000000000000000000000"


@pytest.fixture
def client(skiffd):
    c = skiff.Client(skiffd.url, skiffd.token)
    yield c
    c.close()


def server_state(skiffd, sbid):
    s, body = skiffd.api("GET", f"/v1/sandboxes/{sbid}")
    assert s == 200, body
    return body


def new_token(skiffd, role):
    s, t = skiffd.api("POST", "/v1/tokens", {"name": f"sdk{time.monotonic_ns()}", "role": role})
    assert s == 201, t
    return t["secret"]


class Proxy:
    """A TCP forwarder in front of skiffd that counts the connections it accepts and can close
    them all, as a server closing idle keep-alive connections does."""

    def __init__(self, port):
        self.upstream = ("127.0.0.1", port)
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.url = f"http://127.0.0.1:{self.lsock.getsockname()[1]}"
        self.accepted = 0
        self.socks = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            u = socket.create_connection(self.upstream)
            with self.lock:
                self.accepted += 1
                self.socks += [c, u]
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                b = src.recv(65536)
                if not b:
                    break
                dst.sendall(b)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop_all(self):
        """Close every connection, both sides, as an idle timeout on the server does."""
        with self.lock:
            socks, self.socks = self.socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)    # wakes accept(): close alone does not
        except OSError:
            pass
        self.lsock.close()
        self.drop_all()


@pytest.fixture
def proxy(skiffd):
    p = Proxy(skiffd.port)
    yield p
    p.close()


# ---- sandboxes ----


def test_create_exec_wait_terminate(skiffd, client):
    sb = skiff.Sandbox.create(memory_mib=128, env={"A": "1"}, tags={"t": "basic"},
                              name=f"sdk-basic-{time.monotonic_ns()}", client=client)
    assert sb.id.startswith("sb-") and sb.state == "running" and sb.exit_code is None
    assert sb.memory_mib == 128 and sb.tags == {"t": "basic"} and sb.name.startswith("sdk-")
    assert sb.data["id"] == sb.id
    with pytest.raises(AttributeError):
        sb.no_such_field

    r = sb.exec("sh", "-c", "echo out; echo err >&2; echo $A$B; pwd; exit 3",
                env={"B": "2"}, workdir="/tmp")
    assert isinstance(r, skiff.ExecResult)
    assert r.exit_code == 3 and not r.ok and r.truncated is False
    assert r.stdout == b"out\n12\n/tmp\n" and r.stderr == b"err\n"
    assert r.stdout_text == "out\n12\n/tmp\n" and r.stderr_text == "err\n"
    assert sb.exec(["true"]).exit_code == 0          # a list works as well as *args
    with pytest.raises(TypeError):
        sb.exec()

    assert sb.wait(timeout_s=0.3) is None            # the idle sandbox has not ended
    assert sb.state == "running"
    assert sb.refresh() is sb and sb.state == "running"

    assert sb.terminate() == 137
    assert sb.state == "terminated" and sb.exit_code == 137
    assert server_state(skiffd, sb.id)["state"] == "terminated"
    assert sb.terminate() == 137                      # again: not an error


def test_main_command_and_wait(skiffd, client):
    t0 = time.monotonic()
    sb = skiff.Sandbox.create(command=["sh", "-c", "sleep 0.5; exit 7"], client=client)
    assert sb.wait() == 7
    assert sb.state == "exited" and sb.exit_code == 7 and time.monotonic() - t0 >= 0.5
    assert server_state(skiffd, sb.id)["exit_code"] == 7
    with pytest.raises(TypeError):
        skiff.Sandbox.create(command="echo hi", client=client)
    sb.terminate()


def test_exec_binary_output(client):
    with skiff.Sandbox.create(client=client) as sb:
        r = sb.exec("sh", "-c", r"printf '\377\000\001abc'; printf '\200\n' >&2")
        assert r.exit_code == 0
        assert r.stdout == b"\xff\x00\x01abc" and r.stderr == b"\x80\n"
        assert r.stdout_text == "\ufffd\x00\x01abc"
        # Bigger binary output survives the base64 round trip.
        r = sb.exec("sh", "-c", "i=0; while [ $i -lt 256 ]; do printf \"\\\\$(printf %o $i)\"; "
                                "i=$((i+1)); done")
        assert r.stdout == bytes(range(256)), r


def test_exec_async(client):
    with skiff.Sandbox.create(client=client) as sb:
        p = sb.exec_async("sh", "-c", "sleep 0.5; exit 4")
        assert isinstance(p, skiff.Exec) and p.id.startswith("ex-")
        assert p.status() in ("pending", "running") and not p.done
        assert p.wait(poll=0.05) == 4
        assert p.state == "exited" and p.exit_code == 4 and p.done
        q = sb.exec_async(["sleep", "5"])
        assert q.wait(poll=0.05, timeout_s=0.2) is None       # still running
        r = sb.exec("sleep", "10", timeout_s=0.5)
        assert r.exit_code not in (0, None), r


def test_exec_stdin_signal_and_terminal(client):
    with skiff.Sandbox.create(client=client) as sb:
        # Input as bytes: written, closed, run to the end.
        r = sb.exec("cat", stdin=b"\x00\xffbinary" + bytes(range(256)) * 300)
        assert r.exit_code == 0 and r.stdout == b"\x00\xffbinary" + bytes(range(256)) * 300
        assert sb.exec("wc", "-c", stdin="héllo").stdout.split() == [b"6"]
        # stdin=True: a handle to write to while it runs.
        p = sb.exec("sh", "-c", "read a; echo got-$a; cat", stdin=True)
        assert isinstance(p, skiff.Exec) and isinstance(p.stdin, skiff.ExecStdin)
        assert p.stdin.write("one\n") == 4
        assert p.stdin.write(b"x" * (1024 * 1024 + 10)) == 1024 * 1024 + 10  # two requests
        p.stdin.close()
        p.stdin.close()  # twice is fine
        assert p.wait(poll=0.05) == 0
        out = p.output()
        assert out.startswith(b"got-one\n") and len(out) == 8 + 1024 * 1024 + 10
        with pytest.raises(skiff.Conflict):
            p.stdin.write("late")
        done = sb.exec("true", stdin=True)
        assert done.wait(poll=0.05) == 0
        done.stdin.close()  # closing an ended process's stdin is no error
        assert done.stdin.closed
        # Signals by name and number.
        q = sb.exec_async("sleep", "60")
        with pytest.raises(skiff.Conflict):
            q.stdin.write("x")  # started without stdin
        assert q.signal("TERM") == 15
        assert q.wait(poll=0.05) == 143
        with pytest.raises(skiff.Conflict):
            q.signal(9)
        q = sb.exec_async("sleep", "60")
        with pytest.raises(skiff.InvalidArgument):
            q.signal("NOPE")
        assert q.signal(9) == 9 and q.wait(poll=0.05) == 137
        # A terminal: size, resize.
        t = sb.exec_async("sh", pty=True, pty_size=(33, 77))
        t.stdin.write("stty size\n")
        assert wait_for(lambda: b"33 77" in t.output(), 20, 0.05), t.output()
        t.resize(44, 88)
        t.stdin.write("stty size; exit 2\n")
        assert t.wait(poll=0.05) == 2
        assert b"44 88" in t.output()
        r = sb.exec("sh", "-c", "[ -t 1 ] && echo tty; echo err >&2", pty=True)
        assert r.exit_code == 0 and r.stdout == b"tty\r\nerr\r\n" and r.stderr == b""


def test_abandoned_exec_lets_its_process_go(client):
    """An exec driven from a `with` block that fails, or an exec(stdin=...) that is
    interrupted, does not leave its process waiting for input: stdin is closed, a terminal
    hung up."""
    with skiff.Sandbox.create(client=client) as sb:
        with pytest.raises(RuntimeError):
            with sb.exec("cat", stdin=True) as p:
                p.stdin.write("partial")
                raise RuntimeError("the caller failed")
        assert p.wait(poll=0.05, timeout_s=20) == 0 and p.output() == b"partial"
        with pytest.raises(RuntimeError):
            with sb.exec_async("sh", "-c", "echo ready; exec sleep 1000", pty=True) as t:
                assert wait_for(lambda: b"ready" in t.output(), 20, 0.05)
                raise RuntimeError("the caller failed")
        assert t.wait(poll=0.05, timeout_s=20) == 128 + 1  # SIGHUP
        # Interrupted while it runs (a KeyboardInterrupt from the wait): the terminal hangs up.
        real_wait = skiff.Exec.wait
        started = []

        def interrupted_wait(self, *a, **kw):
            started.append(self)
            raise KeyboardInterrupt

        skiff.Exec.wait = interrupted_wait
        try:
            with pytest.raises(KeyboardInterrupt):
                sb.exec("sh", "-c", "cat; exec sleep 1000", stdin=b"x", pty=True)
        finally:
            skiff.Exec.wait = real_wait
        assert started and started[0].wait(poll=0.05, timeout_s=20) == 128 + 1


def test_idempotency_key(client):
    key = f"sdk-{time.monotonic_ns()}"
    a = skiff.Sandbox.create(idempotency_key=key, client=client)
    b = skiff.Sandbox.create(idempotency_key=key, client=client)
    assert a.id == b.id
    assert skiff.Sandbox.create(client=client, idempotency_key=key + "x").id != a.id


def test_tags_and_timeout(skiffd, client):
    with skiff.Sandbox.create(timeout_s=60, tags={"a": "1"}, client=client) as sb:
        assert sb.set_tags({"a": "2", "b": "x"}) is sb
        assert sb.tags == {"a": "2", "b": "x"}
        assert server_state(skiffd, sb.id)["tags"] == {"a": "2", "b": "x"}
        sb.extend_timeout(30)
        assert sb.timeout_s == 90
        assert server_state(skiffd, sb.id)["timeout_s"] == 90
        with pytest.raises(skiff.InvalidArgument):
            sb.set_timeout(10)                                # only grows


def test_from_id(skiffd, client):
    with skiff.Sandbox.create(tags={"k": "v"}, client=client) as sb:
        same = skiff.Sandbox.from_id(sb.id, client=client)
        assert same == sb and same.id == sb.id and same.tags == {"k": "v"}
        assert same.state == "running"
        assert same.exec("echo", "via from_id").stdout == b"via from_id\n"
        same.terminate()
        assert sb.refresh().state == "terminated"


def test_list_with_tags_state_name_and_cursors(client):
    run = f"r{time.monotonic_ns()}"
    made = [skiff.Sandbox.create(tags={"run": run, "i": str(i)}, client=client)
            for i in range(3)]
    named = skiff.Sandbox.create(tags={"run": run}, name=f"sdk-{run}", client=client)
    ids = sorted(s.id for s in made + [named])
    got = skiff.Sandbox.list(tags={"run": run}, client=client)
    assert isinstance(got, list) and sorted(s.id for s in got) == ids
    assert [s.id for s in skiff.Sandbox.list(tags={"run": run, "i": "1"}, client=client)] \
        == [made[1].id]
    assert [s.id for s in skiff.Sandbox.list(name=f"sdk-{run}", client=client)] == [named.id]
    assert skiff.Sandbox.list(tags={"run": run + "-none"}, client=client) == []

    # Pages of one: the SDK follows next_cursor.
    before = client.requests_sent
    paged = list(skiff.Sandbox.iter(tags={"run": run}, client=client, page_size=1))
    assert [s.id for s in paged] == ids
    assert client.requests_sent - before >= 4

    made[0].terminate()
    running = skiff.Sandbox.list(tags={"run": run}, state="running", client=client)
    assert sorted(s.id for s in running) == sorted(s.id for s in made[1:] + [named])
    ended = skiff.Sandbox.list(tags={"run": run}, state="terminated", client=client)
    assert [s.id for s in ended] == [made[0].id]
    for s in made[1:] + [named]:
        s.terminate()


def test_context_manager_terminates(skiffd, client):
    with skiff.Sandbox.create(client=client) as sb:
        assert sb.exec("true").exit_code == 0
    assert server_state(skiffd, sb.id)["state"] == "terminated"

    with pytest.raises(RuntimeError):
        with skiff.Sandbox.create(client=client) as sb2:
            raise RuntimeError("boom")
    assert server_state(skiffd, sb2.id)["state"] == "terminated"


# ---- errors ----


def test_errors_map_to_classes(skiffd, client):
    with pytest.raises(skiff.NotFound) as e:
        skiff.Sandbox.from_id(BAD_ID, client=client)
    assert e.value.code == "not_found" and e.value.status == 404 and BAD_ID in e.value.message
    assert isinstance(e.value, skiff.SkiffError)

    with pytest.raises(skiff.InvalidArgument) as e:
        skiff.Sandbox.create(memory_mib=-5, client=client)
    assert e.value.code == "invalid_argument" and e.value.status == 400 and e.value.message

    with pytest.raises(skiff.Unauthenticated) as e:
        skiff.Sandbox.list(client=skiff.Client(skiffd.url, "not-a-real-token"))
    assert e.value.code == "unauthenticated" and e.value.status == 401

    viewer = skiff.Client(skiffd.url, new_token(skiffd, "viewer"))
    assert isinstance(skiff.Sandbox.list(client=viewer), list)     # a viewer reads
    with pytest.raises(skiff.PermissionDenied) as e:
        skiff.Sandbox.create(client=viewer)
    assert e.value.code == "permission_denied" and e.value.status == 403

    with skiff.Sandbox.create(client=client) as sb:
        with pytest.raises(skiff.InvalidArgument):
            sb.exec("true", workdir="relative")
        with pytest.raises(skiff.InvalidArgument):
            sb.exec("true", timeout_s=-1)
        with pytest.raises(skiff.InvalidArgument):
            sb.set_tags({"k": 5})
    sb2 = skiff.Sandbox.create(client=client)
    sb2.terminate()
    with pytest.raises(skiff.Conflict) as e:
        sb2.exec("true")
    assert e.value.status == 409 and sb2.id in e.value.message

    # Nothing listens: Unavailable, with no HTTP status.
    with pytest.raises(skiff.Unavailable) as e:
        skiff.Client(f"http://127.0.0.1:{closed_port()}", "x").whoami()
    assert e.value.status is None


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_error_reply_parsing():
    e = skiff.errors.error_from_reply(
        503, b'{"error":{"code":"resource_exhausted","message":"too many"}}')
    assert type(e) is skiff.ResourceExhausted and e.status == 503 and e.message == "too many"
    e = skiff.errors.error_from_reply(504, b"gateway timeout")
    assert type(e) is skiff.DeadlineExceeded and e.message == "gateway timeout"
    for code, cls in [("payload_too_large", skiff.PayloadTooLarge), ("internal", skiff.Internal),
                      ("unavailable", skiff.Unavailable), ("conflict", skiff.Conflict)]:
        body = json.dumps({"error": {"code": code, "message": "m"}}).encode()
        assert type(skiff.errors.error_from_reply(400, body)) is cls
    e = skiff.errors.error_from_reply(418, b"")
    assert type(e) is skiff.SkiffError and e.status == 418


# ---- the connection ----


def test_keep_alive_one_connection(skiffd, proxy):
    c = skiff.Client(proxy.url, skiffd.token)
    with skiff.Sandbox.create(client=c) as sb:
        assert c._conn is not None and c._conn.sock is not None, "the connection was closed"
        sock = c._conn.sock
        for i in range(5):
            assert sb.exec("echo", str(i)).stdout == f"{i}\n".encode()
            sb.refresh()
        skiff.Sandbox.list(client=c)
        assert c._conn.sock is sock                    # the very same socket
    assert c.connections_opened == 1 and c.requests_sent >= 13
    assert proxy.accepted == 1
    c.close()


def test_reconnect_after_server_closed_idle_connection(skiffd, proxy):
    c = skiff.Client(proxy.url, skiffd.token)
    sb = skiff.Sandbox.create(client=c)
    assert c.connections_opened == 1
    proxy.drop_all()                                   # the server closes the idle connection
    time.sleep(0.1)
    sent = c.requests_sent
    assert sb.exec("echo", "after").stdout == b"after\n"
    assert c.connections_opened == 2 and proxy.accepted == 2
    assert c.requests_sent == sent + 1                 # seen before sending: no failed try
    c.close()
    sb.terminate()


def test_reconnect_when_close_is_seen_only_on_send(skiffd, proxy, monkeypatch):
    """The close races the next request (the idle check sees nothing): the request fails on the
    old connection and is sent once more on a new one."""
    c = skiff.Client(proxy.url, skiffd.token)
    sb = skiff.Sandbox.create(client=c)
    monkeypatch.setattr(skiff_client, "_sock_is_stale", lambda sock: False)
    for i in range(2):
        proxy.drop_all()
        time.sleep(0.1)
        sent = c.requests_sent
        assert sb.refresh().state == "running"
        assert c.connections_opened == 2 + i
        assert c.requests_sent == sent + 2             # one lost, one sent again
    # The server gone altogether: the retry's connect fails, and the error says so.
    proxy.close()
    with pytest.raises(skiff.Unavailable):
        sb.refresh()
    c.close()
    skiff.Sandbox.from_id(sb.id, client=skiff.Client(skiffd.url, skiffd.token)).terminate()


def test_timeout_raises_deadline_exceeded(skiffd):
    c = skiff.Client(skiffd.url, skiffd.token, timeout=0.5)
    with skiff.Sandbox.create(client=c) as sb:
        with pytest.raises(skiff.DeadlineExceeded) as e:
            c.json("POST", f"/v1/sandboxes/{sb.id}/wait", query={"timeout_s": 5}, timeout=0.5)
        assert e.value.status is None
        assert sb.refresh().state == "running"           # the client goes on after a timeout


# ---- configuration ----


def test_config_resolution(skiffd, tmp_path, monkeypatch):
    monkeypatch.delenv("SKIFF_URL", raising=False)
    monkeypatch.delenv("SKIFF_TOKEN", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    c = skiff.Client()
    assert c.url == skiff.DEFAULT_URL and c.token is None

    cfg = tmp_path / "skiff" / "config.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps({"url": skiffd.url + "/", "token": skiffd.token}))
    c = skiff.Client()
    assert c.url == skiffd.url and c.token == skiffd.token
    assert c.whoami()
    # The config's token goes to the config's URL only.
    monkeypatch.setenv("SKIFF_URL", "http://127.0.0.1:1")
    assert skiff.Client().token is None
    monkeypatch.setenv("SKIFF_TOKEN", "envtoken")
    c = skiff.Client()
    assert (c.url, c.token) == ("http://127.0.0.1:1", "envtoken")
    c = skiff.Client("http://h:2", "argtoken")
    assert (c.url, c.token) == ("http://h:2", "argtoken")

    monkeypatch.delenv("SKIFF_URL")
    monkeypatch.delenv("SKIFF_TOKEN")
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / ".config" / "skiff").mkdir(parents=True)
    (tmp_path / "home" / ".config" / "skiff" / "config.json").write_text(
        json.dumps({"url": skiffd.url, "token": skiffd.token}))
    assert skiff.Client().token == skiffd.token

    # The module-level client.
    monkeypatch.setattr(skiff_client, "_default", None)
    assert skiff.default_client() is skiff.default_client()
    assert skiff.default_client().url == skiffd.url
    with skiff.Sandbox.create() as sb:                 # no client=: the default one
        assert sb.client is skiff.default_client()
        assert sb.exec("echo", "default").stdout == b"default\n"
    monkeypatch.setattr(skiff_client, "_default", None)

    for bad in ["ftp://x", "http://a b"]:
        with pytest.raises(skiff.InvalidArgument):
            skiff.Client(bad, "t")
    with pytest.raises(skiff.InvalidArgument):
        skiff.Client(skiffd.url, "bad token")
    (tmp_path / "home" / ".config" / "skiff" / "config.json").write_text("[1]")
    with pytest.raises(skiff.InvalidArgument):
        skiff.Client()


# ---- installing ----


def test_install_into_venv(skiffd, tmp_path):
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    src = tmp_path / "src"
    shutil.copytree(SDK_DIR, src, ignore=shutil.ignore_patterns(
        "__pycache__", "build", "*.egg-info"))
    venv = tmp_path / "venv"
    r = subprocess.run([py, "-m", "venv", "--system-site-packages", str(venv)],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        pytest.skip(f"python3 -m venv fails (install python3-venv): {r.stderr.strip()[-300:]}")
    vpy = venv / "bin" / "python"
    if subprocess.run([str(vpy), "-m", "pip", "--version"], capture_output=True).returncode:
        pytest.skip("pip is missing in the venv (install python3-venv and python3-pip)")
    if subprocess.run([str(vpy), "-c", "import setuptools, wheel"],
                      capture_output=True).returncode:
        pytest.skip("setuptools or wheel is missing (install python3-setuptools, "
                    "python3-wheel)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-build-isolation",
                        str(src)], capture_output=True, text=True, timeout=300, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    code = textwrap.dedent("""
        import os, sys, skiff
        assert os.path.realpath(skiff.__file__).startswith(os.path.realpath(sys.prefix)), \\
            skiff.__file__
        with skiff.Sandbox.create(memory_mib=64) as sb:
            r = sb.exec("sh", "-c", "echo installed; printf '\\\\377'")
            assert r.exit_code == 0 and r.stdout == b"installed\\n\\xff", r
        print("ok", sb.id, sb.state)
    """)
    env.update(SKIFF_URL=skiffd.url, SKIFF_TOKEN=skiffd.token)
    r = subprocess.run([str(vpy), "-I", "-c", code], capture_output=True, text=True,
                       timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("ok sb-") and r.stdout.strip().endswith("terminated"), r.stdout


# ---- files ----


@pytest.fixture
def fsb(skiffd, client):
    """A sandbox whose files the server serves; skips while skiffd has no file routes."""
    sb = skiff.Sandbox.create(client=client)
    try:
        sb.files.stat("/")
    except skiff.NotFound as e:
        sb.terminate()
        pytest.skip(f"skiffd has no file routes yet (GET /v1/sandboxes/{{id}}/fs/stat?path=/ "
                    f"answered 404: {e.message})")
    except skiff.SkiffError as e:
        if e.status == 405:
            sb.terminate()
            pytest.skip(f"skiffd has no file routes yet ({e})")
        raise
    yield sb
    sb.terminate()


def test_files_write_read(fsb):
    assert fsb.files.write("/tmp/a.txt", "hello\n") == 6
    assert fsb.files.read("/tmp/a.txt") == b"hello\n"
    assert fsb.exec("cat", "/tmp/a.txt").stdout == b"hello\n"
    blob = bytes(range(256)) * 1000
    fsb.files.write("/tmp/b.bin", blob)
    assert fsb.files.read("/tmp/b.bin") == blob
    assert fsb.exec("wc", "-c", "/tmp/b.bin").stdout.split()[0] == b"256000"
    fsb.exec("sh", "-c", "printf 'from exec' > /tmp/c")
    assert fsb.files.read("/tmp/c") == b"from exec"
    fsb.files.write("/tmp/a.txt", b"")                    # overwrite, empty
    assert fsb.files.read("/tmp/a.txt") == b""
    with pytest.raises(skiff.NotFound):
        fsb.files.read("/tmp/nope")
    with pytest.raises(skiff.NotFound):
        fsb.files.write("/tmp/no/such/dir/f", b"x")
    fsb.files.write("/tmp/no/such/dir/f", b"x", parents=True)
    assert fsb.files.read("/tmp/no/such/dir/f") == b"x"
    fsb.files.write("/tmp/mode", b"#!/bin/sh\necho run\n", mode=0o755)
    assert fsb.files.stat("/tmp/mode").mode & 0o777 == 0o755
    assert fsb.exec("/tmp/mode").stdout == b"run\n"


def test_files_list_stat_mkdir_remove_move(fsb):
    fsb.files.mkdir("/tmp/d")
    with pytest.raises(skiff.SkiffError):
        fsb.files.mkdir("/tmp/x/y")                      # no parents
    fsb.files.mkdir("/tmp/x/y", parents=True)
    fsb.files.write("/tmp/d/f1", b"12345")
    fsb.files.write("/tmp/d/sub/f2", b"x", parents=True)
    st = fsb.files.stat("/tmp/d/f1")
    assert isinstance(st, skiff.FileEntry) and st.name == "f1" and st.size == 5
    assert st.is_file and fsb.files.stat("/tmp/d").is_dir
    listing = fsb.files.list("/tmp/d")
    assert isinstance(listing, skiff.EntryList) and listing.truncated is False
    assert sorted(e.name for e in listing) == ["f1", "sub"]
    assert {e.name: e.type for e in listing} == {"f1": "file", "sub": "dir"}
    deep = sorted(e.path for e in fsb.files.list("/tmp/d", depth=2))
    assert "/tmp/d/sub/f2" in deep
    assert fsb.files.exists("/tmp/d/f1") and not fsb.files.exists("/tmp/d/f9")

    fsb.files.move("/tmp/d/f1", "/tmp/d/f3")
    assert not fsb.files.exists("/tmp/d/f1") and fsb.files.read("/tmp/d/f3") == b"12345"
    fsb.files.remove("/tmp/d/f3")
    assert not fsb.files.exists("/tmp/d/f3")
    with pytest.raises(skiff.Conflict):
        fsb.files.remove("/tmp/d")                       # not empty
    fsb.files.remove("/tmp/d", recursive=True)
    assert not fsb.files.exists("/tmp/d")
    assert fsb.exec("test", "-e", "/tmp/d").exit_code == 1
    with pytest.raises(skiff.NotFound):
        fsb.files.stat("/tmp/nothing")


def test_files_stay_inside(fsb):
    fsb.files.write("/../../../tmp/inside", b"in")
    assert fsb.exec("cat", "/tmp/inside").stdout == b"in"
    assert not Path("/tmp/inside").exists() or Path("/tmp/inside").read_bytes() != b"in"


def test_exec_output_and_logs(client):
    sb = skiff.Sandbox.create(command=["sh", "-c", "echo main; echo oops >&2"], client=client)
    try:
        assert sb.wait(timeout_s=30) == 0
        assert sb.logs() == b"main\n" and sb.logs("stderr") == b"oops\n"
        assert sb.logs(offset=2) == b"in\n"
    finally:
        sb.terminate()
    with skiff.Sandbox.create(client=client) as sb:
        p = sb.exec_async("sh", "-c", "printf 'abc'; sleep 0.2; printf 'def'")
        assert p.wait(timeout_s=30) == 0
        assert p.output() == b"abcdef" and p.output(offset=3) == b"def"
        assert p.output("stderr") == b""


def test_exec_streams_lines_as_they_come(client):
    with skiff.Sandbox.create(client=client) as sb:
        p = sb.exec_async("sh", "-c", "for i in 1 2 3 4; do echo line$i; echo e$i >&2; "
                                      "sleep 0.6; done; exit 4")
        t0 = time.monotonic()
        seen = []
        for line in p.stdout:
            seen.append((time.monotonic() - t0, line))
        assert [l for _, l in seen] == [f"line{i}\n" for i in range(1, 5)]
        assert seen[0][0] < seen[-1][0] - 1.0, seen  # live, not all at the end
        assert p.exit_code == 4 and p.state == "exited"
        assert p.stderr.read() == "e1\ne2\ne3\ne4\n"
        assert p.wait(timeout_s=5) == 4
        assert b"".join(p.stdout.iter_bytes()) == b"line1\nline2\nline3\nline4\n"
    with skiff.Sandbox.create(command=["sh", "-c", "echo main; echo bad >&2"],
                              client=client) as sb:
        assert list(sb.stdout) == ["main\n"] and sb.stderr.read() == "bad\n"


def test_exec_stream_resumes_after_dropped_connections(skiffd, proxy):
    """The proxy cuts every connection again and again while the output streams: the
    iteration reads on from its offsets and gets every line exactly once."""
    c = skiff.Client(url=proxy.url, token=skiffd.token)
    with skiff.Sandbox.create(client=c) as sb:
        p = sb.exec_async("sh", "-c", "i=0; while [ $i -lt 30 ]; do echo n$i; i=$((i+1)); "
                                      "sleep 0.05; done")
        stop = threading.Event()
        cuts = []

        def cutter():
            while not stop.wait(0.3):
                with proxy.lock:
                    live = len(proxy.socks)
                if live:
                    cuts.append(live)
                proxy.drop_all()

        t = threading.Thread(target=cutter)
        t.start()
        try:
            lines = list(p.stdout)
        finally:
            stop.set()
            t.join()
        assert lines == [f"n{i}\n" for i in range(30)]
        # The stream was cut under the iteration at least twice, and each time it came back.
        assert len(cuts) >= 2 and proxy.accepted >= len(cuts) + 1, (cuts, proxy.accepted)
        assert p.exit_code == 0
