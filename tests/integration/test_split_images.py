"""Images when the worker's data directory is not the server's (`skiffd server` and `skiffd
worker` with --data dirs of their own): the worker fetches what its store lacks of an image from
the server (GET /internal/v1/blobs, worker secret only), a blob missing or corrupted on the
server fails the create with a message naming it and leaves no tree, a build step's layer is
pushed back to the server, and unused trees are dropped when the store's filesystem runs short."""

import base64
import hashlib
import os
import socket
import time

import pytest

from conftest import state_dirs, wait_for
from test_images import make_tar
from test_split import running_split


@pytest.fixture
def split(tmp_path):
    with running_split(tmp_path) as s:
        yield s


def sha(data):
    return hashlib.sha256(data).hexdigest()


def blob_path(data_dir, hexdigest):
    return data_dir / "images" / "blobs" / "sha256" / hexdigest[:2] / hexdigest[2:]


def build(s, steps, name=None, timeout=120):
    spec = {"base": "busybox", "steps": steps}
    if name:
        spec["name"] = name
    st, img = s.api("POST", "/v1/images", spec)
    assert st == 202, img
    deadline = time.monotonic() + timeout
    while img["state"] == "building":
        assert time.monotonic() < deadline, img
        time.sleep(0.05)
        st, img = s.api("GET", f"/v1/images/{img['id']}")
        assert st == 200, img
    return img


def image_with(s, files):
    """An image of busybox with files {path under /data: bytes}, built on the server alone."""
    tar = make_tar(files)
    st, body = s.raw("PUT", f"/v1/blobs/sha256:{sha(tar)}", tar)
    assert st in (200, 201), body
    img = build(s, [{"copy": {"blob": f"sha256:{sha(tar)}", "dest": "/data"}}])
    assert img["state"] == "ready", img
    return img


def trees(data_dir):
    d = data_dir / "images" / "trees"
    return sorted(n for n in os.listdir(d) if not n.endswith((".used", ".holds"))) \
        if d.is_dir() else []


def run_in(s, sb, cmd):
    st, out = s.api("POST", f"/v1/sandboxes/{sb}/exec?wait=true", {"command": cmd})
    assert st == 200, out
    return out


def test_worker_fetches_an_image_it_lacks(split):
    big = os.urandom(300 * 1024)
    img = image_with(split, {"hello": b"hello from the server\n", "big": big})
    manifest = img["manifest"].removeprefix("sha256:")
    wk = split.tmp / "wk"
    assert not blob_path(wk, manifest).exists()
    st, sb = split.api("POST", "/v1/sandboxes", {"image": img["id"]})
    assert st == 201 and sb["state"] == "running", (sb, split.log("worker"))
    out = run_in(split, sb["id"], ["cat", "/data/hello"])
    assert out["stdout"] == "hello from the server\n", out
    out = run_in(split, sb["id"], ["sha256sum", "/data/big"])
    assert out["stdout"].split()[0] == sha(big), out
    # In the worker's own store now: manifest, files and the tree.
    assert blob_path(wk, manifest).is_file()
    assert blob_path(wk, sha(big)).read_bytes() == big
    assert trees(wk) == [manifest]
    # A second sandbox on it fetches nothing more and starts on the same tree.
    st, sb2 = split.api("POST", "/v1/sandboxes", {"image": img["id"]})
    assert st == 201, sb2
    assert run_in(split, sb2["id"], ["cat", "/data/hello"])["stdout"] == "hello from the server\n"


