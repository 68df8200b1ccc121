"""Images in the control plane: blobs (/v1/blobs), builds (/v1/images) with their cache,
sandboxes started on images, snapshots, and gc never taking what an image uses."""

import glob
import hashlib
import http.client
import io
import json
import os
import tarfile
import time

import pytest

from conftest import _after_test, _own_skiffd, make_tar, sh, wait_for

MAX_BLOB = 1024 * 1024  # lowered so that "too large" is reached at once


@pytest.fixture(scope="module")
def _images_skiffd(tmp_path_factory):
    yield from _own_skiffd(tmp_path_factory, {"SKIFF_MAX_BLOB_BYTES": str(MAX_BLOB)})


@pytest.fixture
def d(_images_skiffd):
    yield from _after_test(_images_skiffd)


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def put_blob(d, data, name=None, token="", chunked=False):
    h = {"Authorization": f"Bearer {d.token if token == '' else token}"}
    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
    try:
        if chunked:
            c.putrequest("PUT", f"/v1/blobs/{name or digest(data)}")
            for k, v in h.items():
                c.putheader(k, v)
            c.putheader("Transfer-Encoding", "chunked")
            c.endheaders()
            for i in range(0, len(data), 1000):
                part = data[i:i + 1000]
                c.send(b"%x\r\n%s\r\n" % (len(part), part))
            c.send(b"0\r\n\r\n")
        else:
            c.request("PUT", f"/v1/blobs/{name or digest(data)}", body=data, headers=h)
        r = c.getresponse()
        raw = r.read()
        return r.status, json.loads(raw) if raw else None
    finally:
        c.close()


def blob_files(d):
    """Every blob file in the data directory's store."""
    top = d.data / "images" / "blobs" / "sha256"
    return {p.parent.name + p.name for p in top.glob("*/*")} if top.is_dir() else set()


def test_blob_put_head_get(d):
    data = os.urandom(300 * 1024)
    s, body = put_blob(d, data)
    assert s == 201, body
    assert body["digest"] == digest(data) and body["size"] == len(data)
    assert digest(data)[7:] in blob_files(d)
    # Idempotent: the same bytes again are 200, nothing new.
    before = blob_files(d)
    s, body = put_blob(d, data)
    assert s == 200, body
    assert blob_files(d) == before
    s, h, raw = d.raw("HEAD", f"/v1/blobs/{digest(data)}",
                      headers={"Authorization": f"Bearer {d.token}"})
    assert s == 200 and int(h["Content-Length"]) == len(data) and raw == b""
    s, h, raw = d.raw("GET", f"/v1/blobs/{digest(data)}",
                      headers={"Authorization": f"Bearer {d.token}"})
    assert s == 200 and raw == data
    missing = digest(b"never uploaded")
    s, _, _ = d.raw("HEAD", f"/v1/blobs/{missing}",
                    headers={"Authorization": f"Bearer {d.token}"})
    assert s == 404
    s, body = d.api("GET", f"/v1/blobs/{missing}")
    assert s == 404 and body["error"]["code"] == "not_found"


def test_blob_chunked_and_empty(d):
    data = os.urandom(5000)
    s, body = put_blob(d, data, chunked=True)
    assert s in (200, 201) and body["digest"] == digest(data), body
    s, body = put_blob(d, b"")
    assert s in (200, 201) and body["size"] == 0, body


def test_blob_wrong_digest_stores_nothing(d):
    data = os.urandom(4096)
    before = blob_files(d)
    wrong = digest(b"something else")
    s, body = put_blob(d, data, name=wrong)
    assert s == 400 and body["error"]["code"] == "invalid_argument", body
    assert wrong[7:] in body["error"]["message"]
    s, body = put_blob(d, data, name=wrong, chunked=True)
    assert s == 400, body
    assert blob_files(d) == before
    assert not any((d.data / "images" / "tmp").iterdir())
    for bad in ("sha256:XYZ", "md5:" + "0" * 32, "sha256:" + "A" * 64, "abc"):
        s, body = put_blob(d, data, name=bad)
        assert s == 400, (bad, body)


def test_blob_too_large(d):
    data = b"x" * (MAX_BLOB + 1)
    before = blob_files(d)
    s, body = put_blob(d, data)
    assert s == 413 and body["error"]["code"] == "payload_too_large", body
    s, body = put_blob(d, data, chunked=True)
    assert s == 413, body
    assert blob_files(d) == before
    s, body = put_blob(d, b"y" * MAX_BLOB)  # the limit itself is fine
    assert s == 201, body


def test_blob_roles(d):
    s, tok = d.api("POST", "/v1/tokens", {"name": "viewer-blobs", "workspace": "default",
                                         "role": "viewer"})
    assert s == 201, tok
    data = os.urandom(100)
    s, body = put_blob(d, data, token=tok["secret"])
    assert s == 403, body
    s, body = put_blob(d, data)
    assert s == 201
    s, _, raw = d.raw("GET", f"/v1/blobs/{digest(data)}",
                      headers={"Authorization": f"Bearer {tok['secret']}"})
    assert s == 200 and raw == data
    s, body = put_blob(d, data, token=None)
    assert s == 401


def developer_of(d, workspace):
    """A developer token's secret in workspace (made if need be)."""
    s, body = d.api("POST", "/v1/workspaces", {"name": workspace})
    assert s in (201, 409), body
    s, tok = d.api("POST", "/v1/tokens", {"name": f"{workspace}-dev-{os.urandom(3).hex()}",
                                         "workspace": workspace, "role": "developer"})
    assert s == 201, tok
    return tok["secret"]


def _put_head(d, name, length, extra=""):
    return (f"PUT /v1/blobs/{name} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {d.token}\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n").encode()


def _tmp_files(d):
    """Files open under the store's tmp/ (uploads write O_TMPFILEs there), by any process. An
    fd's link names the store's real path (<data>/images may be a symlink to the disk's)."""
    tmp = os.path.realpath(d.data / "images" / "tmp") + "/"
    found = []
    for fd in glob.glob("/proc/[0-9]*/fd/*"):
        try:
            if os.readlink(fd).startswith(tmp):
                found.append(fd)
        except OSError:
            pass
    tmpdir = d.data / "images" / "tmp"
    return found + (list(tmpdir.iterdir()) if tmpdir.is_dir() else [])


def test_blob_expect_100_continue(d):
    import socket
    data = os.urandom(200000)
    c = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    try:
        c.sendall(_put_head(d, digest(data), len(data), "Expect: 100-continue\r\n"))
        got = b""
        while b"\r\n\r\n" not in got:
            got += c.recv(100)
        assert got.startswith(b"HTTP/1.1 100 Continue\r\n"), got
        c.sendall(data)
        reply = b""
        while (part := c.recv(4096)):
            reply += part
        assert reply.split(b"\r\n")[0].split(b" ")[1] in (b"200", b"201"), reply
    finally:
        c.close()
    assert digest(data)[7:] in blob_files(d)


