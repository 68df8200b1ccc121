"""Ports: a sandbox declares at create the ports it serves on its loopback, and the server proxies
`/v1/sandboxes/{id}/ports/{port}/...` to them through a tunnel (server -> worker -> a socket in the
sandbox's network namespace). A busybox httpd (files and CGI scripts) and a busybox nc echo server
serve inside the sandbox; requests go through the proxy like a client's would: bytes exact both
ways, responses streamed as they are written, credentials never passed on, every tunnel closed
and freed when either side goes away or the sandbox ends."""

import http.client
import json
import os
import socket
import time

import sys
import urllib.request

import pytest

from conftest import REPO, read_slowly, rss_kib, wait_for  # noqa: F401
from conftest import limited_skiffd, _module_limited_skiffd  # noqa: F401
from test_cli import run, skiff_env
from test_split import split  # noqa: F401  (the fixture: skiffd server + skiffd worker)

sys.path.insert(0, str(REPO / "sdk" / "python"))
import skiff  # noqa: E402

MIB = 1024 * 1024
WEB, ECHO, NOTHING = 8080, 8082, 8081

SETUP = ("mkdir -p /srv/cgi-bin && echo hello > /srv/index.html && "
         f"(busybox nc -ll -p {ECHO} -e /bin/cat &) && exec busybox httpd -f -p {WEB} -h /srv")

CGI = {
    # the request's body back
    "echo": "printf 'Content-Type: application/octet-stream\\r\\n\\r\\n'\nexec cat\n",
    # a line, then another once the test says so: the first must arrive before the second exists
    "slow": ("printf 'Content-Type: text/plain\\r\\n\\r\\n'\necho first\n"
             "while [ ! -e /tmp/go ]; do sleep 0.05; done\necho second\n"),
    # lines until the client goes away
    "forever": ("printf 'Content-Type: text/plain\\r\\n\\r\\n'\n"
                "while :; do echo tick; sleep 0.05; done\n"),
    # the size of the request's body
    "count": "printf 'Content-Type: text/plain\\r\\n\\r\\n'\nexec wc -c\n",
    # 50 MiB of zeros
    "big": ("printf 'Content-Type: application/octet-stream\\r\\n\\r\\n'\n"
            "exec dd if=/dev/zero bs=65536 count=800 2>/dev/null\n"),
}


def headers(d, token=""):
    tok = d.token if token == "" else token
    return {"Authorization": f"Bearer {tok}"} if tok else {}


def files_put(d, sbid, path, data, mode="644"):
    s, _, raw = d.raw("PUT", f"/v1/sandboxes/{sbid}/files?path={path}&mode={mode}&parents=true",
                      data, dict(headers(d), **{"Content-Type": "application/octet-stream"}))
    assert s == 200, raw


def proxy(d, sbid, port, rest="", method="GET", body=None, token="", extra=None, timeout=60):
    """One request through the proxy: (status, headers, body)."""
    h = dict(headers(d, token), **(extra or {}))
    return d.raw(method, f"/v1/sandboxes/{sbid}/ports/{port}/{rest}", body, h, timeout)


class Stream:
    """A request whose response is read bit by bit (r), on a socket the test can cut (sock)."""

    def __init__(self, d, sbid, port, rest, token=""):
        self.c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
        self.c.connect()
        self.sock = self.c.sock  # the response takes it over from the connection
        self.c.request("GET", f"/v1/sandboxes/{sbid}/ports/{port}/{rest}",
                       headers=headers(d, token))
        self.r = self.c.getresponse()

    def close(self):
        self.r.close()
        self.c.close()
        self.sock.close()


def metric(d, name):
    s, _, raw = d.raw("GET", "/metrics", None, headers(d))
    assert s == 200
    for line in raw.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def no_tunnels(d, base_fds):
    """Every tunnel closed and freed: none counted, skiffd's descriptors back to what they were."""
    return wait_for(lambda: metric(d, "skiff_tunnels_open") == 0 and fds(d.proc.pid) <= base_fds,
                    15, 0.1)


def make_web(d):
    s, sb = d.api("POST", "/v1/sandboxes", {"ports": [WEB, ECHO, NOTHING],
                                            "command": ["sh", "-c", SETUP]})
    assert s == 201, sb
    for name, script in CGI.items():
        files_put(d, sb["id"], f"/srv/cgi-bin/{name}", b"#!/bin/sh\n" + script.encode(), "755")
    up = wait_for(lambda: proxy(d, sb["id"], WEB)[0] == 200, 15, 0.05)
    assert up, proxy(d, sb["id"], WEB)
    assert wait_for(lambda: echo_ready(d, sb["id"]), 15, 0.05)
    return sb["id"]