def test_worker_secret_out_of_a_sandbox_reach(split):
    # The spawner holds the secret (for fetches and pushes) and sandboxes descend from it.
    img = image_with(split, {"f": b"fetched\n"})  # the spawner has used the secret
    st, sb = split.api("POST", "/v1/sandboxes", {"image": img["id"]})
    assert st == 201, sb
    out = run_in(split, sb["id"], ["sh", "-c",
                                   "for f in /proc/1/cmdline /proc/1/environ /proc/self/environ "
                                   "/proc/1/maps; do cat $f; echo; done; "
                                   "dd if=/proc/1/mem bs=1 count=1 skip=4096; exit 0"])
    # Bytes that are not UTF-8 (NULs between arguments) come as base64.
    text = "".join(out[k] if k in out else base64.b64decode(out.get(k + "_b64", "")).decode(
        "utf-8", "replace") for k in ("stdout", "stderr"))
    assert split.worker_token not in text, text
    # Init's memory stays closed (a fork of the spawner until it execs skiff-init; not dumpable).
    assert "/proc/1/mem': Permission denied" in text, text
    for name in ("worker", "server"):
        assert split.worker_token not in split.log(name)


def test_internal_blobs_take_the_worker_secret_only(split):
    data = b"a blob only the server has\n"
    st, _ = split.raw("PUT", f"/v1/blobs/sha256:{sha(data)}", data)
    assert st == 201
    path = f"/internal/v1/blobs/sha256:{sha(data)}"
    assert split.raw("GET", path)[0] == 401  # the admin token
    assert split.raw("GET", path, token=None)[0] == 401
    assert split.raw("GET", path, token=split.worker_token) == (200, data)
    assert split.raw("GET", f"/internal/v1/blobs/sha256:{'0' * 64}",
                     token=split.worker_token)[0] == 404
    assert split.raw("PUT", path, data)[0] == 401
    # A worker's upload is checked against its name like anyone's.
    other = b"pushed by a worker\n"
    st, body = split.raw("PUT", f"/internal/v1/blobs/sha256:{sha(data)}", other,
                         token=split.worker_token)
    assert st == 400, body
    st, body = split.raw("PUT", f"/internal/v1/blobs/sha256:{sha(other)}", other,
                         token=split.worker_token)
    assert st == 201, body
    # It belongs to no workspace: the API's route does not show it.
    assert split.raw("GET", f"/v1/blobs/sha256:{sha(other)}")[0] == 200  # admin sees all
    assert split.raw("GET", f"/v1/blobs/sha256:{sha(other)}", token=split.worker_token)[0] == 401


def stalled_push(s, data):
    """A worker's PUT of data's blob, its headers sent and taken (100 Continue), its body not:
    an upload under way until the socket is closed."""
    host, port = s.url.removeprefix("http://").rsplit(":", 1)
    c = socket.create_connection((host, int(port)), timeout=10)
    c.sendall((f"PUT /internal/v1/blobs/sha256:{sha(data)} HTTP/1.1\r\nHost: {host}\r\n"
               f"Authorization: Bearer {s.worker_token}\r\nContent-Length: {len(data)}\r\n"
               "Expect: 100-continue\r\n\r\n").encode())
    assert c.recv(64).startswith(b"HTTP/1.1 100 "), "no 100 Continue"
    return c


def test_worker_pushes_have_a_share_of_their_own(split):
    # As many pushes under way as one workspace may have uploads: a worker's next push still
    # goes through (counted as a workspace's, the 17th at once was refused: a failed build).
    socks = [stalled_push(split, f"stalled {i}\n".encode()) for i in range(16)]
    try:
        data = b"pushed while others are under way\n"
        st, body = split.raw("PUT", f"/internal/v1/blobs/sha256:{sha(data)}", data,
                             token=split.worker_token)
        assert st == 201, body
        # A client's upload is not held back by the workers' pushes either.
        mine = b"a client's upload\n"
        st, body = split.raw("PUT", f"/v1/blobs/sha256:{sha(mine)}", mine)
        assert st == 201, body
    finally:
        for c in socks:
            c.close()


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_blob_bad_on_the_server_fails_the_create_clearly(split, damage):
    payload = os.urandom(50000)
    img = image_with(split, {"a_ok": b"fine\n", "bad": payload})
    manifest = img["manifest"].removeprefix("sha256:")
    on_server = blob_path(split.tmp / "srv", sha(payload))
    if damage == "missing":
        on_server.unlink()
    else:
        on_server.chmod(0o644)
        on_server.write_bytes(os.urandom(50000))
    st, body = split.api("POST", "/v1/sandboxes", {"image": img["id"]})
    # The server's store is at fault, not the caller.
    assert st == 500 and body["error"]["code"] == "internal", body
    msg = body["error"]["message"]
    assert f"image sha256:{manifest}" in msg and "/data/bad" in msg, msg
    assert sha(payload) in msg
    assert ("404" in msg) if damage == "missing" else ("not what their name says" in msg), msg
    wk = split.tmp / "wk"
    assert trees(wk) == [], trees(wk)  # no tree, not even half of one
    assert not blob_path(wk, sha(payload)).exists()
    assert os.listdir(wk / "images" / "tmp") == []
    # The files that were fine stay fetched; the image works once the server has the blob.
    assert blob_path(wk, sha(b"fine\n")).is_file()
    on_server.write_bytes(payload)
    st, sb = split.api("POST", "/v1/sandboxes", {"image": img["id"]})
    assert st == 201, sb
    assert run_in(split, sb["id"], ["sha256sum", "/data/bad"])["stdout"].split()[0] == \
        sha(payload)