def test_blob_uploads_at_once_are_limited_and_a_dropped_one_leaves_nothing(d):
    """A workspace holds at most 16 streamed uploads at once (each trickling one holds a
    socket and a tmp file); one whose client goes away mid-body stores nothing."""
    import socket
    socks = []
    try:
        for i in range(16):
            c = socket.create_connection(("127.0.0.1", d.port), timeout=10)
            socks.append(c)
            c.sendall(_put_head(d, digest(b"%d" % i), 100000) + b"x" * 10)
        deadline = time.monotonic() + 10
        while len(_tmp_files(d)) < 16:
            assert time.monotonic() < deadline, _tmp_files(d)
            time.sleep(0.05)
        s, body = put_blob(d, b"one more")
        assert s == 429 and body["error"]["code"] == "resource_exhausted", body
        assert "16" in body["error"]["message"], body
        # Another workspace is not held up by this one.
        s, body = put_blob(d, b"theirs", token=developer_of(d, "imgs-uploads"))
        assert s in (200, 201), body
    finally:
        for c in socks:
            c.close()
    deadline = time.monotonic() + 10
    while _tmp_files(d):
        assert time.monotonic() < deadline, f"left behind: {_tmp_files(d)}"
        time.sleep(0.05)
    s, body = put_blob(d, b"one more")  # the slots are free again
    assert s in (200, 201), body