def echo_ready(d, sbid):
    try:
        with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
            s.sendall(raw_request(d, sbid, ECHO))
            return s.recv(4096).startswith(b"GET /x ")
    except OSError:
        return False


def raw_request(d, sbid, port, rest="x", extra=""):
    return (f"GET /v1/sandboxes/{sbid}/ports/{port}/{rest} HTTP/1.1\r\nHost: test\r\n"
            f"Authorization: Bearer {d.token}\r\n{extra}\r\n").encode()


@pytest.fixture
def web(skiffd):
    sbid = make_web(skiffd)
    yield sbid


def test_get_files_byte_exact(skiffd, web):
    base = fds(skiffd.proc.pid)
    s, h, body = proxy(skiffd, web, WEB, "index.html")
    assert (s, body) == (200, b"hello\n"), (s, h, body)
    data = os.urandom(5 * MIB)
    files_put(skiffd, web, "/srv/big.bin", data)
    s, h, body = proxy(skiffd, web, WEB, "big.bin")
    assert s == 200 and len(body) == len(data) and body == data
    # /ports/{port} without its slash is the root
    s, _, body = skiffd.raw("GET", f"/v1/sandboxes/{web}/ports/{WEB}", None, headers(skiffd))
    assert s == 200, body
    # the sandbox's own 404 passes through as it is
    s, _, body = proxy(skiffd, web, WEB, "no/such/file")
    assert s == 404 and b"error" not in body, body
    assert no_tunnels(skiffd, base)


def test_ports_listed(skiffd, web):
    s, body = skiffd.api("GET", f"/v1/sandboxes/{web}/ports")
    assert s == 200, body
    assert body == {"ports": [{"port": p, "url": f"/v1/sandboxes/{web}/ports/{p}/"}
                              for p in (WEB, ECHO, NOTHING)]}
    s, sb = skiffd.api("GET", f"/v1/sandboxes/{web}")
    assert sb["ports"] == [WEB, ECHO, NOTHING]
    s, other = skiffd.api("POST", "/v1/sandboxes", {})
    assert s == 201 and other["ports"] == []
    assert skiffd.api("GET", f"/v1/sandboxes/{other['id']}/ports") == (200, {"ports": []})


def test_post_body_to_cgi(skiffd, web):
    body = os.urandom(3 * MIB)
    s, _, back = proxy(skiffd, web, WEB, "cgi-bin/echo", "POST", body)
    assert s == 200 and back == body
    # a chunked request body reaches the sandbox whole, with a Content-Length
    c = http.client.HTTPConnection("127.0.0.1", skiffd.port, timeout=30)
    c.request("POST", f"/v1/sandboxes/{web}/ports/{WEB}/cgi-bin/echo",
              body=iter([b"one ", b"two ", b"three"]), encode_chunked=True,
              headers=dict(headers(skiffd), **{"Transfer-Encoding": "chunked"}))
    r = c.getresponse()
    assert (r.status, r.read()) == (200, b"one two three")
    c.close()


def test_request_as_the_sandbox_sees_it(skiffd, web):
    """The nc echo server sends back what it got: the rewritten request."""
    with socket.create_connection(("127.0.0.1", skiffd.port), timeout=10) as s:
        s.sendall(f"POST /v1/sandboxes/{web}/ports/{ECHO}/a/b%20c?q=1&r=%2F HTTP/1.1\r\n"
                  f"Host: example.test\r\nAuthorization: Bearer {skiffd.token}\r\n"
                  "X-Custom: kept\r\nConnection: keep-alive, X-Hop\r\nX-Hop: dropped\r\n"
                  "X-Forwarded-For: 10.9.9.9\r\nContent-Length: 5\r\n\r\nhello".encode())
        got = b""
        while b"\r\n\r\nhello" not in got:
            chunk = s.recv(4096)
            assert chunk, got
            got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /a/b%20c?q=1&r=%2F HTTP/1.1", lines
    fields = {}
    for line in lines[1:]:
        k, _, v = line.partition(": ")
        fields.setdefault(k.lower(), []).append(v)
    assert fields["host"] == ["example.test"]
    assert fields["x-custom"] == ["kept"]
    assert fields["content-length"] == ["5"] and body == b"hello"
    assert fields["connection"] == ["close"]
    assert fields["x-forwarded-for"] == ["127.0.0.1"]
    assert fields["x-forwarded-proto"] == ["http"]
    assert fields["x-forwarded-prefix"] == [f"/v1/sandboxes/{web}/ports/{ECHO}"]
    assert "authorization" not in fields and "x-hop" not in fields, fields
    assert skiffd.token.encode() not in got


