"""What one workspace may keep in the image store: the bytes of the blobs it uploaded (and of its
uploads under way), and the number of its images. Limits lowered through the environment."""

import os
import socket

import pytest

from conftest import _after_test, _own_skiffd
from test_image_cache import delete_and_gc
from test_images import (age_all_blobs, blob_path, build, developer_of, digest, put_blob,
                         wait_built)

QUOTA = 10_000
MAX_IMAGES = 2


@pytest.fixture(scope="module")
def _quota_skiffd(tmp_path_factory):
    yield from _own_skiffd(tmp_path_factory, {"SKIFF_WORKSPACE_BLOB_BYTES": str(QUOTA),
                                              "SKIFF_WORKSPACE_MAX_IMAGES": str(MAX_IMAGES)})


@pytest.fixture
def d(_quota_skiffd):
    yield from _after_test(_quota_skiffd)


def stored(d, data, token):
    s, _, _ = d.raw("HEAD", f"/v1/blobs/{digest(data)}",
                    headers={"Authorization": f"Bearer {token}"})
    return s == 200


def test_uploads_beyond_the_workspace_share_refused(d):
    tok = developer_of(d, "quota-blobs")
    first, second = os.urandom(6000), os.urandom(6000)
    s, body = put_blob(d, first, token=tok)
    assert s == 201, body
    for chunked in (False, True):
        s, body = put_blob(d, second, token=tok, chunked=chunked)
        assert s == 413, body
        msg = body["error"]["message"]
        assert f"hold 6000 bytes of the store, at most {QUOTA}" in msg, msg
        assert not stored(d, second, d.token)  # nothing of it kept
    # Bytes the workspace uploaded before cost nothing again; another workspace has its own share.
    s, body = put_blob(d, first, token=tok)
    assert s == 200, body
    other = developer_of(d, "quota-blobs-other")
    s, body = put_blob(d, second, token=other)
    assert s == 201, body
    # A blob under the share still fits.
    small = os.urandom(4000)
    s, body = put_blob(d, small, token=tok)
    assert s == 201, body


def test_a_blob_gc_dropped_counts_again_when_uploaded_again(d):
    """Only a blob the store still holds is free to send again: one gc dropped is new bytes, or a
    workspace could fill its share, let gc drop it, fill it again, and send the first back."""
    tok = developer_of(d, "quota-dropped")
    first, second = os.urandom(6000), os.urandom(6000)
    s, body = put_blob(d, first, token=tok)
    assert s == 201, body
    age_all_blobs(d)  # past gc's grace: no image uses it
    img = wait_built(d, build(d, {"base": "busybox", "steps": [{"env": {"G": "q"}}]})["id"])
    assert img["state"] == "ready", img
    delete_and_gc(d, [img["id"]])
    assert not blob_path(d, digest(first)[7:]).exists()
    s, body = put_blob(d, second, token=tok)  # the share is free again
    assert s == 201, body
    s, body = put_blob(d, first, token=tok)
    assert s == 413 and "hold 6000 bytes" in body["error"]["message"], body
    assert not blob_path(d, digest(first)[7:]).exists()


def test_a_blob_another_workspace_stored_counts_for_each_uploader(d):
    one, two = developer_of(d, "quota-shared-a"), developer_of(d, "quota-shared-b")
    shared, more = os.urandom(6000), os.urandom(6000)
    for tok in (one, two):
        s, body = put_blob(d, shared, token=tok)
        assert s == 201, body
        s, body = put_blob(d, more, token=tok)
        assert s == 413 and "hold 6000 bytes" in body["error"]["message"], body


def test_uploads_under_way_count(d):
    tok = developer_of(d, "quota-inflight")
    slow, fast = os.urandom(7000), os.urandom(7000)
    c = socket.create_connection(("127.0.0.1", d.port), timeout=30)
    try:
        c.sendall((f"PUT /v1/blobs/{digest(slow)} HTTP/1.1\r\nHost: x\r\n"
                   f"Authorization: Bearer {tok}\r\nContent-Length: {len(slow)}\r\n\r\n").encode()
                  + slow[:100])
        # The first upload has its 7000 bytes promised: 7000 more do not fit beside them.
        for _ in range(50):
            s, body = put_blob(d, fast, token=tok)
            if s == 413:
                break
            assert s == 429, body  # the first upload has not been taken in yet
        assert s == 413 and "hold 7000 bytes" in body["error"]["message"], body
        c.sendall(slow[100:])
        reply = c.recv(4096)
        assert reply.startswith(b"HTTP/1.1 201"), reply
    finally:
        c.close()
    assert stored(d, slow, tok) and not stored(d, fast, d.token)


def test_images_per_workspace(d):
    tok = developer_of(d, "quota-images")
    made = []
    for i in range(MAX_IMAGES):
        img = build(d, {"base": "busybox", "steps": [{"env": {"N": str(i)}}]}, token=tok)
        made.append(wait_built(d, img["id"]))
        assert made[-1]["state"] == "ready", made[-1]
    s, body = d.api("POST", "/v1/images", {"base": "busybox", "steps": [{"env": {"N": "x"}}]},
                    token=tok)
    assert s == 429 and f"at most {MAX_IMAGES}" in body["error"]["message"], body
    s, body = d.api("GET", "/v1/images?limit=100", token=tok)
    assert s == 200 and len(body["items"]) == MAX_IMAGES, body
    # Another workspace builds; a deleted image makes room.
    other = developer_of(d, "quota-images-other")
    img = build(d, {"base": "busybox", "steps": [{"env": {"N": "o"}}]}, token=other)
    assert wait_built(d, img["id"])["state"] == "ready"
    s, body = d.api("DELETE", f"/v1/images/{made[0]['id']}", token=tok)
    assert s == 200, body
    img = build(d, {"base": "busybox", "steps": [{"env": {"N": "y"}}]}, token=tok)
    assert wait_built(d, img["id"])["state"] == "ready"
