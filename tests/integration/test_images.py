"""Images in the control plane: blobs (/v1/blobs), builds (/v1/images) with their cache,
sandboxes started on images, snapshots, and gc never taking what an image uses."""

import hashlib
import http.client
import json
import os

import pytest

from conftest import _own_skiffd, _after_test

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
