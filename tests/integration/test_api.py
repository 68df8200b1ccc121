"""The REST API of `skiffd dev`, driven over raw HTTP: every route of the sandbox, token and
workspace families, authentication and each role's limits, idempotent creates, bad input, many
sandboxes at once, and a restart that leaves sandboxes running."""

import base64
import contextlib
import json
import os
import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import (BIN_DIR, descendants, proc_alive, proc_info, sandbox_cgroups, sandbox_pids,
                      wait_for)

ID_RE = {p: re.compile(p + r"-[0-9A-HJKMNP-TV-Z]{26}$") for p in ("sb", "ex", "tk", "ws", "wk")}


def err_code(body):
    assert isinstance(body, dict) and "error" in body, body
    e = body["error"]
    assert isinstance(e.get("message"), str) and e["message"], body
    return e["code"]


def create(d, body=None, token="", **kw):
    s, sb = d.api("POST", "/v1/sandboxes", body if body is not None else {}, token=token, **kw)
    return s, sb


def run(d, sbid, cmd, token="", **extra):
    body = {"command": cmd, **extra}
    return d.api("POST", f"/v1/sandboxes/{sbid}/exec?wait=true", body, token=token)


def list_all(d, path, token=""):
    """Every item of a list route, following next_cursor."""
    items, cursor = [], ""
    sep = "&" if "?" in path else "?"
    while True:
        s, body = d.api("GET", f"{path}{sep}limit=1000{cursor}", token=token)
        assert s == 200, body
        items += body["items"]
        if not body["next_cursor"]:
            return items
        cursor = "&cursor=" + body["next_cursor"]


def new_workspace(d, name=None):
    name = name or "ws" + str(time.monotonic_ns())
    s, w = d.api("POST", "/v1/workspaces", {"name": name})
    assert s == 201, w
    return w


def new_token(d, role, workspace=None, token="", **extra):
    body = {"name": f"t{time.monotonic_ns()}", "role": role, **extra}
    if workspace:
        body["workspace"] = workspace
    s, t = d.api("POST", "/v1/tokens", body, token=token)
    assert s == 201, t
    return t


# ---- health, authentication ----


def test_healthz_needs_no_token(skiffd):
    s, body = skiffd.api("GET", "/healthz", token=None)
    assert s == 200 and body == {"status": "ok"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk_" + "0" * 64},
                                     {"Authorization": "Basic YWRtaW46YWRtaW4="},
                                     {"Authorization": "Bearer "}])
def test_v1_routes_need_a_valid_token(skiffd, headers):
    for method, path in [("GET", "/v1/sandboxes"), ("POST", "/v1/sandboxes"),
                         ("GET", "/v1/tokens"), ("GET", "/v1/workspaces"),
                         ("GET", "/v1/whoami"), ("DELETE", "/v1/sandboxes/sb-x")]:
        s, _, raw = skiffd.raw(method, path, b"{}" if method == "POST" else None, headers)
        assert s == 401, (method, path, s, raw)
        assert err_code(json.loads(raw)) == "unauthenticated"


def test_worker_link_refuses_api_tokens(skiffd):
    s, body = skiffd.api("POST", "/internal/v1/workers/register",
                         {"version": 1, "name": "intruder", "sandboxes": []})
    assert s == 401 and err_code(body) == "unauthenticated"


def test_whoami_and_admin_token_file(skiffd):
    st = (skiffd.data / "admin.token").stat()
    assert st.st_mode & 0o777 == 0o600
    s, me = skiffd.api("GET", "/v1/whoami")
    assert s == 200 and me["role"] == "admin" and me["workspace_name"] == "default"
    assert ID_RE["tk"].match(me["token"]) and ID_RE["ws"].match(me["workspace"])


def test_unknown_route_and_method(skiffd):
    s, body = skiffd.api("GET", "/v1/nothing-here")
    assert s == 404 and err_code(body) == "not_found"
    s, body = skiffd.api("PUT", "/v1/sandboxes")
    assert s == 405 and err_code(body)


# ---- workspaces and tokens ----


def test_workspaces_create_list_and_conflicts(skiffd):
    w = new_workspace(skiffd)
    assert ID_RE["ws"].match(w["id"])
    s, body = skiffd.api("POST", "/v1/workspaces", {"name": w["name"]})
    assert s == 409 and err_code(body) == "conflict"
    for bad in [{}, {"name": ""}, {"name": "a b"}, {"name": 5}, {"name": "x" * 64},
                {"name": "ok", "extra": 1}]:
        s, body = skiffd.api("POST", "/v1/workspaces", bad)
        assert s == 400 and err_code(body) == "invalid_argument", bad
    s, body = skiffd.api("GET", "/v1/workspaces?limit=1000")
    names = [x["name"] for x in body["items"]]
    assert "default" in names and w["name"] in names


def test_token_secret_shown_once_and_hashed_at_rest(skiffd):
    t = new_token(skiffd, "developer")
    assert ID_RE["tk"].match(t["id"]) and re.match(r"sk_[0-9a-f]{64}$", t["secret"])
    listed = [x for x in list_all(skiffd, "/v1/tokens") if x["id"] == t["id"]]
    assert listed and "secret" not in listed[0]
    db = (skiffd.data / "skiff.db").read_bytes()
    wal = skiffd.data / "skiff.db-wal"
    db += wal.read_bytes() if wal.exists() else b""
    assert t["secret"].encode() not in db
    s, me = skiffd.api("GET", "/v1/whoami", token=t["secret"])
    assert s == 200 and me["token"] == t["id"] and me["role"] == "developer"


def test_token_delete_revokes_at_once(skiffd):
    t = new_token(skiffd, "viewer")
    assert skiffd.api("GET", "/v1/sandboxes", token=t["secret"])[0] == 200
    s, body = skiffd.api("DELETE", f"/v1/tokens/{t['id']}")
    assert s == 200 and body["id"] == t["id"]
    s, body = skiffd.api("GET", "/v1/sandboxes", token=t["secret"])
    assert s == 401
    s, body = skiffd.api("DELETE", f"/v1/tokens/{t['id']}")
    assert s == 404 and err_code(body) == "not_found"


def test_token_expiry(skiffd):
    exp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))
    t = new_token(skiffd, "viewer", expires_at=exp)
    assert skiffd.api("GET", "/v1/sandboxes", token=t["secret"])[0] == 200
    assert wait_for(lambda: skiffd.api("GET", "/v1/sandboxes", token=t["secret"])[0] == 401,
                    10, 0.2)
    for bad in ["tomorrow", "2020-01-01T00:00:00Z", 12]:
        s, body = skiffd.api("POST", "/v1/tokens",
                             {"name": "x", "role": "viewer", "expires_at": bad})
        assert s == 400 and err_code(body) == "invalid_argument", bad


