"""The file and fs routes and `skiff sandbox cp`: binary-safe reads and writes inside a running
sandbox, listing and changes, and paths or symlinks that try to leave the sandbox's root."""

import os
import subprocess
import time
import urllib.parse

import pytest

from conftest import SKIFF, sh

MIB = 1024 * 1024


def q(path):
    return urllib.parse.quote(path, safe="")


def put(d, sbid, path, data, token="", **params):
    extra = "".join(f"&{k}={v}" for k, v in params.items())
    h = {"Content-Type": "application/octet-stream"}
    if token != None:  # noqa: E711
        h["Authorization"] = f"Bearer {token or d.token}"
    s, _, raw = d.raw("PUT", f"/v1/sandboxes/{sbid}/files?path={q(path)}{extra}", data, h)
    return s, raw


def get(d, sbid, path, token=""):
    h = {"Authorization": f"Bearer {token or d.token}"}
    s, _, raw = d.raw("GET", f"/v1/sandboxes/{sbid}/files?path={q(path)}", None, h)
    return s, raw


@pytest.fixture
def sb(skiffd):
    s, sb = skiffd.api("POST", "/v1/sandboxes", {})
    assert s == 201
    return sb["id"]


def test_binary_round_trip(skiffd, sb):
    data = bytes(range(256)) * 4096 + b"\x00end"  # 1 MiB + 4: more than one chunk
    s, raw = put(skiffd, sb, "/tmp/bin.dat", data)
    assert s == 200, raw
    s, back = get(skiffd, sb, "/tmp/bin.dat")
    assert s == 200 and back == data
    out = sh(skiffd, sb, "wc -c < /tmp/bin.dat; stat -c '%u:%g %a' /tmp/bin.dat")
    assert out["stdout"].split() == [str(len(data)), "0:0", "644"], out
    # overwriting replaces, it does not append
    assert put(skiffd, sb, "/tmp/bin.dat", b"short")[0] == 200
    assert get(skiffd, sb, "/tmp/bin.dat") == (200, b"short")
    assert put(skiffd, sb, "/tmp/empty", b"")[0] == 200
    assert get(skiffd, sb, "/tmp/empty") == (200, b"")


def test_what_the_sandbox_writes_the_api_reads(skiffd, sb):
    sh(skiffd, sb, "printf 'from inside\\n' > /root.txt")
    assert get(skiffd, sb, "/root.txt") == (200, b"from inside\n")


def test_parents_mode_list_stat_mkdir_move_remove(skiffd, sb):
    s, raw = put(skiffd, sb, "/srv/app/b/run.sh", b"#!/bin/sh\necho ran\n", mode="755",
                 parents="true")
    assert s == 200, raw
    assert sh(skiffd, sb, "/srv/app/b/run.sh")["stdout"] == "ran\n"
    s, st = skiffd.api("GET", f"/v1/sandboxes/{sb}/fs/stat?path={q('/srv/app/b/run.sh')}")
    assert s == 200, st
    assert st["type"] == "file" and st["size"] == 19 and st["mode"] & 0o777 == 0o755
    assert st["name"] == "run.sh" and st["path"] == "/srv/app/b/run.sh" and st["mtime"]
    sh(skiffd, sb, "ln -s b /srv/app/link")
    s, st = skiffd.api("GET", f"/v1/sandboxes/{sb}/fs/stat?path={q('/srv/app/link')}")
    assert st["type"] == "symlink" and st["link_target"] == "b"
    s, ls = skiffd.api("GET", f"/v1/sandboxes/{sb}/fs/list?path={q('/srv')}&depth=3")
    assert s == 200, ls
    paths = {e["path"]: e["type"] for e in ls["entries"]}
    assert paths == {"/srv/app": "dir", "/srv/app/b": "dir", "/srv/app/b/run.sh": "file",
                     "/srv/app/link": "symlink"}, paths
    s, ls = skiffd.api("GET", f"/v1/sandboxes/{sb}/fs/list?path={q('/srv')}")
    assert [e["path"] for e in ls["entries"]] == ["/srv/app"]

    assert skiffd.api("POST", f"/v1/sandboxes/{sb}/fs/mkdir", {"path": "/x/y"})[0] == 404
    assert skiffd.api("POST", f"/v1/sandboxes/{sb}/fs/mkdir",
                      {"path": "/x/y", "parents": True})[0] == 200
    s, body = skiffd.api("POST", f"/v1/sandboxes/{sb}/fs/move",
                         {"from": "/srv/app/b/run.sh", "to": "/x/y/moved.sh"})
    assert s == 200, body
    assert get(skiffd, sb, "/x/y/moved.sh")[1] == b"#!/bin/sh\necho ran\n"
    assert get(skiffd, sb, "/srv/app/b/run.sh")[0] == 404
    s, body = skiffd.api("POST", f"/v1/sandboxes/{sb}/fs/remove", {"path": "/x"})
    assert s == 409, body  # not empty
    assert skiffd.api("POST", f"/v1/sandboxes/{sb}/fs/remove",
                      {"path": "/x", "recursive": True})[0] == 200
    assert sh(skiffd, sb, "test -e /x; echo $?")["stdout"] == "1\n"