def test_upgrade_relays_both_ways(skiffd, web):
    """An upgrade (as WebSocket does) keeps the connection: bytes go both ways as they come."""
    base = fds(skiffd.proc.pid)
    s, got = upgraded_echo(skiffd.port, skiffd.token, web)
    assert s, got
    with s:
        assert b"\r\nConnection: Upgrade\r\nUpgrade: echo-test\r\n" in got, got
        for msg in (b"ping", os.urandom(300000), b"pong"):
            assert echo_round_trip(s, msg) == msg
    assert no_tunnels(skiffd, base)


def test_streamed_response(skiffd, web):
    st = Stream(skiffd, web, WEB, "cgi-bin/slow")
    try:
        assert st.r.status == 200
        assert st.r.fp.readline() == b"first\n"  # while the script waits for /tmp/go
        files_put(skiffd, web, "/tmp/go", b"")
        assert st.r.fp.readline() == b"second\n"
        assert st.r.read() == b""
    finally:
        st.close()


def test_auth_and_workspaces(skiffd, web):
    s, _, body = proxy(skiffd, web, WEB, "index.html", token=None)
    assert s == 401, body
    s, _, body = proxy(skiffd, web, WEB, "index.html", token="sk_not_a_token")
    assert s == 401, body
    s, ws = skiffd.api("POST", "/v1/workspaces", {"name": f"ports-{time.monotonic_ns()}"})
    assert s == 201, ws
    s, dev = skiffd.api("POST", "/v1/tokens", {"name": "other", "workspace": ws["id"],
                                               "role": "developer"})
    assert s == 201, dev
    s, viewer = skiffd.api("POST", "/v1/tokens", {"name": "viewer", "role": "viewer"})
    assert s == 201, viewer
    try:
        s, _, body = proxy(skiffd, web, WEB, "index.html", token=dev["secret"])
        assert s == 404 and json.loads(body)["error"]["code"] == "not_found", body
        assert skiffd.api("GET", f"/v1/sandboxes/{web}/ports", token=dev["secret"])[0] == 404
        # a viewer sees the ports but may not call them
        assert skiffd.api("GET", f"/v1/sandboxes/{web}/ports", token=viewer["secret"])[0] == 200
        s, _, body = proxy(skiffd, web, WEB, "index.html", token=viewer["secret"])
        assert s == 403, body
    finally:
        skiffd.api("DELETE", f"/v1/tokens/{dev['id']}")
        skiffd.api("DELETE", f"/v1/tokens/{viewer['id']}")


def test_undeclared_and_bad_ports(skiffd, web):
    for port in ("9090", "0", "65536", "99999", "80a", "-1", "08080x"):
        s, _, body = proxy(skiffd, web, port, "index.html")
        assert s == 404, (port, body)
        assert json.loads(body)["error"]["code"] == "not_found"
    s, _, body = proxy(skiffd, "sb-00000000000000000000000000", WEB)
    assert s == 404, body


def test_nothing_listening_is_502(skiffd, web):
    base = fds(skiffd.proc.pid)
    s, _, body = proxy(skiffd, web, NOTHING, "x")
    err = json.loads(body)["error"]
    assert s == 502 and err["code"] == "unavailable", body
    assert str(NOTHING) in err["message"] and "refused" in err["message"], err
    assert no_tunnels(skiffd, base)


def test_ended_sandbox_is_409(skiffd):
    s, sb = skiffd.api("POST", "/v1/sandboxes", {"ports": [WEB], "command": ["true"]})
    assert s == 201
    s, _ = skiffd.api("POST", f"/v1/sandboxes/{sb['id']}/wait?timeout_s=30")
    s, _, body = proxy(skiffd, sb["id"], WEB)
    assert s == 409 and json.loads(body)["error"]["code"] == "conflict", body


@pytest.mark.parametrize("ports", [
    "8080", [0], [65536], [-80], [80.5], ["80"], [None], [80, 80], list(range(1, 18)), {"a": 1},
])
def test_bad_ports_at_create(skiffd, ports):
    s, before = skiffd.api("GET", "/v1/sandboxes?limit=1000")
    s, body = skiffd.api("POST", "/v1/sandboxes", {"ports": ports})
    assert s == 400 and body["error"]["code"] == "invalid_argument", body
    assert "ports" in body["error"]["message"]
    s, after = skiffd.api("GET", "/v1/sandboxes?limit=1000")
    assert len(after["items"]) == len(before["items"])