def test_blob_concurrent_puts_of_one_digest(d):
    """Uploads of the same bytes at once all succeed and store one file, none left in tmp."""
    import threading
    data = os.urandom(400 * 1024)
    got = []

    def put():
        try:
            got.append(put_blob(d, data))
        except Exception as e:  # noqa: BLE001 - reported below
            got.append((repr(e), None))

    threads = [threading.Thread(target=put) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = [s for s, _ in got]
    assert 201 in statuses and all(s in (200, 201) for s in statuses), got
    assert all(b["digest"] == digest(data) for _, b in got), got
    assert digest(data)[7:] in blob_files(d)
    s, _, raw = d.raw("GET", f"/v1/blobs/{digest(data)}",
                      headers={"Authorization": f"Bearer {d.token}"})
    assert s == 200 and raw == data
    deadline = time.monotonic() + 10
    while _tmp_files(d):
        assert time.monotonic() < deadline, _tmp_files(d)
        time.sleep(0.05)


def test_blobs_are_readable_only_by_workspaces_that_uploaded_them(d):
    """Stored once, but a digest alone does not open another workspace's bytes: GET and HEAD
    answer 404, a build naming it is refused, and PUT does not say it was there (201)."""
    other = developer_of(d, "imgs-blobs")
    secret = make_tar({"secret.txt": os.urandom(64).hex().encode()})
    name = digest(secret)
    s, body = put_blob(d, secret)
    assert s == 201, body
    files_before = blob_files(d)
    for method in ("GET", "HEAD"):
        s, _, raw = d.raw(method, f"/v1/blobs/{name}",
                          headers={"Authorization": f"Bearer {other}"})
        assert s == 404 and secret not in raw, (method, s)
    for spec, field in (
            ({"base": "busybox", "steps": [{"copy": {"blob": name, "dest": "/x"}}]},
             "steps[0].copy.blob"),
            ({"base": "oci-archive:" + name}, "base")):
        s, body = d.api("POST", "/v1/images", spec, token=other)
        assert s == 400 and field in body["error"]["message"], body
        assert "not stored" in body["error"]["message"], body
    # Uploading the same bytes says nothing of who had them, and stores nothing new.
    s, body = put_blob(d, secret, token=other)
    assert s == 201, body
    assert blob_files(d) == files_before
    s, body = put_blob(d, secret, token=other)
    assert s == 200, body
    s, _, raw = d.raw("GET", f"/v1/blobs/{name}", headers={"Authorization": f"Bearer {other}"})
    assert s == 200 and raw == secret
    # Its images' manifests are readable to a workspace; another's are not.
    img = wait_built(d, build(d, {"base": "busybox", "steps": [
        {"copy": {"blob": name, "dest": "/x"}}]})["id"])
    assert img["state"] == "ready", img
    s, _, _ = d.raw("HEAD", f"/v1/blobs/{img['manifest']}",
                    headers={"Authorization": f"Bearer {d.token}"})
    assert s == 200
    s, _, _ = d.raw("HEAD", f"/v1/blobs/{img['manifest']}",
                    headers={"Authorization": f"Bearer {other}"})
    assert s == 404
    # Who uploaded what outlives a restart.
    assert d.stop() == 0
    d.start(pool=d.pool, env={"SKIFF_MAX_BLOB_BYTES": str(MAX_BLOB)})
    s, _, raw = d.raw("GET", f"/v1/blobs/{name}", headers={"Authorization": f"Bearer {other}"})
    assert s == 200 and raw == secret
    s, body = d.api("DELETE", f"/v1/images/{img['id']}")
    assert s == 200, body


# ---- builds ----


def upload(d, data):
    s, body = put_blob(d, data)
    assert s in (200, 201), body
    return body["digest"]


def build(d, spec, token="", expect=202):
    s, body = d.api("POST", "/v1/images", spec, token=token)
    assert s == expect, body
    return body


def in_sandbox(d, image, script):
    """script's stdout in a new sandbox on image (which must exit 0)."""
    s, sb = d.api("POST", "/v1/sandboxes", {"image": image})
    assert s == 201, sb
    out = sh(d, sb["id"], script)
    d.api("DELETE", f"/v1/sandboxes/{sb['id']}")
    assert out["exit_code"] == 0, out
    return out["stdout"]


def layer_paths(d, layer):
    """The paths of a layer manifest's entries, whiteouts included, from the data directory."""
    hexd = layer.removeprefix("sha256:")
    text = (d.data / "images" / "blobs" / "sha256" / hexd[:2] / hexd[2:]).read_text()
    return {e["path"] for e in json.loads(text)["entries"]}


def wait_built(d, image_id, timeout=120, token=""):
    deadline = time.monotonic() + timeout
    while True:
        s, body = d.api("GET", f"/v1/images/{image_id}", token=token)
        assert s == 200, body
        if body["state"] != "building":
            return body
        assert time.monotonic() < deadline, f"{image_id} still building: {body}"
        time.sleep(0.05)


def logs(d, image_id):
    s, _, raw = d.raw("GET", f"/v1/images/{image_id}/logs",
                      headers={"Authorization": f"Bearer {d.token}"})
    assert s == 200
    return raw.decode(errors="replace")


@pytest.fixture
def src_dir(tmp_path):
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc" / "hello").write_text("hello from dir\n")
    (root / "bin" / "data").write_bytes(os.urandom(20000))
    return root


def test_build_from_dir_with_steps(d, src_dir):
    tar = upload(d, make_tar({"app/main.txt": b"main\n", "app/lib/x.txt": b"x" * 1000}))
    img = build(d, {"base": f"dir:{src_dir}", "name": "from-dir", "steps": [
        {"env": {"GREETING": "hi", "PATH": "/usr/bin:/bin"}},
        {"workdir": "/srv/app"},
        {"copy": {"blob": tar, "dest": "/srv"}},
        {"entrypoint": ["/bin/sh", "-c"]},
    ]})
    assert img["state"] == "building" and img["id"].startswith("im-")
    got = wait_built(d, img["id"])
    assert got["state"] == "ready", (got, logs(d, img["id"]))
    assert got["name"] == "from-dir"
    assert got["config"] == {"env": {"GREETING": "hi", "PATH": "/usr/bin:/bin"},
                             "workdir": "/srv/app", "entrypoint": ["/bin/sh", "-c"]}
    assert got["size"] == 20000 + len("hello from dir\n") + 5 + 1000
    # / etc etc/hello bin bin/data srv srv/app srv/app/main.txt srv/app/lib srv/app/lib/x.txt
    assert got["files"] == 10
    assert [l["step"] for l in got["layers"]] == [0, 1, 2, 3]
    assert got["layers"][2]["layer"].startswith("sha256:")
    assert got["layers"][0]["layer"] is None
    # By name too, and in the list.
    s, byname = d.api("GET", "/v1/images/from-dir")
    assert s == 200 and byname["id"] == img["id"]
    s, lst = d.api("GET", "/v1/images")
    assert s == 200 and img["id"] in [i["id"] for i in lst["items"]]
    assert "ready" in logs(d, img["id"])


def test_rebuild_is_cached_and_stores_nothing_new(d, src_dir):
    tar = upload(d, make_tar({"a.txt": b"a" * 3000}))
    steps = [{"env": {"A": "1"}}, {"copy": {"blob": tar, "dest": "/opt"}},
             {"workdir": "/opt"}, {"env": {"B": "2"}}]
    first = wait_built(d, build(d, {"base": f"dir:{src_dir}", "steps": steps})["id"])
    assert first["state"] == "ready", first
    before = blob_files(d)
    again = wait_built(d, build(d, {"base": f"dir:{src_dir}", "steps": steps})["id"])
    assert again["state"] == "ready"
    assert [l["cached"] for l in again["layers"]] == [True] * 4
    assert again["manifest"] == first["manifest"]
    assert blob_files(d) == before
    # A change in step 3: steps 1-2 cached, 3 and after made again.
    changed = steps[:2] + [{"workdir": "/srv"}] + steps[3:]
    third = wait_built(d, build(d, {"base": f"dir:{src_dir}", "steps": changed})["id"])
    assert third["state"] == "ready"
    assert [l["cached"] for l in third["layers"]] == [True, True, False, False]
    assert third["config"]["workdir"] == "/srv"


def test_shared_files_stored_once(d, tmp_path):
    big = os.urandom(50000)
    a = upload(d, make_tar({"one/big.bin": big}))
    b = upload(d, make_tar({"two/big.bin": big, "two/other": b"other"}))
    assert hashlib.sha256(big).hexdigest() not in blob_files(d)
    root = tmp_path / "base"
    root.mkdir()
    i1 = wait_built(d, build(d, {"base": f"dir:{root}", "steps": [
        {"copy": {"blob": a, "dest": "/"}}]})["id"])
    i2 = wait_built(d, build(d, {"base": f"dir:{root}", "steps": [
        {"copy": {"blob": b, "dest": "/"}}]})["id"])
    assert i1["state"] == i2["state"] == "ready"
    files = blob_files(d)
    # The file's bytes are one blob, whichever image holds them.
    assert hashlib.sha256(big).hexdigest() in files
    top = d.data / "images" / "blobs" / "sha256"
    h = hashlib.sha256(big).hexdigest()
    assert len([p for p in top.glob(f"{h[:2]}/{h[2:]}*")]) == 1


def test_build_from_busybox(d):
    tar = upload(d, make_tar({"hello.txt": b"hello\n"}))
    got = wait_built(d, build(d, {"base": "busybox", "steps": [
        {"copy": {"blob": tar, "dest": "/data"}}, {"env": {"X": "y"}}]})["id"])
    assert got["state"] == "ready", (got, logs(d, got["id"]))
    assert got["files"] > 10 and got["size"] > 100000  # busybox itself


def test_bad_specs(d, src_dir):
    tar = upload(d, make_tar({"f": b"f"}))
    missing = digest(b"not stored")
    cases = [
        ({}, "base"),
        ({"base": 3}, "base"),
        ({"base": "ubuntu"}, "base"),
        ({"base": "im-doesnotexist"}, "base"),
        ({"base": "oci-archive:" + missing}, "base"),
        ({"base": "dir:relative"}, "base"),
        ({"base": "dir:/nonexistent-skiff-dir"}, "base"),
        ({"base": "busybox", "extra": 1}, "extra"),
        ({"base": "busybox", "name": "Bad Name"}, "name"),
        ({"base": "busybox", "name": "x" * 129}, "name"),
        ({"base": "busybox", "name": "im-x"}, "name"),
        ({"base": "busybox", "steps": {}}, "steps"),
        ({"base": "busybox", "steps": [{}] * 257}, "steps"),
        ({"base": "busybox", "steps": [{"apt": []}]}, "steps[0].apt"),
        ({"base": "busybox", "steps": [{"apt": ["Bad"]}]}, "steps[0].apt"),
        ({"base": "busybox", "steps": [{"apt": ["a;rm"]}]}, "steps[0].apt"),
        ({"base": "busybox", "steps": [{"apt": ["p"] * 513}]}, "steps[0].apt"),
        ({"base": "busybox", "steps": [{"run": ""}]}, "steps[0].run"),
        ({"base": "busybox", "steps": [{"run": "x" * (64 * 1024 + 1)}]}, "steps[0].run"),
        ({"base": "busybox", "steps": [{"copy": {"blob": missing, "dest": "/a"}}]},
         "steps[0].copy.blob"),
        ({"base": "busybox", "steps": [{"copy": {"blob": tar, "dest": "a/b"}}]},
         "steps[0].copy.dest"),
        ({"base": "busybox", "steps": [{"copy": {"blob": tar, "dest": "/a/../b"}}]},
         "steps[0].copy.dest"),
        ({"base": "busybox", "steps": [{"env": {"1BAD": "x"}}]}, "steps[0].env"),
        ({"base": "busybox", "steps": [{"env": {"K": 1}}]}, "steps[0].env"),
        ({"base": "busybox", "steps": [{"workdir": "rel"}]}, "steps[0].workdir"),
        ({"base": "busybox", "steps": [{"entrypoint": ["a"] * 257}]}, "steps[0].entrypoint"),
        ({"base": "busybox", "steps": [{"env": {}, "run": "x"}]}, "steps[0]"),
        ({"base": "busybox", "steps": [{"nope": 1}]}, "steps[0]"),
        ({"base": "busybox", "steps": [{"env": {}}, {"workdir": "/"}, {"run": 5}]},
         "steps[2].run"),
    ]
    s, before = d.api("GET", "/v1/images?limit=1000")
    for spec, field in cases:
        s, body = d.api("POST", "/v1/images", spec)
        assert s == 400, (spec if len(json.dumps(spec)) < 300 else field, body)
        assert body["error"]["code"] == "invalid_argument"
        assert field in body["error"]["message"], (field, body)
    s, after = d.api("GET", "/v1/images?limit=1000")
    assert len(after["items"]) == len(before["items"])
    s, body = d.api("POST", "/v1/images", "x" * (1024 * 1024 + 1))
    assert s == 413


def test_dir_base_is_admin_only_and_names_unique(d, src_dir):
    s, tok = d.api("POST", "/v1/tokens", {"name": "dev-images", "workspace": "default",
                                         "role": "developer"})
    assert s == 201
    s, body = d.api("POST", "/v1/images", {"base": f"dir:{src_dir}"}, token=tok["secret"])
    assert s == 403, body
    s, vt = d.api("POST", "/v1/tokens", {"name": "viewer-images", "workspace": "default",
                                        "role": "viewer"})
    s, body = d.api("POST", "/v1/images", {"base": "busybox"}, token=vt["secret"])
    assert s == 403
    s, body = d.api("GET", "/v1/images", token=vt["secret"])
    assert s == 200
    img = wait_built(d, build(d, {"base": f"dir:{src_dir}", "name": "uniq"})["id"])
    s, body = d.api("POST", "/v1/images", {"base": "busybox", "name": "uniq"})
    assert s == 409, body
    # Another workspace neither sees it nor collides with its name.
    s, ws = d.api("POST", "/v1/workspaces", {"name": "imgs-other"})
    assert s == 201, ws
    s, ot = d.api("POST", "/v1/tokens", {"name": "o", "workspace": "imgs-other",
                                        "role": "developer"})
    s, body = d.api("GET", f"/v1/images/{img['id']}", token=ot["secret"])
    assert s == 404
    s, body = d.api("POST", "/v1/images", {"base": "uniq"}, token=ot["secret"])
    assert s == 400
    # A base by name of a ready image of one's own workspace.
    child = wait_built(d, build(d, {"base": "uniq", "steps": [{"env": {"C": "1"}}]})["id"])
    assert child["state"] == "ready" and child["manifest"] == img["manifest"]
    # Deleted: its name is free again.
    s, body = d.api("DELETE", f"/v1/images/{img['id']}")
    assert s == 200, body
    s, body = d.api("GET", f"/v1/images/{img['id']}")
    assert s == 404
    img2 = wait_built(d, build(d, {"base": f"dir:{src_dir}", "name": "uniq"})["id"])
    assert img2["state"] == "ready"


# ---- sandboxes on images ----


@pytest.fixture
def app_image(d):
    tar = upload(d, make_tar({"hello.txt": b"hello image\n"}))
    got = wait_built(d, build(d, {"base": "busybox", "steps": [
        {"copy": {"blob": tar, "dest": "/app"}}, {"env": {"FROM_IMAGE": "yes", "KEEP": "img"}},
        {"workdir": "/app"}]})["id"])
    assert got["state"] == "ready", (got, logs(d, got["id"]))
    return got


def test_sandbox_on_image_sees_files_env_workdir(d, app_image):
    s, sb = d.api("POST", "/v1/sandboxes", {
        "image": app_image["id"], "env": {"KEEP": "mine"},
        "command": ["sh", "-c", "pwd > /tmp/pwd; echo $FROM_IMAGE $KEEP > /tmp/env; "
                                "sleep 600"]})
    assert s == 201, sb
    assert sb["image"] == app_image["id"]
    assert wait_for_file(d, sb["id"], "/tmp/env")
    out = sh(d, sb["id"], "cat /app/hello.txt /tmp/pwd /tmp/env")
    assert out["stdout"] == "hello image\n/app\nyes mine\n", out
    # Deleting the image is refused while the sandbox runs.
    s, body = d.api("DELETE", f"/v1/images/{app_image['id']}")
    assert s == 409 and sb["id"] in body["error"]["message"], body
    s, _ = d.api("DELETE", f"/v1/sandboxes/{sb['id']}")
    assert s == 200
    s, body = d.api("DELETE", f"/v1/images/{app_image['id']}")
    assert s == 200, body


def test_exec_starts_in_the_image_workdir(d, app_image):
    s, sb = d.api("POST", "/v1/sandboxes", {"image": app_image["id"]})
    assert s == 201, sb
    try:
        out = sh(d, sb["id"], "pwd; cat hello.txt")
        assert out["stdout"] == "/app\nhello image\n", out
        # Its own workdir still wins, and null means the default.
        s, out = d.api("POST", f"/v1/sandboxes/{sb['id']}/exec?wait=true",
                       {"command": ["pwd"], "workdir": "/tmp"})
        assert s == 200 and out["stdout"] == "/tmp\n", out
        s, out = d.api("POST", f"/v1/sandboxes/{sb['id']}/exec?wait=true",
                       {"command": ["pwd"], "workdir": None})
        assert s == 200 and out["stdout"] == "/app\n", out
    finally:
        d.api("DELETE", f"/v1/sandboxes/{sb['id']}")
    # A create's workdir is the sandbox's, for its execs too.
    s, sb = d.api("POST", "/v1/sandboxes", {"image": app_image["id"], "workdir": "/etc"})
    assert s == 201, sb
    try:
        assert sh(d, sb["id"], "pwd")["stdout"] == "/etc\n"
    finally:
        d.api("DELETE", f"/v1/sandboxes/{sb['id']}")


def wait_for_file(d, sbid, path, timeout=30):
    return wait_for(lambda: sh(d, sbid, f"test -s {path}")["exit_code"] == 0, timeout, 0.1)


def test_sandbox_image_errors(d, app_image):
    s, body = d.api("POST", "/v1/sandboxes", {"image": "im-nope"})
    assert s == 400 and "im-nope" in body["error"]["message"], body
    s, body = d.api("POST", "/v1/sandboxes", {"image": "no-such-name"})
    assert s == 400, body
    s, body = d.api("POST", "/v1/sandboxes", {"image": 5})
    assert s == 400, body
    for field, v in (("image_digest", "0" * 64), ("capture_layer", True)):
        s, body = d.api("POST", "/v1/sandboxes", {field: v})
        assert s == 400 and field in body["error"]["message"], body
    # By name works too, and the entrypoint goes before the command.
    named = wait_built(d, build(d, {"base": app_image["id"], "name": "with-ep", "steps": [
        {"entrypoint": ["sh", "-c"]}]})["id"])
    s, sb = d.api("POST", "/v1/sandboxes", {"image": "with-ep",
                                            "command": ["echo ep-ok > /tmp/ep; sleep 600"]})
    assert s == 201, sb
    assert wait_for_file(d, sb["id"], "/tmp/ep")
    d.api("DELETE", f"/v1/sandboxes/{sb['id']}")
    assert named["state"] == "ready"
    # No command: an idle sandbox to exec into, not the entrypoint run alone (sh -c with no
    # argument would fail at once and end the sandbox).
    s, idle = d.api("POST", "/v1/sandboxes", {"image": "with-ep"})
    assert s == 201, idle
    out = sh(d, idle["id"], "echo still-here")
    assert out["stdout"] == "still-here\n", out
    s, got = d.api("GET", f"/v1/sandboxes/{idle['id']}")
    assert got["state"] == "running", got
    d.api("DELETE", f"/v1/sandboxes/{idle['id']}")
    # An empty command runs the entrypoint alone.
    s, alone = d.api("POST", "/v1/sandboxes", {"image": "with-ep", "command": []})
    assert s == 201, alone
    s, w = d.api("POST", f"/v1/sandboxes/{alone['id']}/wait?timeout_s=20")
    assert s == 200 and w["exit_code"] == 2, w  # busybox sh: -c needs an argument
    d.api("DELETE", f"/v1/sandboxes/{alone['id']}")
    # A base name is not an image yet: the error says how to make one.
    s, body = d.api("POST", "/v1/sandboxes", {"image": "debian-slim"})
    assert s == 400 and "skiff image build --from" in body["error"]["message"], body


# ---- run steps (the worker captures a build sandbox's layer) ----


def test_run_steps_and_failure(d):
    got = wait_built(d, build(d, {"base": "busybox", "steps": [
        {"env": {"MSG": "made-by-run"}},
        {"run": "mkdir -p /out && echo $MSG > /out/file && echo step-output-visible"},
    ]})["id"])
    assert got["state"] == "ready", (got, logs(d, got["id"]))
    assert got["layers"][1]["layer"].startswith("sha256:")
    assert "step-output-visible" in logs(d, got["id"])
    s, sb = d.api("POST", "/v1/sandboxes", {"image": got["id"]})
    assert s == 201, sb
    out = sh(d, sb["id"], "cat /out/file")
    assert out["stdout"] == "made-by-run\n", out
    d.api("DELETE", f"/v1/sandboxes/{sb['id']}")

    bad = wait_built(d, build(d, {"base": "busybox", "steps": [
        {"env": {"A": "1"}}, {"run": "echo about-to-fail; exit 7"}]})["id"])
    assert bad["state"] == "failed", bad
    # Steps are counted from 1 in messages and the log (layers[].step is the 0-based index).
    assert bad["error"].startswith("step 2 ("), bad["error"]
    assert "exit 7" in bad["error"] and "exit code 7" in bad["error"], bad["error"]
    log = logs(d, bad["id"])
    assert "about-to-fail" in log
    assert "step 1: cached" in log or "step 1: done" in log, log
    assert "step 0" not in log, log
    assert [l["step"] for l in bad["layers"]] == [0], bad["layers"]
    # Build sandboxes do not outlive their step.
    s, lst = d.api("GET", "/v1/sandboxes?limit=1000")
    live = [x for x in lst["items"] if x["tags"].get("skiff.build")
            and x["state"] in ("pending", "running")]
    assert not live, live


def test_failed_build_error_is_valid_utf8(d):
    """A build's error holds bytes it was given (a step's text cut inside a character, a
    file name in Latin-1): the image is still readable, the bad bytes replaced."""
    # The message quotes the step's JSON cut at 200 bytes: an "\u00e9" there is cut in two.
    cmd = "exit 3 #" + "x" * (199 - len('{"run":"exit 3 #')) + "\u00e9" * 100
    assert len(('{"run":"' + cmd).encode()[:200].decode(errors="ignore")) < 200
    bad = wait_built(d, build(d, {"base": "busybox", "steps": [{"run": cmd}]})["id"])
    assert bad["state"] == "failed", bad
    assert bad["error"].startswith("step 1 (") and "exit code 3" in bad["error"], bad
    assert "\ufffd" not in bad["error"] and "x?" in bad["error"], bad["error"]
    s, lst = d.api("GET", "/v1/images?limit=1000")
    assert s == 200 and bad["id"] in [i["id"] for i in lst["items"]]
    # A tar member named in Latin-1 that the copy refuses: its name is in the error.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT,
                      encoding="latin-1") as t:
        info = tarfile.TarInfo("../caf\u00e9")
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
    tar = upload(d, buf.getvalue())
    bad = wait_built(d, build(d, {"base": "busybox", "steps": [
        {"copy": {"blob": tar, "dest": "/x"}}]})["id"])
    assert bad["state"] == "failed", bad
    # The importer spells the bad byte out (\xe9); a cut or other stray byte becomes "?".
    assert bad["error"].startswith("step 1 (") and "caf\\xe9" in bad["error"], bad["error"]