def test_token_create_validation(skiffd):
    for bad in [{"role": "viewer"}, {"name": "x"}, {"name": "x", "role": "god"},
                {"name": "x y", "role": "viewer"}, {"name": "x", "role": "viewer", "q": 1},
                {"name": 5, "role": "viewer"}, {"name": "x", "role": "viewer",
                                                "expires_at": "soon"}]:
        s, body = skiffd.api("POST", "/v1/tokens", bad)
        assert s == 400 and err_code(body) == "invalid_argument", bad
    s, body = skiffd.api("POST", "/v1/tokens",
                         {"name": "x", "role": "viewer", "workspace": "no-such-ws"})
    assert s == 404 and err_code(body) == "not_found"


def test_last_admin_token_cannot_be_deleted(skiffd):
    s, me = skiffd.api("GET", "/v1/whoami")
    admins = [t for t in list_all(skiffd, "/v1/tokens") if t["role"] == "admin"]
    if len(admins) == 1:
        s, body = skiffd.api("DELETE", f"/v1/tokens/{me['token']}")
        assert s == 409 and err_code(body) == "conflict"
    other = new_token(skiffd, "admin")
    s, body = skiffd.api("DELETE", f"/v1/tokens/{other['id']}", token=other["secret"])
    assert s == 200  # not the last one: an admin token may delete itself
    assert skiffd.api("GET", "/v1/whoami")[0] == 200


def test_roles(skiffd):
    ws = new_workspace(skiffd)
    owner = new_token(skiffd, "owner", ws["name"])["secret"]
    dev = new_token(skiffd, "developer", ws["id"])["secret"]
    viewer = new_token(skiffd, "viewer", ws["id"])["secret"]
    agent = new_token(skiffd, "sandbox-agent", ws["id"])["secret"]

    # viewer: reads only
    assert skiffd.api("GET", "/v1/sandboxes", token=viewer)[0] == 200
    s, body = create(skiffd, token=viewer)
    assert s == 403 and err_code(body) == "permission_denied"
    assert skiffd.api("GET", "/v1/tokens", token=viewer)[0] == 403
    # sandbox-agent: sandboxes only
    s, sb = create(skiffd, token=agent)
    assert s == 201, sb
    s, out = run(skiffd, sb["id"], ["echo", "agent"], token=agent)
    assert s == 200 and out["stdout"] == "agent\n"
    for method, path in [("GET", "/v1/tokens"), ("GET", "/v1/workspaces"),
                         ("POST", "/v1/tokens"), ("GET", "/v1/workers")]:
        s, _ = skiffd.api(method, path, {"name": "a", "role": "viewer"}
                          if method == "POST" else None, token=agent)
        assert s == 403, (method, path)
    # developer: sandboxes, not tokens
    s, body = skiffd.api("POST", "/v1/tokens", {"name": "x", "role": "viewer"}, token=dev)
    assert s == 403
    s, t_admin = skiffd.api("GET", "/v1/whoami")
    assert skiffd.api("DELETE", f"/v1/tokens/{t_admin['token']}", token=dev)[0] == 403
    # viewer: no exec, no patch
    assert skiffd.api("POST", f"/v1/sandboxes/{sb['id']}/exec?wait=true",
                      {"command": ["true"]}, token=viewer)[0] == 403
    assert skiffd.api("PATCH", f"/v1/sandboxes/{sb['id']}", {"tags": {}},
                      token=viewer)[0] == 403
    assert skiffd.api("GET", f"/v1/sandboxes/{sb['id']}", token=viewer)[0] == 200
    # owner: tokens of its workspace, never above its own role, never another workspace
    t = new_token(skiffd, "viewer", token=owner)
    assert t["workspace"] == ws["id"]
    s, body = skiffd.api("POST", "/v1/tokens", {"name": "x", "role": "admin"}, token=owner)
    assert s == 403
    # an owner deletes its workspace's tokens, never an admin's (nor sees one elsewhere)
    assert skiffd.api("DELETE", f"/v1/tokens/{t['id']}", token=owner)[0] == 200
    assert skiffd.api("DELETE", f"/v1/tokens/{t_admin['token']}", token=owner)[0] == 404
    s, body = skiffd.api("POST", "/v1/tokens",
                         {"name": "x", "role": "viewer", "workspace": "default"}, token=owner)
    assert s == 404
    assert {x["workspace"] for x in list_all(skiffd, "/v1/tokens", token=owner)} == {ws["id"]}
    s, body = skiffd.api("POST", "/v1/workspaces", {"name": "nope"}, token=owner)
    assert s == 403
    assert skiffd.api("DELETE", f"/v1/sandboxes/{sb['id']}", token=viewer)[0] == 403
    assert skiffd.api("DELETE", f"/v1/sandboxes/{sb['id']}", token=agent)[0] == 200


def test_workspaces_never_see_each_other(skiffd):
    a, b = new_workspace(skiffd), new_workspace(skiffd)
    ta = new_token(skiffd, "developer", a["id"])["secret"]
    tb = new_token(skiffd, "developer", b["id"])["secret"]
    s, sa = create(skiffd, {"name": "same", "tags": {"team": "x"}}, token=ta)
    assert s == 201, sa
    s, sb = create(skiffd, {"name": "same"}, token=tb)  # names are per workspace
    assert s == 201, sb
    for method, suffix, body in [("GET", "", None), ("DELETE", "", None),
                                 ("PATCH", "", {"tags": {}}), ("POST", "/wait", None),
                                 ("POST", "/exec?wait=true", {"command": ["true"]})]:
        s, r = skiffd.api(method, f"/v1/sandboxes/{sa['id']}{suffix}", body, token=tb)
        assert s == 404 and err_code(r) == "not_found", (method, suffix, s, r)
    s, lst = skiffd.api("GET", "/v1/sandboxes?limit=1000", token=tb)
    assert [x["id"] for x in lst["items"]] == [sb["id"]]
    s, lst = skiffd.api("GET", "/v1/tokens?limit=1000", token=tb)
    assert s == 403  # developer
    s, ws = skiffd.api("GET", "/v1/workspaces", token=tb)
    assert [x["id"] for x in ws["items"]] == [b["id"]]
    # the admin sees both
    s, lst = skiffd.api("GET", "/v1/sandboxes?limit=1000&name=same")
    assert {sa["id"], sb["id"]} <= {x["id"] for x in lst["items"]}