def test_paths_never_leave_the_root(skiffd, sb, tmp_path):
    marker = tmp_path / "host-secret"
    marker.write_bytes(b"host only")
    host_hostname = open("/etc/hostname", "rb").read() if os.path.exists("/etc/hostname") else b""
    inside = sh(skiffd, sb, "cat /etc/hostname 2>/dev/null; echo")["stdout"].encode()
    # .. stops at the sandbox's root
    s, raw = get(skiffd, sb, "/../../../../etc/hostname")
    assert s in (200, 404)
    if s == 200:
        assert raw == inside[:-1] and (raw != host_hostname or not host_hostname)
    # symlinks, absolute and relative, resolve inside the sandbox
    sh(skiffd, sb, f"ln -s {marker} /tmp/abs; ln -s ../../../../../..{marker} /tmp/rel; "
                   f"ln -s /proc/1/root{marker} /tmp/proc; ln -s /proc/self/root /tmp/self")
    for link in ("/tmp/abs", "/tmp/rel", "/tmp/proc", f"/tmp/self{marker}"):
        s, raw = get(skiffd, sb, link)
        assert s in (400, 404), (link, s, raw)
        assert b"host only" not in raw
    # writing through a symlinked directory lands inside
    sh(skiffd, sb, "ln -s / /tmp/out")
    name = f"skiff-escape-{os.getpid()}-{time.monotonic_ns()}"
    s, raw = put(skiffd, sb, f"/tmp/out/{name}", b"inside")
    assert s == 200, raw
    assert not os.path.exists(f"/{name}")
    assert sh(skiffd, sb, f"cat /{name}")["stdout"] == "inside"
    s, raw = put(skiffd, sb, f"/tmp/self{tmp_path}/written", b"x")
    assert s in (400, 404) and not (tmp_path / "written").exists()
    s, body = skiffd.api("POST", f"/v1/sandboxes/{sb}/fs/move",
                         {"from": f"/{name}", "to": f"/tmp/self{tmp_path}/moved"})
    assert s in (400, 404) and not (tmp_path / "moved").exists()


def test_bad_requests(skiffd, sb):
    for path in ["", "relative", "/a\x00b"]:
        s, raw = get(skiffd, sb, path)
        assert s == 400, (path[:20], s, raw)
    s, raw = get(skiffd, sb, "/" + "a" * 5000)
    assert s == 414  # the request line itself is too long (its path is over 4,096 bytes)
    assert get(skiffd, sb, "/tmp")[0] == 400  # a directory is not a file
    s, raw = put(skiffd, sb, "/tmp/big", b"x" * (8 * MIB + 1))
    assert s == 413, raw
    s, raw = put(skiffd, sb, "/tmp/f", b"x", mode="4755")
    assert s == 400
    s, raw = put(skiffd, sb, "/tmp/f", b"x", mode="abc")
    assert s == 400
    for body in [{}, {"path": "rel"}, {"path": "/a", "parents": "yes"}, {"path": "/a", "x": 1}]:
        assert skiffd.api("POST", f"/v1/sandboxes/{sb}/fs/mkdir", body)[0] == 400, body
    assert skiffd.api("POST", f"/v1/sandboxes/{sb}/fs/move", {"from": "/a"})[0] == 400
    s, raw = get(skiffd, "sb-00000000000000000000000000", "/etc/hostname")
    assert s == 404


def test_roles_workspaces_and_ended_sandboxes(skiffd, sb):
    s, ws = skiffd.api("POST", "/v1/workspaces", {"name": f"f{time.monotonic_ns()}"})
    s, other = skiffd.api("POST", "/v1/tokens", {"name": "o", "role": "developer",
                                                 "workspace": ws["id"]})
    s, viewer = skiffd.api("POST", "/v1/tokens", {"name": "v", "role": "viewer"})
    assert put(skiffd, sb, "/tmp/f", b"x")[0] == 200
    assert get(skiffd, sb, "/tmp/f", token=other["secret"])[0] == 404
    assert put(skiffd, sb, "/tmp/f", b"y", token=other["secret"])[0] == 404
    assert get(skiffd, sb, "/tmp/f", token=viewer["secret"]) == (200, b"x")
    assert put(skiffd, sb, "/tmp/f", b"y", token=viewer["secret"])[0] == 403
    assert put(skiffd, sb, "/tmp/f", b"y", token=None)[0] == 401
    skiffd.api("DELETE", f"/v1/sandboxes/{sb}")
    assert get(skiffd, sb, "/tmp/f")[0] == 409


def test_cli_cp_both_ways(skiffd, sb, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKIFF_")}
    env.update(SKIFF_URL=skiffd.url, SKIFF_TOKEN=skiffd.token, XDG_CONFIG_HOME=str(tmp_path))
    src = tmp_path / "in.bin"
    src.write_bytes(bytes(range(256)) * 100)
    os.chmod(src, 0o750)
    r = subprocess.run([str(SKIFF), "sandbox", "cp", str(src), f"{sb}:/data/"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert sh(skiffd, sb, "stat -c '%s %a' /data/in.bin")["stdout"].split() == ["25600", "750"]
    r = subprocess.run([str(SKIFF), "sandbox", "cp", f"{sb}:/data/in.bin", str(tmp_path)],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "in.bin").read_bytes() == src.read_bytes()
    r = subprocess.run([str(SKIFF), "sandbox", "cp", f"{sb}:/data/in.bin", "-"], env=env,
                       capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout == src.read_bytes()
    r = subprocess.run([str(SKIFF), "sandbox", "cp", "-", f"{sb}:/data/stdin.txt"], env=env,
                       input=b"piped", capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert get(skiffd, sb, "/data/stdin.txt") == (200, b"piped")
    r = subprocess.run([str(SKIFF), "sandbox", "cp", f"{sb}:/nope", str(tmp_path / "x")],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "skiff:" in r.stderr and not (tmp_path / "x").exists()
    r = subprocess.run([str(SKIFF), "sandbox", "cp", "a", "b"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