def test_builds_at_once_are_limited_per_workspace(d):
    """A workspace builds at most 8 images at once (each may run a build sandbox, which a
    create's limits do not count); deleting a build's sandbox fails its build."""
    t = developer_of(d, "imgs-builds")
    ids = []
    try:
        for i in range(8):
            s, img = d.api("POST", "/v1/images", {"base": "busybox", "steps": [
                {"run": f"sleep 600 # {i} {os.urandom(4).hex()}"}]}, token=t)
            assert s == 202, img
            ids.append(img["id"])
        s, body = d.api("POST", "/v1/images", {"base": "busybox"}, token=t)
        assert s == 429 and "at most 8" in body["error"]["message"], body
        # Another workspace is not held up by this one.
        other = wait_built(d, build(d, {"base": "busybox", "steps": [{"env": {"A": "1"}}]})["id"])
        assert other["state"] == "ready", other
    finally:
        deadline = time.monotonic() + 60
        while True:
            s, lst = d.api("GET", "/v1/sandboxes?limit=1000", token=t)
            live = [x["id"] for x in lst["items"] if x["tags"].get("skiff.build") in ids
                    and x["state"] in ("pending", "running")]
            for sb in live:
                d.api("DELETE", f"/v1/sandboxes/{sb}", token=t)
            states = [d.api("GET", f"/v1/images/{i}", token=t)[1]["state"] for i in ids]
            if all(st != "building" for st in states) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert states == ["failed"] * 8, states
    s, img = d.api("POST", "/v1/images", {"base": "busybox"}, token=t)
    assert s == 202, img  # room again
    deadline = time.monotonic() + 60
    while d.api("GET", f"/v1/images/{img['id']}", token=t)[1]["state"] == "building":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for i in ids + [img["id"]]:
        s, body = d.api("DELETE", f"/v1/images/{i}", token=t)
        assert s == 200, body