def test_sixteen_ports_accepted(skiffd):
    ports = list(range(9000, 9016))
    s, sb = skiffd.api("POST", "/v1/sandboxes", {"ports": ports})
    assert s == 201 and sb["ports"] == ports, sb


def test_deleted_mid_response(skiffd, web):
    base = fds(skiffd.proc.pid)
    st = Stream(skiffd, web, WEB, "cgi-bin/forever")
    try:
        assert st.r.status == 200 and st.r.fp.readline() == b"tick\n"
        s, end = skiffd.api("DELETE", f"/v1/sandboxes/{web}")
        assert s == 200 and end["state"] == "terminated", end
        skiffd.deleted.add(web)
        try:
            while st.r.fp.readline():
                pass  # the stream ends (EOF, or a reset), it does not hang (30 s timeout)
        except ConnectionError:
            pass
    finally:
        st.close()
    assert no_tunnels(skiffd, base)


def test_client_gone_mid_stream(skiffd, web):
    base = fds(skiffd.proc.pid)
    for _ in range(3):
        st = Stream(skiffd, web, WEB, "cgi-bin/forever")
        assert st.r.status == 200 and st.r.fp.readline() == b"tick\n"
        st.sock.shutdown(socket.SHUT_RDWR)
        st.close()
    assert no_tunnels(skiffd, base)
    # the sandbox's server lives on
    assert proxy(skiffd, web, WEB, "index.html")[0] == 200


def test_slow_reader_memory_bounded(skiffd, web):
    """50 MiB through a reader that sleeps: the server buffers a bounded amount, whatever the
    sandbox writes (the rest waits in the sandbox, which blocks on a full socket)."""
    base = fds(skiffd.proc.pid)
    st = Stream(skiffd, web, WEB, "cgi-bin/big")
    start = rss_kib(skiffd.proc.pid)
    try:
        assert st.r.status == 200
        total, peak = read_slowly(st.r, skiffd.proc.pid, 0.01)
    finally:
        st.close()
    assert total == 50 * MIB
    assert peak - start < 24 * 1024, f"skiffd grew {(peak - start) // 1024} MiB"
    assert no_tunnels(skiffd, base)


def test_open_tunnel_keeps_an_idle_limited_sandbox(skiffd):
    """idle_timeout_s counts from the end of the last tunnel, not from its start."""
    s, sb = skiffd.api("POST", "/v1/sandboxes", {"ports": [WEB], "idle_timeout_s": 2,
                                                 "command": ["sh", "-c", SETUP]})
    assert s == 201, sb
    files_put(skiffd, sb["id"], "/srv/cgi-bin/forever",
              b"#!/bin/sh\n" + CGI["forever"].encode(), "755")
    assert wait_for(lambda: proxy(skiffd, sb["id"], WEB)[0] == 200, 15, 0.05)
    st = Stream(skiffd, sb["id"], WEB, "cgi-bin/forever")
    try:
        end = time.monotonic() + 4  # twice the idle limit, with nothing but the stream
        while time.monotonic() < end:
            assert st.r.fp.readline() == b"tick\n"
        assert skiffd.api("GET", f"/v1/sandboxes/{sb['id']}")[1]["state"] == "running"
    finally:
        st.close()
    assert wait_for(lambda: skiffd.api("GET", f"/v1/sandboxes/{sb['id']}")[1]["state"]
                    == "timeout", 15, 0.2)


def test_tunnels_counted_in_metrics(skiffd, web):
    st = Stream(skiffd, web, WEB, "cgi-bin/forever")
    try:
        assert st.r.fp.readline() == b"tick\n"
        assert metric(skiffd, "skiff_tunnels_open") == 1
    finally:
        st.close()
    assert wait_for(lambda: metric(skiffd, "skiff_tunnels_open") == 0, 15, 0.1)