def test_a_build_step_run_on_the_worker_is_pushed_to_the_server(split):
    img = build(split, [{"run": "echo made on the worker > /made"}])
    assert img["state"] == "ready", (img, split.log("worker"))
    # The build sandbox is removed after the step: gone before the worker stops (the pool's
    # one stays), else its end races the fixture's leak checks.
    assert wait_for(lambda: len(state_dirs(split.instance)) <= 1, 20, 0.1), \
        state_dirs(split.instance)
    layer = img["layers"][0]["layer"].removeprefix("sha256:")
    assert blob_path(split.tmp / "srv", layer).is_file()
    st, sb = split.api("POST", "/v1/sandboxes", {"image": img["id"]})
    assert st == 201, sb
    assert run_in(split, sb["id"], ["cat", "/made"])["stdout"] == "made on the worker\n"


def blob_puts(s):
    """PUTs of blobs by the worker that stored something, from the server's /metrics."""
    st, raw = s.raw("GET", "/metrics")
    assert st == 200
    line = 'skiff_http_requests_total{route="PUT /internal/v1/blobs/{}",status="201"} '
    return sum(int(l[len(line):]) for l in raw.decode().splitlines() if l.startswith(line))


def test_snapshot_on_the_worker_is_pushed_to_the_server(split):
    image_with(split, {"x": b"x\n"})  # the server has the busybox base's blobs from now on
    st, sb = split.api("POST", "/v1/sandboxes", {})
    assert st == 201
    # One file the server has already (uploaded): asked for (HEAD), not sent again.
    known = b"the server has these bytes\n"
    assert split.raw("PUT", f"/v1/blobs/sha256:{sha(known)}", known)[0] == 201
    run_in(split, sb["id"], ["sh", "-c", "echo snap > /snapped; printf 'the server has "
                             "these bytes\\n' > /known"])
    srv_blobs = {p.parent.name + p.name for p in
                 (split.tmp / "srv" / "images" / "blobs" / "sha256").glob("*/*")}
    puts = blob_puts(split)
    st, snap = split.api("POST", f"/v1/sandboxes/{sb['id']}/snapshot", {})
    assert st == 201, (snap, split.log("worker"))
    st, img = split.api("GET", f"/v1/images/{snap['id']}")
    assert st == 200 and img["state"] == "ready", img
    # Exactly what the server lacked was pushed: /snapped's bytes and the layer's manifest (the
    # server made one more blob itself: the image's manifest); /known's bytes were not sent.
    new = {p.parent.name + p.name for p in
           (split.tmp / "srv" / "images" / "blobs" / "sha256").glob("*/*")} - srv_blobs
    assert sha(b"snap\n") in new and img["manifest"].removeprefix("sha256:") in new
    assert sha(known) in srv_blobs
    assert blob_puts(split) - puts == len(new) - 1, (new, blob_puts(split) - puts)
    st, sb2 = split.api("POST", "/v1/sandboxes", {"image": snap["id"]})
    assert st == 201, sb2
    assert run_in(split, sb2["id"], ["cat", "/snapped", "/known"])["stdout"] == \
        "snap\n" + known.decode()