def test_concurrent_identical_builds_run_the_step_once(d):
    marker = os.urandom(8).hex()
    spec = {"base": "busybox", "steps": [{"run": f"echo {marker} > /m; sleep 1"}]}
    a = build(d, spec)["id"]
    b = build(d, spec)["id"]
    ga, gb = wait_built(d, a), wait_built(d, b)
    assert ga["state"] == gb["state"] == "ready", (ga, gb)
    assert ga["manifest"] == gb["manifest"]
    # One of them made the step; the other waited for it and took it from the cache.
    assert sorted([ga["layers"][0]["cached"], gb["layers"][0]["cached"]]) == [False, True]
    s, lst = d.api("GET", "/v1/sandboxes?limit=1000")
    made = [x for x in lst["items"] if x["tags"].get("skiff.build") in (a, b)]
    assert len(made) == 1, made


def test_build_cache_is_per_workspace(d):
    """Another workspace running the very same step makes it itself: a shared cache would
    tell it that the step (and any secret in its text) was run here, and hand it our output."""
    other = developer_of(d, "imgs-cache")
    spec = {"base": "busybox", "steps": [{"run": f"echo {os.urandom(8).hex()} > /m"}]}
    mine = wait_built(d, build(d, spec)["id"])
    assert mine["state"] == "ready" and mine["layers"][0]["cached"] is False, mine
    again = wait_built(d, build(d, spec)["id"])
    assert again["layers"][0]["cached"] is True, again  # the cache works within one
    s, theirs = d.api("POST", "/v1/images", spec, token=other)
    assert s == 202, theirs
    deadline = time.monotonic() + 120
    while theirs["state"] == "building":
        assert time.monotonic() < deadline, theirs
        time.sleep(0.05)
        s, theirs = d.api("GET", f"/v1/images/{theirs['id']}", token=other)
    assert theirs["state"] == "ready", theirs
    assert theirs["layers"][0]["cached"] is False, theirs
    s, _, raw = d.raw("GET", f"/v1/images/{theirs['id']}/logs",
                      headers={"Authorization": f"Bearer {other}"})
    assert s == 200 and mine["id"].encode() not in raw and b"waiting for" not in raw
    s, body = d.api("DELETE", f"/v1/images/{theirs['id']}", token=other)
    assert s == 200, body