# ---- sandboxes ----


def test_create_get_exec_delete(skiffd):
    s, sb = create(skiffd, {"tags": {"k": "v"}, "memory_mib": 64, "name": "first"})
    assert s == 201, sb
    assert ID_RE["sb"].match(sb["id"]) and sb["state"] == "running"
    assert sb["memory_mib"] == 64 and sb["cpu"] == 1.0 and sb["image"] == "busybox"
    assert sb["tags"] == {"k": "v"} and sb["name"] == "first" and sb["started_at"]
    s, got = skiffd.api("GET", f"/v1/sandboxes/{sb['id']}")
    assert s == 200 and got["id"] == sb["id"] and got["state"] == "running"
    s, out = run(skiffd, sb["id"], ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert s == 200, out
    assert out["exit_code"] == 3 and out["state"] == "exited"
    assert out["stdout"] == "out\n" and out["stderr"] == "err\n" and out["truncated"] is False
    assert ID_RE["ex"].match(out["id"])
    s, ex = skiffd.api("GET", f"/v1/sandboxes/{sb['id']}/execs/{out['id']}")
    assert s == 200 and ex["exit_code"] == 3 and ex["state"] == "exited" and ex["ended_at"]
    s, fin = skiffd.api("DELETE", f"/v1/sandboxes/{sb['id']}")
    assert s == 200 and fin["state"] == "terminated" and fin["exit_code"] == 137
    s, again = skiffd.api("DELETE", f"/v1/sandboxes/{sb['id']}")
    assert s == 200 and again["state"] == "terminated"
    s, body = run(skiffd, sb["id"], ["true"])
    assert s == 409 and err_code(body) == "conflict"


def test_execs_racing_the_sandboxs_delete(skiffd):
    # Execs sent while the sandbox is deleted: each one ran (200), was refused as the sandbox
    # went (409) or failed to start, never a server error; nothing of the sandbox runs
    # afterwards.
    from concurrent.futures import ThreadPoolExecutor
    for rnd in range(4):
        s, sb = create(skiffd, {})
        assert s == 201, sb
        with ThreadPoolExecutor(6) as pool:
            execs = [pool.submit(run, skiffd, sb["id"], ["sh", "-c", "echo hi"])
                     for _ in range(5)]
            time.sleep(0.002 * rnd)
            deleted = pool.submit(skiffd.api, "DELETE", f"/v1/sandboxes/{sb['id']}")
            s, fin = deleted.result()
            assert s == 200 and fin["state"] == "terminated", fin
            for f in execs:
                s, out = f.result()
                assert s in (200, 409), (s, out)
                if s == 409:
                    assert err_code(out) == "conflict", out
                else:
                    # failed: the spawner had the delete first and started nothing.
                    assert out["state"] in ("exited", "lost", "failed"), out
                    if out["state"] == "failed":
                        assert out["exit_code"] is None, out
                    else:
                        assert out["exit_code"] != 0 or out["stdout"] == "hi\n", out

        def left():
            return [cg for cg in sandbox_cgroups(skiffd.instance)
                    if sb["id"] in cg and os.path.exists(f"{cg}/cgroup.procs")
                    and open(f"{cg}/cgroup.procs").read().split()]
        assert wait_for(lambda: not left(), 10), left()


def test_idle_sandboxes_init_is_skiff_init(skiffd):
    # A worker's sandbox (pooled or not) idles as skiff-init, not as a copy of the spawner:
    # its anonymous memory is a static program's few pages.
    s, sb = create(skiffd, {})
    assert s == 201, sb
    s, out = run(skiffd, sb["id"], ["sh", "-c", "cat /proc/1/comm; readlink /proc/1/exe"])
    assert s == 200 and out["stdout"] == "skiff-init\n", out
    exe = str(BIN_DIR / "skiff-init")

    def inits():
        return [p for p, _ in sandbox_pids(skiffd.instance)
                if os.path.exists(f"/proc/{p}/exe") and os.readlink(f"/proc/{p}/exe") == exe]
    assert wait_for(lambda: len(inits()) == 1, 5), sandbox_pids(skiffd.instance)
    with open(f"/proc/{inits()[0]}/status") as f:
        anon = int(next(ln for ln in f if ln.startswith("RssAnon:")).split()[1])
    assert anon < 256, anon
    s, _ = skiffd.api("DELETE", f"/v1/sandboxes/{sb['id']}")
    assert s == 200


def test_execs_are_started_by_init_which_holds_only_their_capabilities(skiffd):
    # The worker's sandboxes take execs through init: the command is init's child from the
    # start, in a process group of its own (through the setns way in, its group would be a
    # helper's outside the sandbox's view: 0). init holds exactly the commands' capabilities.
    s, sb = create(skiffd, {})
    assert s == 201, sb
    script = ("echo $PPID $(($(cut -d' ' -f5 /proc/$$/stat) == $$)); "
              "for k in CapInh CapPrm CapEff CapBnd CapAmb; do "
              "echo $k $(grep ^$k /proc/1/status | cut -f2) "
              "$(grep ^$k /proc/self/status | cut -f2); done; ls /proc/1/fd 2>&1 | head -c 60")
    s, out = run(skiffd, sb["id"], ["sh", "-c", script])
    assert s == 200 and out["exit_code"] == 0, out
    lines = out["stdout"].splitlines()
    assert lines[0] == "1 1", out
    caps = dict((ln.split()[0], ln.split()[1:]) for ln in lines[1:6])
    assert all(len(v) == 2 and v[0] == v[1] for v in caps.values()), caps
    assert caps["CapInh"][0] == caps["CapAmb"][0] == "0" * 16, caps
    eff = int(caps["CapEff"][0], 16)
    assert eff and not eff & (1 << 21), caps  # some, never CAP_SYS_ADMIN
    assert "denied" in lines[6], out  # init stays closed: not dumpable
    s, _ = skiffd.api("DELETE", f"/v1/sandboxes/{sb['id']}")
    assert s == 200


def fd_links(pid):
    """What the fds of pid name (those that close meanwhile left out)."""
    out = []
    for n in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{n}"))
        except FileNotFoundError:
            pass
    return out


def init_of(d, sbid):
    """The host pid of a worker's sandbox's init: the skiff-init whose root holds a file that an
    exec just made."""
    s, out = run(d, sbid, ["touch", f"/init-of-{sbid}"])
    assert s == 200 and out["exit_code"] == 0, out
    exe = str(BIN_DIR / "skiff-init")
    inits = [p for p, _ in sandbox_pids(d.instance)
             if os.path.exists(f"/proc/{p}/root/init-of-{sbid}")
             and os.readlink(f"/proc/{p}/exe") == exe]
    assert len(inits) == 1, inits
    return inits[0]


@contextlib.contextmanager
def stopped(pid):
    """pid stopped (SIGSTOP from the host) for the block, continued after it unless gone."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        if proc_alive(pid):
            os.kill(pid, signal.SIGCONT)


def test_an_exec_held_by_its_init_holds_no_other_sandbox(skiffd):
    # The worker waits for init's word on an exec without blocking: with one sandbox's init
    # held (stopped from the host), an exec into it waits, and execs into another sandbox run
    # meanwhile (a worker that waited in place held them all for up to its 10 s deadline).
    # Released, the held exec runs; deleted, its exec ends as failed and nothing is left.
    sbs = []
    for _ in range(2):
        s, sb = create(skiffd, {})
        assert s == 201, sb
        sbs.append(sb["id"])
    a, b = sbs
    init = init_of(skiffd, a)

    def held_exec(cmd):
        result = {}
        t = threading.Thread(target=lambda: result.update(r=run(skiffd, a, cmd)))
        t.start()
        return t, result

    spawner = spawner_of(skiffd)

    def starting():
        # Execs the worker is starting: it holds their output files until then (under the
        # runtime's id of the sandbox, which may not be the API's).
        return [x for x in fd_links(spawner) if "/execs/ex-" in x and x.endswith(".stdout")]

    with stopped(init):
        t, result = held_exec(["echo", "late"])
        # The held exec reached the worker: else the execs below would run first whether or not
        # the worker waits in place.
        assert wait_for(lambda: len(starting()) == 1, 10)
        t0 = time.monotonic()
        for _ in range(3):
            s, out = run(skiffd, b, ["echo", "hi"])
            assert s == 200 and (out["exit_code"], out["stdout"]) == (0, "hi\n"), out
        assert time.monotonic() - t0 < 5
        assert t.is_alive(), result
    t.join(20)
    s, out = result["r"]
    assert s == 200 and (out["exit_code"], out["stdout"]) == (0, "late\n"), out

    # More than go to init at once: the rest wait their turn in the worker, and go too.
    with stopped(init):
        held = [held_exec(["echo", "never"]) for _ in range(24)]
        # All of them reached the worker: 16 on their way to init (their files open), the rest
        # waiting their turn. The DELETE then ends both kinds.
        assert wait_for(lambda: len(starting()) == 16, 10), starting()
        s, fin = skiffd.api("DELETE", f"/v1/sandboxes/{a}")
        assert s == 200 and fin["state"] == "terminated", fin
        for t, _ in held:
            t.join(20)
    for _, result in held:
        s, out = result["r"]
        assert (s == 409 and err_code(out) == "conflict") or \
            (s == 200 and out["state"] == "failed" and out["exit_code"] is None), (s, out)
    assert wait_for(lambda: not proc_alive(init), 10)
    s, _ = skiffd.api("DELETE", f"/v1/sandboxes/{b}")
    assert s == 200


def test_an_exec_init_does_not_start_in_time_fails_and_never_runs(skiffd):
    # An exec that init has not started by the deadline (10 s) fails, and init, once it reads
    # the request, starts nothing: the worker has let go of it. So do those that waited their
    # turn behind it (more than go to init at once).
    s, sb = create(skiffd, {})
    assert s == 201, sb
    init = init_of(skiffd, sb["id"])

    def timed_run(i):
        t0 = time.monotonic()
        s, out = run(skiffd, sb["id"], ["touch", f"/ran-{i}"])
        return s, out, time.monotonic() - t0

    with stopped(init), ThreadPoolExecutor(max_workers=24) as pool:
        outs = list(pool.map(timed_run, range(24)))
    for s, out, took in outs:
        assert s == 200 and out["state"] == "failed" and out["exit_code"] is None, out
        assert 9 < took < 30, took
    s, out = run(skiffd, sb["id"], ["sh", "-c", "ls / | grep ran- || echo none"])
    assert s == 200 and out["stdout"] == "none\n", out
    s, _ = skiffd.api("DELETE", f"/v1/sandboxes/{sb['id']}")
    assert s == 200


def test_inits_events_log_starts_over_past_its_bound(skiffd):
    # init logs every process it reaps, the sandbox's orphans too, on the host's state
    # directory: a sandbox making orphans without end would grow it without end. Past 16 MiB
    # the log starts over. Grown here from the host to just past that, the log is small again
    # after the next exec, whose status is still found.
    s, sb = create(skiffd, {})
    assert s == 201, sb
    init = init_of(skiffd, sb["id"])
    logs = fd_links(init)
    events = [p for p in logs if p.endswith("/events")]
    assert len(events) == 1, logs
    line = b"exit 999999 1 0\n"
    with open(events[0], "ab") as f:
        f.write(line * ((16 * 1024 * 1024) // len(line) + 1024))
    assert os.path.getsize(events[0]) > 16 * 1024 * 1024
    s, out = run(skiffd, sb["id"], ["sh", "-c", "echo orphan; exit 3"])
    assert s == 200 and (out["exit_code"], out["stdout"]) == (3, "orphan\n"), out
    assert os.path.getsize(events[0]) < 4096
    s, out = run(skiffd, sb["id"], ["sh", "-c", "exit 4"])
    assert s == 200 and out["exit_code"] == 4, out
    s, _ = skiffd.api("DELETE", f"/v1/sandboxes/{sb['id']}")
    assert s == 200


def spawner_of(d):
    sp = [p for p in descendants(d.proc.pid) if (proc_info(p) or (0, ""))[1] == "skiff-spawner"]
    assert len(sp) == 1, sp
    return sp[0]


def settled_fds(pid):
    """How many fds pid holds, once that count has not changed for a while."""
    seen = []
    for _ in range(50):
        seen.append(len(os.listdir(f"/proc/{pid}/fd")))
        if len(seen) >= 4 and len(set(seen[-4:])) == 1:
            return seen[-1]
        time.sleep(0.1)
    raise AssertionError(f"the fds of {pid} never settled: {seen[-8:]}")


def test_execs_an_init_is_behind_on_hold_no_fds_past_a_few(skiffd):
    # Each exec on its way to init holds fds in the worker (its reply socket, its strings and
    # stdio until init's queue takes them, its output files): past a few per sandbox, the rest
    # wait their turn holding only their request, so a sandbox that starves its init of CPU can't
    # make the worker hold fds for every exec asked of it. Once init runs again, all of them run.
    s, sb = create(skiffd, {})
    assert s == 201, sb
    a = sb["id"]
    init = init_of(skiffd, a)
    spawner = spawner_of(skiffd)
    results = []
    pool = ThreadPoolExecutor(max_workers=80)

    def ask(n):
        for i in range(n):
            results.append(pool.submit(run, skiffd, a, ["echo", f"{len(results)}"]))

    with stopped(init):
        ask(40)
        at_40 = settled_fds(spawner)
        ask(40)
        at_80 = settled_fds(spawner)
    outs = [f.result(timeout=60) for f in results]
    pool.shutdown()
    for i, (s, out) in enumerate(outs):
        assert s == 200 and (out["exit_code"], out["stdout"]) == (0, f"{i}\n"), (i, s, out)
    assert at_80 - at_40 <= 4, (at_40, at_80)
    s, _ = skiffd.api("DELETE", f"/v1/sandboxes/{a}")
    assert s == 200


@pytest.mark.parametrize("value", [1, 2])
def test_init_serving_execs_stays_closed_whatever_suid_dumpable_says(skiffd, suid_dumpable,
                                                                     value):
    # Here init holds its commands' capabilities, and it execs skiff-init just after the start.
    # That exec must leave it as closed as skiff-box's init, which holds none
    # (test_box_detach.py): under 1 it would make init dumpable for the sandbox's root, so init
    # stays as it is; under 2 it execs and stays closed (dumpable for the host's root only).
    exe = str(BIN_DIR / "skiff-init")

    def inits():
        return {p for p, _ in sandbox_pids(skiffd.instance)
                if os.path.exists(f"/proc/{p}/exe") and os.readlink(f"/proc/{p}/exe") == exe}
    before = inits()
    suid_dumpable.set(value)
    try:
        s, sb = create(skiffd, {})
        assert s == 201, sb
        # Settled at the exec: the setting is put back once init has had time to make it.
        execd = wait_for(lambda: inits() - before, 10 if value == 2 else 0.5)
    finally:
        suid_dumpable.restore()
    assert bool(execd) == (value == 2), execd
    s, out = run(skiffd, sb["id"], ["sh", "-c", "grep ^CapEff /proc/1/status; cat /proc/1/maps; "
                                    "ls /proc/1/fd; head -c 1 /proc/1/mem; cat /proc/1/environ"])
    assert s == 200, out
    assert int(out["stdout"].split()[1], 16), out  # capabilities, and the rest printed nothing
    assert out["stdout"].count("\n") == 1, out
    assert out["stderr"].count("Permission denied") == 4, out
    s, _ = skiffd.api("DELETE", f"/v1/sandboxes/{sb['id']}")
    assert s == 200


def test_exec_sees_state_of_earlier_execs_and_env(skiffd):
    s, sb = create(skiffd, {"env": {"GREETING": "hi"}})
    assert s == 201
    assert run(skiffd, sb["id"], ["sh", "-c", "echo data > /tmp/f"])[1]["exit_code"] == 0
    s, out = run(skiffd, sb["id"], ["sh", "-c", "cat /tmp/f; echo $GREETING $X; pwd"],
                 env={"X": "y"}, workdir="/tmp")
    assert out["stdout"] == "data\nhi y\n/tmp\n", out


def test_exec_missing_command_and_binary_output(skiffd):
    s, sb = create(skiffd)
    s, out = run(skiffd, sb["id"], ["/no/such/thing"])
    assert s == 200 and out["exit_code"] == 127, out
    s, out = run(skiffd, sb["id"], ["sh", "-c", "printf '\\377\\376ok'"])
    assert s == 200 and "stdout" not in out
    assert base64.b64decode(out["stdout_b64"]) == b"\xff\xfeok"


def test_exec_output_is_capped(skiffd):
    s, sb = create(skiffd)
    # 3 MiB of output: the reply holds at most 1 MiB of it and says it was cut.
    s, out = run(skiffd, sb["id"], ["sh", "-c", "head -c 3145728 /dev/zero | tr '\\0' a"])
    assert s == 200, out
    assert out["truncated"] is True and out["exit_code"] == 0
    assert 0 < len(out["stdout"]) <= 1024 * 1024 and set(out["stdout"]) == {"a"}
    # Control characters are text too, six bytes each in JSON: 1 MiB of them on both streams
    # still comes back, and the execs after it still run.
    s, out = run(skiffd, sb["id"], ["sh", "-c", "head -c 2097152 /dev/zero | tr '\\0' '\\001'; "
                                                "head -c 2097152 /dev/zero | tr '\\0' '\\002' >&2"])
    assert s == 200, out
    assert out["truncated"] is True
    assert 0 < len(out["stdout"]) <= 1024 * 1024 and set(out["stdout"]) == {"\x01"}
    assert 0 < len(out["stderr"]) <= 1024 * 1024 and set(out["stderr"]) == {"\x02"}
    s, out = run(skiffd, sb["id"], ["echo", "after"])
    assert s == 200 and out["stdout"] == "after\n"


def test_waited_exec_output_whole_around_the_inline_size(skiffd):
    # A waited exec's output up to 64 KiB a stream comes with its end from the spawner; more is
    # read with the output op. Either way it is whole, byte for byte, text or not.
    s, sb = create(skiffd)
    for n in (0, 1, 65535, 65536, 65537, 200000):
        script = (f"head -c {n} /dev/zero | tr '\\0' x; "
                  f"head -c {n} /dev/zero | tr '\\0' '\\377' >&2")
        s, out = run(skiffd, sb["id"], ["sh", "-c", script])
        assert s == 200 and out["exit_code"] == 0 and out["truncated"] is False, (n, out)
        assert out["stdout"] == "x" * n, n
        err = base64.b64decode(out["stderr_b64"]) if n else out["stderr"].encode()
        assert err == b"\xff" * n, n


def test_async_exec_and_its_status(skiffd):
    s, sb = create(skiffd)
    s, ex = skiffd.api("POST", f"/v1/sandboxes/{sb['id']}/exec",
                       {"command": ["sh", "-c", "sleep 0.5; exit 7"]})
    assert s == 201 and ex["state"] == "running" and ex["exit_code"] is None, ex
    assert "stdout" not in ex

    def ended():
        s, e = skiffd.api("GET", f"/v1/sandboxes/{sb['id']}/execs/{ex['id']}")
        return e if e["state"] != "running" else None
    e = wait_for(ended, 20, 0.1)
    assert e and e["state"] == "exited" and e["exit_code"] == 7
    s, body = skiffd.api("GET", f"/v1/sandboxes/{sb['id']}/execs/ex-00000000000000000000000000")
    assert s == 404


def test_main_command_wait_and_exit_code(skiffd):
    s, sb = create(skiffd, {"command": ["sh", "-c", "sleep 0.3; exit 5"]})
    assert s == 201, sb
    s, w = skiffd.api("POST", f"/v1/sandboxes/{sb['id']}/wait?timeout_s=30")
    assert s == 200 and w["state"] == "exited" and w["exit_code"] == 5 and w["ended_at"]


def test_wait_times_out_with_the_sandbox_running(skiffd):
    s, sb = create(skiffd)
    t0 = time.monotonic()
    s, w = skiffd.api("POST", f"/v1/sandboxes/{sb['id']}/wait?timeout_s=0.5")
    assert s == 200 and w["state"] == "running" and time.monotonic() - t0 >= 0.4
    for bad in ["-1", "abc", "99999"]:
        s, body = skiffd.api("POST", f"/v1/sandboxes/{sb['id']}/wait?timeout_s={bad}")
        assert s == 400, bad


def test_signal_and_timeout_end_states(skiffd):
    s, sb = create(skiffd, {"command": ["sh", "-c", "kill -9 $$"]})
    s, w = skiffd.api("POST", f"/v1/sandboxes/{sb['id']}/wait?timeout_s=30")
    assert w["state"] == "exited" and w["exit_code"] == 137, w
    s, sb = create(skiffd, {"timeout_s": 1})
    s, w = skiffd.api("POST", f"/v1/sandboxes/{sb['id']}/wait?timeout_s=30")
    assert w["state"] == "timeout" and w["exit_code"] == 124, w


def test_list_filters_and_pages(skiffd):
    tag = f"run{time.monotonic_ns()}"
    ids = []
    for i in range(3):
        s, sb = create(skiffd, {"tags": {"batch": tag, "i": str(i)}, "name": f"{tag}-{i}"})
        assert s == 201
        ids.append(sb["id"])
    s, body = skiffd.api("GET", f"/v1/sandboxes?tag=batch:{tag}")
    assert [x["id"] for x in body["items"]] == ids  # creation order
    s, body = skiffd.api("GET", f"/v1/sandboxes?tag=batch:{tag}&tag=i:1")
    assert [x["id"] for x in body["items"]] == [ids[1]]
    s, body = skiffd.api("GET", f"/v1/sandboxes?name={tag}-2")
    assert [x["id"] for x in body["items"]] == [ids[2]]
    got, cursor = [], ""
    while True:
        s, body = skiffd.api("GET", f"/v1/sandboxes?tag=batch:{tag}&limit=2{cursor}")
        assert s == 200 and len(body["items"]) <= 2
        got += [x["id"] for x in body["items"]]
        if not body["next_cursor"]:
            break
        cursor = "&cursor=" + body["next_cursor"]
    assert got == ids
    skiffd.api("DELETE", f"/v1/sandboxes/{ids[0]}")
    s, body = skiffd.api("GET", f"/v1/sandboxes?tag=batch:{tag}&state=running")
    assert [x["id"] for x in body["items"]] == ids[1:]
    s, body = skiffd.api("GET", f"/v1/sandboxes?tag=batch:{tag}&state=terminated")
    assert [x["id"] for x in body["items"]] == ids[:1]
    for bad in ["limit=0", "limit=abc", "limit=100000", "tag=nocolon"]:
        s, body = skiffd.api("GET", f"/v1/sandboxes?{bad}")
        assert s == 400 and err_code(body) == "invalid_argument", bad


def test_names_unique_among_live_sandboxes(skiffd):
    name = f"n{time.monotonic_ns()}"
    s, a = create(skiffd, {"name": name})
    assert s == 201
    s, body = create(skiffd, {"name": name})
    assert s == 409 and err_code(body) == "conflict"
    skiffd.api("DELETE", f"/v1/sandboxes/{a['id']}")
    s, b = create(skiffd, {"name": name})
    assert s == 201 and b["id"] != a["id"]


def test_patch_tags_and_timeout(skiffd):
    s, sb = create(skiffd, {"timeout_s": 2, "tags": {"a": "1"}})
    s, p = skiffd.api("PATCH", f"/v1/sandboxes/{sb['id']}", {"tags": {"b": "2"},
                                                             "timeout_s": 600})
    assert s == 200 and p["tags"] == {"b": "2"} and p["timeout_s"] == 600, p
    # The old deadline has passed and the sandbox still runs.
    time.sleep(2.5)
    s, g = skiffd.api("GET", f"/v1/sandboxes/{sb['id']}")
    assert g["state"] == "running", g
    for bad in [{"timeout_s": 1}, {"timeout_s": -1}, {"image": "x"}, {"tags": "x"}]:
        s, body = skiffd.api("PATCH", f"/v1/sandboxes/{sb['id']}", bad)
        assert s == 400 and err_code(body) == "invalid_argument", bad


def test_idempotent_create(skiffd):
    key = f"k{time.monotonic_ns()}"
    h = {"Idempotency-Key": key}
    s1, a = create(skiffd, {"tags": {"x": "1"}}, headers=h)
    s2, b = create(skiffd, {"tags": {"x": "1"}}, headers=h)
    assert s1 == 201 and s2 == 201 and a["id"] == b["id"]
    s, body = skiffd.api("GET", "/v1/sandboxes?tag=x:1&limit=1000")
    assert [x["id"] for x in body["items"]].count(a["id"]) == 1
    s, body = create(skiffd, {"tags": {"x": "2"}}, headers=h)
    assert s == 409 and err_code(body) == "conflict"
    # another workspace's same key is another key
    ws = new_workspace(skiffd)
    t = new_token(skiffd, "developer", ws["id"])["secret"]
    s, c = create(skiffd, {"tags": {"x": "1"}}, token=t, headers=h)
    assert s == 201 and c["id"] != a["id"]


# ---- bad input ----


def test_bad_create_bodies_change_nothing(skiffd):
    s, before = skiffd.api("GET", "/v1/sandboxes?limit=1000")
    cases = [
        b"{", b"[]", b"null", b'"x"', b'{"cpu": "lots"}', b'{"memory_mib": -1}',
        b'{"command": "ls"}', b'{"command": [1]}', b'{"nope": 1}', b'{"rootfs": "/"}',
        b'{"image": "ubuntu"}', b'{"timeout_s": 1e9}', b'{"tags": {"a": 1}}',
        b'{"env": {"A": 1}}', b'{"cpu": 1, "cpu": 2}', b'{"network": "everything"}',
        b"[" * 100 + b"]" * 100, b'{"a":' * 40 + b"1" + b"}" * 40,
    ]
    for body in cases:
        s, r = skiffd.api("POST", "/v1/sandboxes", body)
        assert s == 400 and err_code(r) == "invalid_argument", (body[:40], s, r)
    s, after = skiffd.api("GET", "/v1/sandboxes?limit=1000")
    assert [x["id"] for x in after["items"]] == [x["id"] for x in before["items"]]


def test_bad_exec_bodies(skiffd):
    s, sb = create(skiffd)
    for body in [{}, {"command": []}, {"command": "ls"}, {"command": ["ls", 1]},
                 {"command": ["ls"], "env": {"A=B": "c"}}, {"command": ["ls"], "workdir": "rel"},
                 {"command": ["ls"], "pty": "yes"}, {"command": ["ls"], "timeout_s": -1},
                 {"command": ["ls"], "other": 1}]:
        s, r = skiffd.api("POST", f"/v1/sandboxes/{sb['id']}/exec?wait=true", body)
        assert s == 400 and err_code(r) == "invalid_argument", body
    s, r = skiffd.api("POST", "/v1/sandboxes/sb-00000000000000000000000000/exec",
                      {"command": ["ls"]})
    assert s == 404


def test_oversize_body_and_headers(skiffd):
    s, _, raw = skiffd.raw("POST", "/v1/sandboxes", b"{" + b" " * (300 * 1024) + b"}",
                           {"Authorization": f"Bearer {skiffd.token}",
                            "Content-Type": "application/json"})
    assert s == 413 and err_code(json.loads(raw)) == "payload_too_large"
    s, _, raw = skiffd.raw("GET", "/v1/sandboxes", None,
                           {"Authorization": f"Bearer {skiffd.token}", "X-Big": "a" * 20000})
    assert s == 431
    s, body = skiffd.api("GET", "/healthz", token=None)
    assert s == 200


def test_slow_and_broken_clients_do_not_stop_others(skiffd):
    # A client that sends half a request and stalls, one that sends garbage, one that declares
    # a huge chunked body: the others are served meanwhile.
    stall = socket.create_connection(("127.0.0.1", skiffd.port))
    stall.sendall(b"POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    junk = socket.create_connection(("127.0.0.1", skiffd.port))
    junk.sendall(b"\x00\x01\x02 NOT HTTP\r\n\r\n")
    chunked = socket.create_connection(("127.0.0.1", skiffd.port))
    chunked.sendall(b"POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                    + skiffd.token.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + b"fffffff\r\n" + b"a" * 1000)
    try:
        for _ in range(5):
            assert skiffd.api("GET", "/v1/whoami")[0] == 200
        junk.settimeout(5)
        assert junk.recv(100).startswith(b"HTTP/1.1 400")
        chunked.settimeout(5)
        assert chunked.recv(100).startswith(b"HTTP/1.1 413")
    finally:
        stall.close()
        junk.close()
        chunked.close()


def test_keep_alive_and_chunked_request(skiffd):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", skiffd.port, timeout=30)
    h = {"Authorization": f"Bearer {skiffd.token}", "Content-Type": "application/json"}
    try:
        c.request("POST", "/v1/sandboxes", body=iter([b'{"tags":', b' {"via": "chunks"}}']),
                  headers=h, encode_chunked=True)
        r = c.getresponse()
        sb = json.loads(r.read())
        assert r.status == 201 and sb["tags"] == {"via": "chunks"}
        for _ in range(3):  # the same connection goes on serving
            c.request("GET", f"/v1/sandboxes/{sb['id']}", headers=h)
            r = c.getresponse()
            assert r.status == 200 and json.loads(r.read())["id"] == sb["id"]
    finally:
        c.close()


# ---- many at once ----


def test_200_sandboxes_at_once(skiffd):
    n = 200
    tag = f"many{time.monotonic_ns()}"

    def one(i):
        s, sb = create(skiffd, {"tags": {"many": tag}, "memory_mib": 32}, timeout=180)
        assert s == 201, sb
        s, out = run(skiffd, sb["id"], ["sh", "-c", f"echo {i} $((({i}) * 3))"])
        assert s == 200 and out["stdout"] == f"{i} {i * 3}\n", out
        return sb["id"]

    with ThreadPoolExecutor(32) as pool:
        ids = list(pool.map(one, range(n)))
    assert len(set(ids)) == n
    s, body = skiffd.api("GET", f"/v1/sandboxes?tag=many:{tag}&state=running&limit=1000")
    assert len(body["items"]) == n
    with ThreadPoolExecutor(16) as pool:
        finals = list(pool.map(lambda i: skiffd.api("DELETE", f"/v1/sandboxes/{i}",
                                                    timeout=120), ids))
    assert all(s == 200 and b["state"] == "terminated" for s, b in finals)


# ---- restart ----


def test_restart_leaves_sandboxes_running(skiffd):
    s, sb = create(skiffd, {"name": "survivor"})
    assert s == 201
    s, out = run(skiffd, sb["id"], ["sh", "-c", "echo before > /tmp/mark"])
    assert out["exit_code"] == 0
    pids = sandbox_pids(skiffd.instance)
    assert skiffd.stop() == 0
    assert "stopped" in skiffd.log_text()
    # The sandbox's processes outlive the daemon.
    alive = [p for p, _ in pids if proc_alive(p)]
    assert alive, "the sandboxes died with skiffd"
    skiffd.start(pool=skiffd.pool)
    s, got = skiffd.api("GET", f"/v1/sandboxes/{sb['id']}")
    assert s == 200 and got["state"] == "running", got
    s, out = run(skiffd, sb["id"], ["cat", "/tmp/mark"])
    assert s == 200 and out["stdout"] == "before\n", out
    s, fin = skiffd.api("DELETE", f"/v1/sandboxes/{sb['id']}")
    assert s == 200 and fin["state"] == "terminated"


# ---- races and clients that go away ----


def test_delete_while_creating(skiffd):
    """A DELETE that lands while the create is still on its way ends the sandbox: it never
    runs on after the DELETE returned."""
    tag = f"race{time.monotonic_ns()}"
    for _ in range(5):
        result = {}
        t = threading.Thread(target=lambda: result.update(
            c=create(skiffd, {"tags": {"race": tag}})))
        t.start()
        seen = wait_for(lambda: skiffd.api("GET", f"/v1/sandboxes?tag=race:{tag}"
                                           "&state=pending")[1]["items"]
                        or skiffd.api("GET", f"/v1/sandboxes?tag=race:{tag}"
                                      "&state=running")[1]["items"], 30, 0.001)
        assert seen
        for sb in seen:
            s, fin = skiffd.api("DELETE", f"/v1/sandboxes/{sb['id']}")
            assert s == 200 and fin["state"] == "terminated", fin
        t.join(60)
        s, c = result["c"]
        assert s == 201 or err_code(c), c
        s, body = skiffd.api("GET", f"/v1/sandboxes?tag=race:{tag}&state=running")
        assert body["items"] == []
        tag += "x"


def test_same_idempotency_key_at_once(skiffd):
    key = f"same{time.monotonic_ns()}"
    body = {"tags": {"idem": key}}
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: create(skiffd, body,
                                                 headers={"Idempotency-Key": key}), range(8)))
    ok = [sb for s, sb in results if s == 201]
    assert ok and {sb["id"] for sb in ok} == {ok[0]["id"]}
    assert all(s in (201, 409) for s, _ in results), results
    s, lst = skiffd.api("GET", f"/v1/sandboxes?tag=idem:{key}")
    assert len(lst["items"]) == 1


def test_clients_that_leave_while_waiting(skiffd):
    s, sb = create(skiffd)
    for path, body in [(f"/v1/sandboxes/{sb['id']}/wait?timeout_s=30", b""),
                       (f"/v1/sandboxes/{sb['id']}/exec?wait=true",
                        b'{"command":["sleep","2"]}')]:
        for _ in range(20):
            c = socket.create_connection(("127.0.0.1", skiffd.port))
            c.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                      f"{skiffd.token}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            c.close()
    time.sleep(0.5)
    s, out = run(skiffd, sb["id"], ["echo", "still"])
    assert s == 200 and out["stdout"] == "still\n"
    s, fin = skiffd.api("DELETE", f"/v1/sandboxes/{sb['id']}")
    assert s == 200 and fin["state"] == "terminated"


def test_stop_with_writes_in_flight(skiffd):
    """SIGTERM while creates and token writes are in flight: skiffd stops cleanly (exit 0;
    the ASan build catches any use after free), and comes back with what it acknowledged."""
    stop = threading.Event()
    acked = []

    def writer():
        while not stop.is_set():
            try:
                s, t = skiffd.api("POST", "/v1/tokens", {"name": "w", "role": "viewer"},
                                  timeout=10)
            except OSError:
                return
            if s == 201:
                acked.append(t["id"])
    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    rc = skiffd.stop()
    stop.set()
    for t in threads:
        t.join(30)
    assert rc == 0, skiffd.log_text()[-3000:]
    assert acked
    skiffd.start(pool=skiffd.pool)
    have = {t["id"] for t in list_all(skiffd, "/v1/tokens")}
    assert set(acked) <= have  # every acknowledged write survived


# ---- output of execs and of the main command ----


def test_exec_output_and_logs_by_offset(skiffd):
    s, sb = create(skiffd, {"command": ["sh", "-c", "echo main-out; echo main-err >&2"]})
    assert s == 201
    skiffd.api("POST", f"/v1/sandboxes/{sb['id']}/wait?timeout_s=30")
    h = {"Authorization": f"Bearer {skiffd.token}"}
    s, hdr, raw = skiffd.raw("GET", f"/v1/sandboxes/{sb['id']}/logs", None, h)
    assert s == 200 and raw == b"main-out\n", (s, raw)
    assert hdr["X-Skiff-Offset"] == "0" and hdr["X-Skiff-Size"] == "9"
    assert hdr["X-Skiff-Eof"] == "true"
    s, hdr, raw = skiffd.raw("GET", f"/v1/sandboxes/{sb['id']}/logs?stream=stderr", None, h)
    assert s == 200 and raw == b"main-err\n"

    s, sb = create(skiffd)
    s, ex = skiffd.api("POST", f"/v1/sandboxes/{sb['id']}/exec",
                       {"command": ["sh", "-c", "printf 'abcdef'; printf 'E' >&2"]})
    assert s == 201
    assert wait_for(lambda: skiffd.api("GET", f"/v1/sandboxes/{sb['id']}/execs/{ex['id']}")[1]
                    ["state"] == "exited", 20, 0.05)
    base = f"/v1/sandboxes/{sb['id']}/execs/{ex['id']}/output"
    s, hdr, raw = skiffd.raw("GET", f"{base}?max=3", None, h)
    assert s == 200 and raw == b"abc" and hdr["X-Skiff-Size"] == "6"
    s, hdr, raw = skiffd.raw("GET", f"{base}?offset=3", None, h)
    assert s == 200 and raw == b"def" and hdr["X-Skiff-Offset"] == "3"
    s, hdr, raw = skiffd.raw("GET", f"{base}?offset=6", None, h)
    assert s == 200 and raw == b"" and hdr["X-Skiff-Eof"] == "true"
    s, hdr, raw = skiffd.raw("GET", f"{base}?stream=stderr", None, h)
    assert s == 200 and raw == b"E"
    for bad in ["stream=stdin", "offset=-1", "offset=x", "follow=yes"]:
        s, _, raw = skiffd.raw("GET", f"{base}?{bad}", None, h)
        assert s == 400, (bad, raw)
    s, _, _ = skiffd.raw("GET", f"/v1/sandboxes/{sb['id']}/execs/ex-00000000000000000000000000"
                                "/output", None, h)
    assert s == 404
    skiffd.api("DELETE", f"/v1/sandboxes/{sb['id']}")
    s, _, raw = skiffd.raw("GET", f"{base}", None, h)
    assert s == 409  # deleted: its output went with it


def test_sandboxes_do_not_see_the_daemons_command_line(skiffd):
    """Sandboxes descend from the spawner, a fork of skiffd: /proc/1/cmdline inside must not
    show skiffd's options (paths on the host, its port, its instance)."""
    s, sb = create(skiffd)
    s, out = run(skiffd, sb["id"], ["sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline"])
    assert s == 200, out
    assert "--data" not in out["stdout"] and str(skiffd.data) not in out["stdout"], out