def two_images(s):
    """Two small images, each with its manifest's digest."""
    imgs = [image_with(s, {name: f"image {name}\n".encode()}) for name in "ab"]
    return [(i, i["manifest"].removeprefix("sha256:")) for i in imgs]


def test_unused_trees_are_dropped_when_space_runs_short(tmp_path):
    # Keeping all of the filesystem free can never be met: every unused tree goes.
    with running_split(tmp_path, worker_args=["--image-min-free", "100%"]) as s:
        (a, da), (b, db) = two_images(s)
        wk = s.tmp / "wk"
        st, sa = s.api("POST", "/v1/sandboxes", {"image": a["id"]})
        assert st == 201, sa
        assert trees(wk) == [da]
        # Held by a sandbox: kept while another tree is made.
        st, sb = s.api("POST", "/v1/sandboxes", {"image": b["id"]})
        assert st == 201, sb
        assert trees(wk) == sorted([da, db])
        for x in (sa, sb):
            assert s.api("DELETE", f"/v1/sandboxes/{x['id']}")[0] == 200
        # Unheld now: making a's tree again (a new image) drops both.
        c = image_with(s, {"c": b"image c\n"})
        dc = c["manifest"].removeprefix("sha256:")
        st, sc = s.api("POST", "/v1/sandboxes", {"image": c["id"]})
        assert st == 201, sc
        assert trees(wk) == [dc]
        log = s.log("worker")
        assert f"dropped the unused tree of sha256:{da}" in log, log
        assert f"dropped the unused tree of sha256:{db}" in log, log
        assert run_in(s, sc["id"], ["cat", "/data/c"])["stdout"] == "image c\n"


def test_blobs_no_tree_uses_are_dropped_when_space_runs_short(tmp_path):
    # Without this the worker's store only grows: every image it ran, every layer it captured.
    with running_split(tmp_path, worker_args=["--image-min-free", "100%"]) as s:
        (a, da), (b, db) = two_images(s)
        wk = s.tmp / "wk"
        for img in (a, b):
            st, sb = s.api("POST", "/v1/sandboxes", {"image": img["id"]})
            assert st == 201, sb
            assert s.api("DELETE", f"/v1/sandboxes/{sb['id']}")[0] == 200
        # All of them past the grace a fetch or push under way is given, but b's file.
        old = time.time() - 2 * 3600
        for p in (wk / "images" / "blobs" / "sha256").glob("*/*"):
            os.utime(p, (old, old))
        os.utime(blob_path(wk, sha(b"image b\n")))
        c = image_with(s, {"c": b"image c\n"})
        dc = c["manifest"].removeprefix("sha256:")
        st, sc = s.api("POST", "/v1/sandboxes", {"image": c["id"]})
        assert st == 201, sc
        assert trees(wk) == [dc]
        # a's and b's trees went, then the blobs no tree left uses: a's manifest and file,
        # b's manifest; b's file is young (spared); c's, and the base's files c uses, stay.
        assert not blob_path(wk, da).exists() and not blob_path(wk, db).exists()
        assert not blob_path(wk, sha(b"image a\n")).exists()
        assert blob_path(wk, sha(b"image b\n")).is_file()
        assert blob_path(wk, dc).is_file() and blob_path(wk, sha(b"image c\n")).is_file()
        assert "blobs no tree uses dropped" in s.log("worker"), s.log("worker")
        assert run_in(s, sc["id"], ["cat", "/data/c"])["stdout"] == "image c\n"
        # An image whose blobs went is fetched again.
        st, sa = s.api("POST", "/v1/sandboxes", {"image": a["id"]})
        assert st == 201, sa
        assert run_in(s, sa["id"], ["cat", "/data/a"])["stdout"] == "image a\n"