def test_layers_leave_out_the_workers_resolv_conf(d):
    """A build sandbox has network egress, and the runtime writes the worker's resolvers into
    its /etc/resolv.conf: theirs, not the image's. A step that writes the file itself keeps it."""
    got = wait_built(d, build(d, {"base": "busybox", "steps": [
        {"run": "cat /etc/resolv.conf > /seen"},
        {"run": "echo 'nameserver 192.0.2.53' > /etc/resolv.conf"}]})["id"])
    assert got["state"] == "ready", got
    first, second = (layer_paths(d, l["layer"]) for l in got["layers"])
    assert "/seen" in first and "/etc/resolv.conf" not in first, first
    assert "/etc/resolv.conf" in second, second
    seen = in_sandbox(d, got["id"], "cat /seen; echo --; cat /etc/resolv.conf")
    written, _, kept = seen.partition("--\n")
    # The runtime wrote it for the step: the host's resolvers, or, on a host with none, a note.
    assert "nameserver" in written or "no DNS resolver is allowed" in written, seen
    assert kept == "nameserver 192.0.2.53\n", seen
    # Without the second step, the image has the base's resolv.conf (busybox: none).
    only = wait_built(d, build(d, {"base": "busybox", "steps": [
        {"run": "cat /etc/resolv.conf > /seen"}]})["id"])
    assert in_sandbox(d, only["id"], "test -e /etc/resolv.conf || echo none") == "none\n"


def test_snapshot_round_trip(d, app_image):
    s, sb = d.api("POST", "/v1/sandboxes", {"image": app_image["id"]})
    assert s == 201, sb
    sh(d, sb["id"], "echo changed > /app/new.txt && rm /app/hello.txt")
    s, body = d.api("POST", f"/v1/sandboxes/{sb['id']}/snapshot", {"name": "snap-1"})
    assert s == 201, body
    snap = body["id"]
    s, img = d.api("GET", f"/v1/images/{snap}")
    assert s == 200 and img["state"] == "ready" and img["name"] == "snap-1", img
    assert img["config"] == app_image["config"]
    s, body = d.api("POST", f"/v1/sandboxes/{sb['id']}/snapshot", {"name": "snap-1"})
    assert s == 409, body
    s, body = d.api("POST", f"/v1/sandboxes/{sb['id']}/snapshot", {"name": "Bad!"})
    assert s == 400, body
    d.api("DELETE", f"/v1/sandboxes/{sb['id']}")
    s, body = d.api("POST", f"/v1/sandboxes/{sb['id']}/snapshot", {})
    assert s == 409, body  # ended
    s, sb2 = d.api("POST", "/v1/sandboxes", {"image": "snap-1"})
    assert s == 201, sb2
    out = sh(d, sb2["id"], "cat /app/new.txt; ls /app; echo $FROM_IMAGE; pwd")
    # Its deletion kept, the image's env and workdir (an exec starts there) too.
    assert out["stdout"] == "changed\nnew.txt\nyes\n/app\n", out
    d.api("DELETE", f"/v1/sandboxes/{sb2['id']}")
    # A sandbox on busybox can be snapshotted too.
    s, sb3 = d.api("POST", "/v1/sandboxes", {})
    assert s == 201, sb3
    sh(d, sb3["id"], "echo bb > /tmp/bb")
    s, body = d.api("POST", f"/v1/sandboxes/{sb3['id']}/snapshot")
    assert s == 201, body
    d.api("DELETE", f"/v1/sandboxes/{sb3['id']}")
    s, sb4 = d.api("POST", "/v1/sandboxes", {"image": body["id"]})
    assert s == 201, sb4
    assert sh(d, sb4["id"], "cat /tmp/bb")["stdout"] == "bb\n"


def blob_path(d, hexd):
    return d.data / "images" / "blobs" / "sha256" / hexd[:2] / hexd[2:]


def age_all_blobs(d, seconds=7200):
    top = d.data / "images" / "blobs" / "sha256"
    old = time.time() - seconds
    for p in top.glob("*/*"):
        os.utime(p, (old, old), follow_symlinks=False)