def test_cli_port_option_and_ports(skiffd, tmp_path):
    env = skiff_env(tmp_path / "config", skiffd.url, skiffd.token)
    p = run(env, "sandbox", "create", "--port", str(WEB), "--port", str(NOTHING), "--",
            "sh", "-c", SETUP, check=0)
    sbid = p.stdout.strip()
    ports = json.loads(run(env, "sandbox", "ports", sbid, "--json", check=0).stdout)
    url = f"{skiffd.url}/v1/sandboxes/{sbid}/ports/{WEB}/"
    assert ports == [{"port": WEB, "url": url},
                     {"port": NOTHING, "url": f"{skiffd.url}/v1/sandboxes/{sbid}/ports/{NOTHING}/"}]
    table = run(env, "sandbox", "ports", sbid, check=0).stdout.splitlines()
    assert table[0].split() == ["PORT", "URL"] and table[1].split() == [str(WEB), url], table

    def get():
        req = urllib.request.Request(url + "index.html",
                                     headers={"Authorization": f"Bearer {skiffd.token}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.read()
        except OSError:
            return None

    assert wait_for(lambda: get() == b"hello\n", 15, 0.05)
    # bad values: the client's own check (usage, 2), then the server's (1)
    for bad in ("0", "65536", "http"):
        assert run(env, "sandbox", "create", "--port", bad).returncode == 2
    p = run(env, "sandbox", "create", "--port", "80", "--port", "80")
    assert p.returncode == 1 and "given twice" in p.stderr, p.stderr
    assert run(env, "sandbox", "ports", "sb-00000000000000000000000000").returncode == 1


def test_sdk_ports(skiffd):
    c = skiff.Client(skiffd.url, skiffd.token)
    try:
        sb = skiff.Sandbox.create(command=["sh", "-c", SETUP], ports=[WEB, NOTHING], client=c)
        assert sb.ports() == {p: f"{skiffd.url}/v1/sandboxes/{sb.id}/ports/{p}/"
                              for p in (WEB, NOTHING)}
        sb.files.write("/srv/cgi-bin/echo", b"#!/bin/sh\n" + CGI["echo"].encode(), mode=0o755,
                       parents=True)
        assert wait_for(lambda: sb.port_request(WEB, path="/index.html").status == 200, 15, 0.05)
        r = sb.port_request(WEB, "POST", "/cgi-bin/echo?x=1", body=b"\x00sdk\xff")
        assert (r.status, r.body) == (200, b"\x00sdk\xff")
        r = sb.port_request(WEB, path="/missing")
        assert r.status == 404  # the sandbox's answer, not an exception
        r = sb.port_request(NOTHING, path="/")
        assert r.status == 502 and r.json()["error"]["code"] == "unavailable"
        r = sb.port_request(9999)
        assert r.status == 404 and r.json()["error"]["code"] == "not_found"
        with pytest.raises(ValueError):
            sb.port_request(WEB, path="no-slash")
        with pytest.raises(skiff.InvalidArgument):
            skiff.Sandbox.create(ports=[70000], client=c)
        sb.terminate()
    finally:
        c.close()


def read_head(s):
    """What s sends up to the end of a head (or its EOF)."""
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


def upgraded_echo(port, token, sbid):
    """A connection through the proxy to the nc echo server, upgraded: (socket, what came back
    of the request), or (None, why) while it is not up yet."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall((f"GET /v1/sandboxes/{sbid}/ports/{ECHO}/ws HTTP/1.1\r\nHost: t\r\n"
               f"Authorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: echo-test\r\n"
               "\r\n").encode())
    got = read_head(s)
    if not got.startswith(b"GET /ws "):
        s.close()
        return None, got
    return s, got


def echo_round_trip(s, msg):
    s.sendall(msg)
    back = b""
    while len(back) < len(msg):
        chunk = s.recv(65536)
        if not chunk:
            return back
        back += chunk
    return back


def split_echo(split):
    s, sb = split.api("POST", "/v1/sandboxes", {
        "ports": [ECHO], "command": ["busybox", "nc", "-ll", "-p", str(ECHO), "-e", "/bin/cat"]})
    assert s == 201, sb
    conn = wait_for(lambda: upgraded_echo(split.port, split.token, sb["id"])[0], 15, 0.05)
    assert conn, upgraded_echo(split.port, split.token, sb["id"])
    assert echo_round_trip(conn, b"ping") == b"ping"
    return conn


def test_split_mode(split):  # noqa: F811
    s, sb = split.api("POST", "/v1/sandboxes", {"ports": [WEB], "command": ["sh", "-c", SETUP]})
    assert s == 201, sb

    def get():
        return split.raw("GET", f"/v1/sandboxes/{sb['id']}/ports/{WEB}/")

    assert wait_for(lambda: get() == (200, b"hello\n"), 15, 0.05), get()


@pytest.mark.parametrize("which", ["server", "worker"])
def test_split_stops_with_a_tunnel_open(split, which):  # noqa: F811
    """A daemon stopped while a tunnel relays frees everything (the ASan build checks) and the
    client's connection ends with it."""
    conn = split_echo(split)
    with conn:
        proc = split.server if which == "server" else split.worker
        assert split.stop(proc) == 0, split.log(which)
        conn.settimeout(10)
        try:
            assert conn.recv(4096) == b""
        except ConnectionError:
            pass


def test_split_worker_silent_while_a_tunnel_waits(split):  # noqa: F811
    """A worker that stops answering: the request waiting for its tunnel is answered (503 once
    the worker is declared lost, at most 504 after 10 s) and freed."""
    import signal
    conn = split_echo(split)
    conn.close()
    s, sbs = split.api("GET", "/v1/sandboxes")
    sbid = sbs["items"][0]["id"]
    split.worker.send_signal(signal.SIGSTOP)
    try:
        s, raw = split.raw("GET", f"/v1/sandboxes/{sbid}/ports/{ECHO}/", timeout=30)
        err = json.loads(raw)["error"]
        assert s in (503, 504) and sbid in err["message"], (s, err)
    finally:
        split.worker.send_signal(signal.SIGCONT)


# ---- what a sandbox must never get ----

EVIL_PORT = 8082
KEEP_ALIVE_THIEF = ("#!/bin/sh\nprintf 'HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok'\n"
                    "exec cat >> /tmp/stolen\n")


def test_a_keep_alive_answer_never_gets_the_clients_next_request(skiffd):
    """A sandbox answers as if the connection could stay open and then reads on: the client's
    next API call on the same connection (its token with it) must never reach the sandbox."""
    import socket
    s, sb = skiffd.api("POST", "/v1/sandboxes", {"ports": [EVIL_PORT], "command": [
        "sh", "-c", "while [ ! -x /srv/evil ]; do sleep 0.1; done; "
        f"exec busybox nc -ll -p {EVIL_PORT} -e /srv/evil"]})
    assert s == 201, sb
    files_put(skiffd, sb["id"], "/srv/evil", KEEP_ALIVE_THIEF.encode(), "755")
    assert wait_for(lambda: proxy(skiffd, sb["id"], EVIL_PORT)[0] == 200, 15, 0.1)
    with socket.create_connection(("127.0.0.1", skiffd.port), timeout=10) as so:
        so.sendall(f"GET /v1/sandboxes/{sb['id']}/ports/{EVIL_PORT}/ HTTP/1.1\r\nHost: t\r\n"
                   f"Authorization: Bearer {skiffd.token}\r\n\r\n".encode())
        got = b""
        while b"ok" not in got:
            b = so.recv(4096)
            assert b, got
            got += b
        head = got.split(b"\r\n\r\n")[0].lower()
        assert b"connection: close" in head, got  # the client is told to go
        try:  # a client that ignores it: its next request goes nowhere
            so.sendall(f"GET /v1/whoami HTTP/1.1\r\nHost: t\r\n"
                       f"Authorization: Bearer {skiffd.token}\r\n\r\n".encode())
            so.settimeout(3)
            so.recv(4096)
        except OSError:
            pass
    time.sleep(1)
    st, _, raw = skiffd.raw("GET", f"/v1/sandboxes/{sb['id']}/files?path=/tmp/stolen", None,
                            headers(skiffd))
    assert skiffd.token.encode() not in raw and b"whoami" not in raw, raw[:500]


def test_forwarding_headers_and_bytes_a_client_sends_are_not_passed_on(skiffd):
    import socket
    s, sb = skiffd.api("POST", "/v1/sandboxes", {"ports": [EVIL_PORT], "command": [
        "busybox", "nc", "-ll", "-p", str(EVIL_PORT), "-e", "/bin/cat"]})
    assert s == 201

    def one(raw):
        with socket.create_connection(("127.0.0.1", skiffd.port), timeout=10) as so:
            so.sendall(raw)
            return read_head(so)

    base = (f"GET /v1/sandboxes/{sb['id']}/ports/{EVIL_PORT}/x HTTP/1.1\r\nHost: t\r\n"
            f"Authorization: Bearer {skiffd.token}\r\n")
    assert wait_for(lambda: one((base + "\r\n").encode()).startswith(b"GET /x"), 15, 0.1)
    echoed = one((base + "X-Forwarded-Host: evil\r\nForwarded: for=6.6.6.6\r\n"
                  "X-Real-IP: 6.6.6.6\r\nConnection: keep-alive\r\nConnection: X-Secret\r\n"
                  "X-Secret: s\r\n\r\n").encode()).lower()
    for bad in (b"x-forwarded-host", b"forwarded: for", b"x-real-ip", b"x-secret",
                skiffd.token.encode().lower()):
        assert bad not in echoed, (bad, echoed)
    got = one(f"GET /v1/sandboxes/{sb['id']}/ports/{EVIL_PORT}/a\tb?c\td HTTP/1.1\r\nHost: t\r\n"
              f"Authorization: Bearer {skiffd.token}\r\n\r\n".encode())
    assert got.startswith(b"HTTP/1.1 400"), got


def post_head(d, sbid, port, rest, length, token=""):
    return (f"POST /v1/sandboxes/{sbid}/ports/{port}/{rest} HTTP/1.1\r\nHost: t\r\n"
            f"Authorization: Bearer {token or d.token}\r\nContent-Length: {length}\r\n\r\n"
            ).encode()


def read_all(so):
    got = b""
    while True:
        b = so.recv(65536)
        if not b:
            return got
        got += b


def test_large_upload_streamed_memory_bounded(skiffd, web):
    """A 64 MiB upload (more than a body the server would read whole) goes to the sandbox as it
    comes: the server holds a bounded part of it at any time."""
    base = fds(skiffd.proc.pid)
    size = 64 * MIB
    start = peak = rss_kib(skiffd.proc.pid)
    piece = bytes(MIB)
    with socket.create_connection(("127.0.0.1", skiffd.port), timeout=60) as so:
        so.sendall(post_head(skiffd, web, WEB, "cgi-bin/count", size))
        for _ in range(size // MIB):
            so.sendall(piece)
            peak = max(peak, rss_kib(skiffd.proc.pid))
        got = read_all(so)
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), got[:500]
    assert body.strip() == str(size).encode(), got[:500]
    assert peak - start < 24 * 1024, f"skiffd grew {(peak - start) // 1024} MiB"
    assert no_tunnels(skiffd, base)


def test_streamed_body_then_next_request_not_passed_on(skiffd, web):
    """The rest of a body streamed on goes to the sandbox, and not a byte past it."""
    with socket.create_connection(("127.0.0.1", skiffd.port), timeout=10) as so:
        so.sendall(post_head(skiffd, web, ECHO, "x", 5) + b"hel")
        time.sleep(0.2)  # the tunnel is being set up; the rest comes later
        so.sendall(b"lo" + raw_request(skiffd, web, ECHO, "next"))
        so.shutdown(socket.SHUT_WR)
        got = read_all(so)
    assert got.startswith(b"POST /x HTTP/1.1") and got.endswith(b"\r\n\r\nhello"), got
    assert b"/next" not in got and skiffd.token.encode() not in got, got


def test_half_close_after_the_request(skiffd, web):
    """A client that sends its request and body and then shuts down its sending side still
    gets the answer (also when the half-close comes before the tunnel is up)."""
    base = fds(skiffd.proc.pid)
    body = os.urandom(100 * 1024)
    for delay in (0, 0.3):
        with socket.create_connection(("127.0.0.1", skiffd.port), timeout=30) as so:
            so.sendall(post_head(skiffd, web, WEB, "cgi-bin/echo", len(body)) + body)
            time.sleep(delay)
            so.shutdown(socket.SHUT_WR)
            got = read_all(so)
        head, _, back = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), got[:300]
        assert back == body
    # chunked: the body is read whole first, then the half-close
    chunked = (f"POST /v1/sandboxes/{web}/ports/{WEB}/cgi-bin/echo HTTP/1.1\r\nHost: t\r\n"
               f"Authorization: Bearer {skiffd.token}\r\nTransfer-Encoding: chunked\r\n\r\n"
               "5\r\nhello\r\n0\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", skiffd.port), timeout=30) as so:
        so.sendall(chunked)
        so.shutdown(socket.SHUT_WR)
        got = read_all(so)
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"\r\n\r\nhello"), got[:300]
    assert no_tunnels(skiffd, base)