def test_trees_stay_when_space_is_plenty(tmp_path):
    with running_split(tmp_path, worker_args=["--image-min-free", "0%"]) as s:
        (a, da), (b, db) = two_images(s)
        st, sa = s.api("POST", "/v1/sandboxes", {"image": a["id"]})
        assert st == 201 and s.api("DELETE", f"/v1/sandboxes/{sa['id']}")[0] == 200
        st, sb = s.api("POST", "/v1/sandboxes", {"image": b["id"]})
        assert st == 201, sb
        assert trees(s.tmp / "wk") == sorted([da, db])
        assert "dropped the unused tree" not in s.log("worker")


def test_builds_waiting_for_a_step_that_then_fail_at_once(split):
    """Builds that wait for another's step go on, one after the other, when it is done; one whose
    next step fails at once (here: no worker to run it) ends there and then. Going on with the
    next waiter must not start from the build that just ended and was freed."""
    tar = make_tar({"big": os.urandom(48 * 1024 * 1024)})  # a copy step that takes a moment
    st, body = split.raw("PUT", f"/v1/blobs/sha256:{sha(tar)}", tar)
    assert st in (200, 201), body
    assert build(split, [{"env": {"A": "1"}}])["state"] == "ready"  # busybox made, once
    assert split.stop(split.worker) == 0
    assert wait_for(lambda: not split.connected(), 30, 0.05)
    copy = {"copy": {"blob": f"sha256:{sha(tar)}", "dest": "/data"}}
    ids = []
    for steps in ([copy], [copy, {"run": "true"}], [copy, {"run": "true"}]):
        st, img = split.api("POST", "/v1/images", {"base": "busybox", "steps": steps})
        assert st == 202, img
        ids.append(img["id"])
    imgs = []
    for i in ids:
        assert wait_for(lambda: split.api("GET", f"/v1/images/{i}")[1]["state"] != "building",
                        120, 0.05), split.log("server")
        imgs.append(split.api("GET", f"/v1/images/{i}")[1])
    assert split.server.poll() is None, split.log("server")
    assert imgs[0]["state"] == "ready", imgs[0]
    for img in imgs[1:]:
        assert img["state"] == "failed" and "no worker is connected" in img["error"], img
        log = split.raw("GET", f"/v1/images/{img['id']}/logs")[1]
        assert b"waiting for " + ids[0].encode() in log, log  # the case this test is about


def test_first_builds_at_once_all_get_busybox(split):
    """On a server that has not made the busybox base yet, builds started together make it on
    threads of one process at once: none may undo another's work in progress."""
    ids = []
    for i in range(4):
        st, img = split.api("POST", "/v1/images", {"base": "busybox",
                                                   "steps": [{"env": {"N": str(i)}}]})
        assert st == 202, img
        ids.append(img["id"])
    for i in ids:
        assert wait_for(lambda: split.api("GET", f"/v1/images/{i}")[1]["state"] != "building",
                        120, 0.05)
        img = split.api("GET", f"/v1/images/{i}")[1]
        assert img["state"] == "ready", img


def test_a_server_alone_keeps_its_blobs_on_its_data_directory(split):
    # skiffd server makes no trees: its store is <data>/images, a directory, and it mounts no
    # disk; the worker's store is where its own start placed it (on its disk where it has one).
    srv, wk = split.tmp / "srv", split.tmp / "wk"
    img = image_with(split, {"hello": b"hello\n"})
    manifest = img["manifest"].removeprefix("sha256:")
    assert (srv / "images").is_dir() and not (srv / "images").is_symlink()
    assert blob_path(srv, manifest).is_file()
    assert os.stat(blob_path(srv, manifest)).st_dev == os.stat(srv).st_dev
    assert not (srv / "disk.img").exists() and not os.path.ismount(srv / "disk")
    st, sb = split.api("POST", "/v1/sandboxes", {"image": img["id"]})
    assert st == 201, (sb, split.log("worker"))
    if os.path.ismount(wk / "disk"):
        assert (wk / "images").is_symlink(), split.log("worker")
        assert os.stat(blob_path(wk, manifest)).st_dev == os.stat(wk / "disk").st_dev