def test_gc_never_removes_what_is_in_use(d, app_image):
    kept = os.urandom(30000)
    tar = upload(d, make_tar({"kept.bin": kept}))
    keep = wait_built(d, build(d, {"base": app_image["id"], "steps": [
        {"copy": {"blob": tar, "dest": "/k"}}]})["id"])
    assert keep["state"] == "ready"
    # A snapshot's manifest is in no build cache: once deleted, its own bytes are garbage.
    s, sb = d.api("POST", "/v1/sandboxes", {"image": app_image["id"]})
    assert s == 201
    gone = os.urandom(30000).hex()
    sh(d, sb["id"], f"echo {gone} > /app/gone.txt")
    s, snap = d.api("POST", f"/v1/sandboxes/{sb['id']}/snapshot")
    assert s == 201, snap
    d.api("DELETE", f"/v1/sandboxes/{sb['id']}")
    gone_hex = hashlib.sha256((gone + "\n").encode()).hexdigest()
    assert blob_path(d, gone_hex).exists()
    unreferenced = upload(d, os.urandom(2000))[7:]
    fresh = upload(d, os.urandom(2000))  # an upload for a build yet to come
    again_bytes = os.urandom(2000)
    again = upload(d, again_bytes)[7:]
    age_all_blobs(d)
    fresh_hex = fresh[7:]
    os.utime(blob_path(d, fresh_hex))  # it is new
    s, body = put_blob(d, again_bytes)  # uploaded again: as new as now
    assert s == 200, body
    before = blob_files(d)
    s, body = d.api("DELETE", f"/v1/images/{snap['id']}")
    assert s == 200, body
    deadline = time.monotonic() + 30
    # gc removes blobs one by one, in the directory's order: wait for both it must remove.
    while (blob_path(d, gone_hex).exists() or blob_path(d, unreferenced).exists()) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not blob_path(d, gone_hex).exists(), "gc did not run"
    assert not blob_path(d, unreferenced).exists()
    assert blob_path(d, fresh_hex).exists()
    assert blob_path(d, again).exists()
    assert blob_path(d, hashlib.sha256(kept).hexdigest()).exists()
    assert blob_path(d, keep["manifest"][7:]).exists()
    assert blob_path(d, app_image["manifest"][7:]).exists()
    removed = before - blob_files(d)
    assert gone_hex in removed
    # What the remaining images hold still starts and reads.
    s, sb = d.api("POST", "/v1/sandboxes", {"image": keep["id"]})
    assert s == 201, sb
    out = sh(d, sb["id"], "md5sum /k/kept.bin; cat /app/hello.txt")
    assert out["stdout"].startswith(hashlib.md5(kept).hexdigest()), out
    assert out["stdout"].endswith("hello image\n")


def test_logs_follow_until_the_build_ends(d):
    import threading
    img = build(d, {"base": "busybox", "steps": [
        {"run": "echo first-line; sleep 1"}, {"run": "echo second-line"}]})
    got = {}

    def follow():
        got["r"] = d.raw("GET", f"/v1/images/{img['id']}/logs?follow=true",
                         headers={"Authorization": f"Bearer {d.token}"}, timeout=120)

    t = threading.Thread(target=follow)
    t.start()
    t.join(120)
    assert not t.is_alive()
    s, _, raw = got["r"]
    text = raw.decode()
    assert s == 200 and "first-line" in text and "second-line" in text, text
    assert "ready" in text.splitlines()[-1], text
    s, body = d.api("GET", f"/v1/images/{img['id']}/logs?follow=maybe")
    assert s == 400


def test_restart_fails_builds_in_progress(d):
    img = build(d, {"base": "busybox", "steps": [{"run": "sleep 600"}]})
    deadline = time.monotonic() + 30
    while True:  # its build sandbox runs (and is stored)
        s, lst = d.api("GET", "/v1/sandboxes?limit=1000")
        if any(x["tags"].get("skiff.build") == img["id"] and x["state"] == "running"
               for x in lst["items"]):
            break
        assert time.monotonic() < deadline, logs(d, img["id"])
        time.sleep(0.05)
    s, body = d.api("DELETE", f"/v1/images/{img['id']}")
    assert s == 409 and "building" in body["error"]["message"], body
    assert d.stop() == 0
    d.start(pool=d.pool, env={"SKIFF_MAX_BLOB_BYTES": str(MAX_BLOB)})
    s, got = d.api("GET", f"/v1/images/{img['id']}")
    assert s == 200 and got["state"] == "failed" and "interrupted" in got["error"], got
    # Its build sandbox ended with it (the runtime's sandboxes outlive skiffd), rather than
    # running on and holding the image.
    s, lst = d.api("GET", "/v1/sandboxes?limit=1000")
    mine = [x for x in lst["items"] if x["tags"].get("skiff.build") == img["id"]]
    assert mine and all(x["state"] == "terminated" for x in mine), mine
    s, body = d.api("DELETE", f"/v1/images/{img['id']}")
    assert s == 200, body


# ---- other bases ----


def oci_archive(files, env, workdir, entrypoint, cmd):
    """An OCI image layout as a tar: one layer of files, a config with env, workdir,
    entrypoint and cmd."""
    layer = make_tar(files)
    dl = hashlib.sha256(layer).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Env": env, "WorkingDir": workdir,
                                    "Entrypoint": entrypoint, "Cmd": cmd},
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + dl]}}).encode()
    dc = hashlib.sha256(config).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + dc, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": "sha256:" + dl, "size": len(layer)}]}).encode()
    dm = hashlib.sha256(manifest).hexdigest()
    index = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json",
         "digest": "sha256:" + dm, "size": len(manifest)}]}).encode()
    return make_tar({"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index,
                     f"blobs/sha256/{dl}": layer, f"blobs/sha256/{dc}": config,
                     f"blobs/sha256/{dm}": manifest})


def test_oci_archive_base(d):
    arc = upload(d, oci_archive({"etc/from-oci": b"oci!\n"}, ["OCI=1", "PATH=/bin"], "/w",
                                ["/bin/sh"], ["-c", "true"]))
    got = wait_built(d, build(d, {"base": "oci-archive:" + arc, "steps": [
        {"env": {"MORE": "2"}}]})["id"])
    assert got["state"] == "ready", (got, logs(d, got["id"]))
    assert got["config"] == {"env": {"OCI": "1", "PATH": "/bin", "MORE": "2"},
                             "workdir": "/w", "entrypoint": ["/bin/sh"], "cmd": ["-c", "true"]}
    assert got["files"] == 3  # / /etc /etc/from-oci
    again = wait_built(d, build(d, {"base": "oci-archive:" + arc})["id"])
    assert again["state"] == "ready" and again["files"] == 3