def new_token(d, role="developer", **extra):
    s, t = d.api("POST", "/v1/tokens", {"name": f"tunnel{time.monotonic_ns()}", "role": role, **extra})
    assert s == 201, t
    return t


def stream_ends(st, timeout=20):
    """Whether the stream's response ends (EOF or a reset) within timeout seconds."""
    end = time.monotonic() + timeout
    try:
        while st.r.fp.readline():
            if time.monotonic() > end:
                return False
    except (ConnectionError, TimeoutError, OSError):
        pass
    return True


@pytest.mark.parametrize("how", ["deleted", "expired"])
def test_tunnel_closed_with_its_token(skiffd, web, how):
    """A tunnel lasts no longer than the token that opened it: deleted or expired, its open
    streams are cut."""
    base = fds(skiffd.proc.pid)
    extra = {}
    if how == "expired":
        when = time.gmtime(time.time() + 3)
        extra["expires_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", when)
    t = new_token(skiffd, **extra)
    st = Stream(skiffd, web, WEB, "cgi-bin/forever", token=t["secret"])
    other = Stream(skiffd, web, WEB, "cgi-bin/forever")  # the admin's: stays
    try:
        assert st.r.status == 200 and st.r.fp.readline() == b"tick\n"
        assert other.r.status == 200 and other.r.fp.readline() == b"tick\n"
        if how == "deleted":
            s, body = skiffd.api("DELETE", f"/v1/tokens/{t['id']}")
            assert s == 200, body
        assert stream_ends(st)
        assert other.r.fp.readline() == b"tick\n"
    finally:
        st.close()
        other.close()
    assert no_tunnels(skiffd, base)