def test_oci_cmd_is_what_an_empty_command_runs_and_a_command_replaces(skiffd, busybox_root):
    """Docker's semantics: ENTRYPOINT + CMD by default, ENTRYPOINT + the given arguments in
    place of CMD; an entrypoint set by a step drops the base's CMD."""
    d = skiffd  # the session's, of the default blob limit: the archive holds busybox
    bb = ((busybox_root / "bin" / "busybox").read_bytes(), 0o755)
    arc = upload(d, oci_archive({"bin/sh": bb, "bin/sleep": bb, "bin/cat": bb, "tmp/.keep": b""},
                                ["PATH=/bin"], "/",
                                ["/bin/sh", "-c"], ["echo from-cmd > /tmp/ran; sleep 600"]))
    img = wait_built(d, build(d, {"base": "oci-archive:" + arc})["id"])
    assert img["state"] == "ready", (img, logs(d, img["id"]))
    assert img["config"]["entrypoint"] == ["/bin/sh", "-c"], img["config"]
    assert img["config"]["cmd"] == ["echo from-cmd > /tmp/ran; sleep 600"], img["config"]

    def ran(body):
        s, sb = d.api("POST", "/v1/sandboxes", {"image": img["id"], **body})
        assert s == 201, sb
        try:
            assert wait_for_file(d, sb["id"], "/tmp/ran"), sb
            return sh(d, sb["id"], "cat /tmp/ran")["stdout"]
        finally:
            d.api("DELETE", f"/v1/sandboxes/{sb['id']}")

    assert ran({"command": []}) == "from-cmd\n"
    # A command replaces cmd (with cmd kept after it, sh -c would run cmd's text instead).
    assert ran({"command": ["echo given > /tmp/ran; sleep 600"]}) == "given\n"
    # No command: idle, neither entrypoint nor cmd run.
    s, idle = d.api("POST", "/v1/sandboxes", {"image": img["id"]})
    assert s == 201, idle
    assert sh(d, idle["id"], "test -e /tmp/ran || echo idle")["stdout"] == "idle\n"
    d.api("DELETE", f"/v1/sandboxes/{idle['id']}")
    # A new entrypoint drops the base's cmd: [] runs the new entrypoint alone.
    ep = wait_built(d, build(d, {"base": img["id"], "steps": [
        {"entrypoint": ["/bin/sh", "-c", "echo own-ep > /tmp/ran; sleep 600"]}]})["id"])
    assert ep["state"] == "ready" and "cmd" not in ep["config"], ep
    assert ran({"command": []}) == "from-cmd\n"  # the first image is unchanged
    img = ep
    assert ran({"command": []}) == "own-ep\n"


@pytest.fixture
def d_tars(tmp_path_factory, tmp_path):
    """A skiffd whose Debian base tarballs are the test's own (SKIFF_DEBIAN_TAR_DIR)."""
    tars = tmp_path / "tars"
    tars.mkdir()
    for d in _own_skiffd(tmp_path_factory, {"SKIFF_DEBIAN_TAR_DIR": str(tars)}):
        d.tars = tars
        yield from _after_test(d)


def test_a_debian_tarball_made_again_is_a_new_base(d_tars):
    # The base is cached by the tarball's identity, not its name alone: one made again (from
    # another mirror, on a later day) is imported again, not served from the old import.
    d, tar = d_tars, d_tars.tars / "debian-bookworm.tar"
    tar.write_bytes(make_tar({"etc/debian_version": b"12.0\n"}))
    first = wait_built(d, build(d, {"base": "debian:bookworm"})["id"])
    assert first["state"] == "ready", (first, logs(d, first["id"]))
    again = wait_built(d, build(d, {"base": "debian:bookworm"})["id"])
    assert again["manifest"] == first["manifest"]
    new = tar.with_name("made-again.tar")
    new.write_bytes(make_tar({"etc/debian_version": b"12.1\n", "etc/made-again": b"x\n"}))
    os.replace(new, tar)
    later = wait_built(d, build(d, {"base": "debian:bookworm"})["id"])
    assert later["state"] == "ready", (later, logs(d, later["id"]))
    assert later["manifest"] != first["manifest"] and later["files"] == first["files"] + 1


DEBIAN_TAR = "/var/cache/skiff/debian-bookworm.tar"


@pytest.mark.skipif(not os.path.exists(DEBIAN_TAR),
                    reason=f"{DEBIAN_TAR} is missing (scripts/install-deps makes it with "
                           "mmdebstrap where the Debian mirror can be reached)")
def test_debian_base(d):
    got = wait_built(d, build(d, {"base": "debian:bookworm", "steps": [
        {"run": "echo built-on-debian > /etc/skiff-test"}]})["id"], timeout=600)
    assert got["state"] == "ready", (got, logs(d, got["id"]))
    s, sb = d.api("POST", "/v1/sandboxes", {"image": got["id"]})
    assert s == 201, sb
    out = sh(d, sb["id"], "cat /etc/debian_version /etc/skiff-test")
    assert out["stdout"].startswith("12.") and out["stdout"].endswith("built-on-debian\n"), out


SLIM_TAR = "/var/cache/skiff/debian-bookworm-python3.tar"


@pytest.mark.skipif(not os.path.exists(SLIM_TAR),
                    reason=f"{SLIM_TAR} is missing (scripts/install-deps makes it with "
                           "mmdebstrap where the Debian mirror can be reached)")
def test_python_bytecode_stays_valid(d):
    # Python checks a cached .pyc against its source's mtime and size: were mtimes lost on the
    # way (import, store, materialized tree, idmapped lower), each import would write a new
    # .pyc into the sandbox's layer.
    got = wait_built(d, build(d, {"base": "debian-slim"})["id"], timeout=600)
    assert got["state"] == "ready", (got, logs(d, got["id"]))
    s, sb = d.api("POST", "/v1/sandboxes", {"image": got["id"]})
    assert s == 201, sb
    out = sh(d, sb["id"], "touch /tmp/mark && python3 -c 'import json, email.mime.text' && "
                          "ls /usr/lib/python3.11/json/__pycache__/__init__.cpython-311.pyc && "
                          "find /usr -newer /tmp/mark -name '*.pyc'")
    assert out["exit_code"] == 0, out
    assert out["stdout"] == "/usr/lib/python3.11/json/__pycache__/__init__.cpython-311.pyc\n", out
    # The control: a source made newer than its cache is compiled again, and found.
    out = sh(d, sb["id"], "touch /usr/lib/python3.11/json/decoder.py /tmp/mark2 && sleep 0.01 &&"
                          " python3 -c 'import json' && find /usr -newer /tmp/mark2 -name '*.pyc'")
    assert "json/__pycache__/decoder.cpython-311.pyc" in out["stdout"], out
    d.api("DELETE", f"/v1/sandboxes/{sb['id']}")


def test_stop_during_an_upload(d):
    import socket
    s = socket.create_connection(("127.0.0.1", d.port))
    try:
        s.sendall((f"PUT /v1/blobs/{digest(b'x' * 100000)} HTTP/1.1\r\nHost: x\r\n"
                   f"Authorization: Bearer {d.token}\r\nContent-Length: 100000\r\n\r\n").encode()
                  + b"x" * 1000)
        time.sleep(0.5)  # the server has taken the upload over and waits for the rest
        t0 = time.monotonic()
        assert d.stop() == 0
        assert time.monotonic() - t0 < 10, "skiffd waited for the stalled upload"
        assert s.recv(100) == b""  # closed, no answer
    finally:
        s.close()
    # Looked at once skiffd runs again: stopped, it may have unmounted the disk that holds the
    # store (docs/IMAGES.md, "Where the bytes live").
    d.start(pool=d.pool, env={"SKIFF_MAX_BLOB_BYTES": str(MAX_BLOB)})
    assert not any((d.data / "images" / "tmp").iterdir())
    s2, body = d.api("HEAD", f"/v1/blobs/{digest(b'x' * 100000)}")
    assert s2 == 404