def test_tunnels_per_workspace_limit(limited_skiffd):
    """The per-workspace tunnel limit (lowered to 2 here): a third is refused with 429 while
    two are open, and goes once one is closed."""
    d = limited_skiffd
    sbid = make_web(d)
    base = fds(d.proc.pid)
    a = Stream(d, sbid, WEB, "cgi-bin/forever")
    b = Stream(d, sbid, WEB, "cgi-bin/forever")
    try:
        for st in (a, b):
            assert st.r.status == 200 and st.r.fp.readline() == b"tick\n"
        s, _, raw = proxy(d, sbid, WEB, "index.html")
        assert s == 429 and json.loads(raw)["error"]["code"] == "resource_exhausted", raw
        assert b"2 tunnels open" in raw, raw
        a.close()
        assert wait_for(lambda: proxy(d, sbid, WEB, "index.html")[0] == 200, 15, 0.1)
    finally:
        a.close()
        b.close()
    assert no_tunnels(d, base)


def test_bodies_held_limit(limited_skiffd):
    """Chunked bodies are read whole before their tunnel; what all requests hold at once is
    capped (lowered to 6 MiB here): past it, 503, and the rest of the server goes on."""
    d = limited_skiffd
    sbid = make_web(d)
    head = (f"POST /v1/sandboxes/{sbid}/ports/{WEB}/cgi-bin/count HTTP/1.1\r\nHost: t\r\n"
            f"Authorization: Bearer {d.token}\r\nTransfer-Encoding: chunked\r\n\r\n"
            ).encode()
    part = b"%x\r\n" % MIB + bytes(MIB) + b"\r\n"
    with socket.create_connection(("127.0.0.1", d.port), timeout=30) as first:
        first.sendall(head + part * 3)  # 3 MiB held (4 MiB of buffer), not ended
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", d.port), timeout=30) as second:
            second.sendall(head)
            try:
                second.sendall(part * 3)
            except OSError:
                pass  # refused and closed while sending
            got = read_all(second)
        assert got.startswith(b"HTTP/1.1 503"), got[:300]
        assert b"too many request bodies" in got, got
        first.sendall(b"0\r\n\r\n")
        got = read_all(first)
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(str(3 * MIB).encode() + b"\n"), got
    # nothing held any more: the same again goes through
    with socket.create_connection(("127.0.0.1", d.port), timeout=30) as so:
        so.sendall(head + part * 3 + b"0\r\n\r\n")
        assert read_all(so).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("length", ["9223372036854775808", "18446744073709551615"])
def test_body_length_past_what_is_streamed_refused(skiffd, web, length):
    """A declared length the server can't count down (past 2^63 - 1) is refused, rather than
    forwarded as another length (the sandbox would read a different body than the client
    sent)."""
    with socket.create_connection(("127.0.0.1", skiffd.port), timeout=10) as so:
        so.sendall(post_head(skiffd, web, ECHO, "x", length) + b"hello")
        so.shutdown(socket.SHUT_WR)
        got = read_all(so)
    assert got.startswith(b"HTTP/1.1 413"), got[:300]
    assert b"POST /x" not in got, got[:300]
