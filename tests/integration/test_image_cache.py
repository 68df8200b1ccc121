"""The build cache is bounded: entries no build used for SKIFF_BUILD_CACHE_TTL_S go at the next gc,
a workspace keeps at most SKIFF_BUILD_CACHE_MAX_PER_WORKSPACE of them (its least recently used
go first), and what an evicted entry alone held leaves the store with the next gc. An entry
whose manifest is gone from the store is a miss, made again and replaced."""

import hashlib
import os
import time

import pytest

from conftest import _after_test, _own_skiffd, sh, wait_for
from test_images import (age_all_blobs, blob_path, build, developer_of, logs, make_tar,
                         put_blob, wait_built)

TTL_S = 2
CAP = 2
TTL_ENV = {"SKIFF_BUILD_CACHE_TTL_S": str(TTL_S)}
CAP_ENV = {"SKIFF_BUILD_CACHE_MAX_PER_WORKSPACE": str(CAP)}


@pytest.fixture(scope="module")
def _cache_skiffd(tmp_path_factory):
    yield from _own_skiffd(tmp_path_factory, TTL_ENV)


@pytest.fixture
def d(_cache_skiffd):
    yield from _after_test(_cache_skiffd)


def with_env(d, env):
    """skiffd started again with env (the store and cache it had kept)."""
    assert d.stop() == 0
    d.start(pool=d.pool, env=env)


def gc_runs(d):
    return d.log_text().count('msg="image gc" live=')


def delete_and_gc(d, image_ids):
    """Delete the images one by one, each followed by the gc it asks for (started at once: no
    build or gc runs), so that the last gc saw none of them."""
    for i in image_ids:
        before = gc_runs(d)
        s, body = d.api("DELETE", f"/v1/images/{i}")
        assert s == 200, body
        assert wait_for(lambda: gc_runs(d) > before, 30, 0.05), "no gc ran after the delete"


def copy_build(d, data, token="", steps=()):
    """An image of busybox with data at /data/f, built with token (the admin's by default), and
    its file's digest."""
    s, body = put_blob(d, make_tar({"f": data}), token=token)
    assert s in (200, 201), body
    spec = {"base": "busybox",
            "steps": [{"copy": {"blob": body["digest"], "dest": "/data"}}, *steps]}
    img = wait_built(d, build(d, spec, token=token)["id"], token=token)
    assert img["state"] == "ready", img
    return img, hashlib.sha256(data).hexdigest()


def test_unused_entries_expire_and_gc_drops_what_they_alone_held(d):
    with_env(d, TTL_ENV)
    a_data, b_data = os.urandom(30000), os.urandom(30000)
    a, a_hex = copy_build(d, a_data, steps=[{"env": {"K": "a"}}])
    b, b_hex = copy_build(d, b_data, steps=[{"env": {"K": "b"}}])  # a change: its own layer
    assert blob_path(d, a_hex).exists() and blob_path(d, b_hex).exists()
    time.sleep(TTL_S + 0.5)  # neither entry used since: both past the TTL
    age_all_blobs(d)  # past gc's grace for unreferenced blobs
    delete_and_gc(d, [b["id"]])
    # B's cache entries went with the gc; nothing else held its files: gone.
    assert not blob_path(d, b_hex).exists()
    assert not blob_path(d, b["manifest"][7:]).exists()
    # A's entries went too, but the image A holds its manifest and files.
    assert blob_path(d, a_hex).exists() and blob_path(d, a["manifest"][7:]).exists()
    s, sb = d.api("POST", "/v1/sandboxes", {"image": a["id"]})
    assert s == 201, sb
    out = sh(d, sb["id"], "md5sum /data/f")
    assert out["stdout"].startswith(hashlib.md5(a_data).hexdigest()), out
    d.api("DELETE", f"/v1/sandboxes/{sb['id']}")
    # Built again, nothing comes from the cache, and the result is the same.
    b2, _ = copy_build(d, b_data, steps=[{"env": {"K": "b"}}])
    assert [l["cached"] for l in b2["layers"]] == [False, False], b2
    assert b2["manifest"] == b["manifest"]
    assert blob_path(d, b_hex).exists()
    a2, _ = copy_build(d, a_data, steps=[{"env": {"K": "a"}}])
    assert [l["cached"] for l in a2["layers"]] == [False, False], a2
    # Within the TTL, a build again is cached.
    a3, _ = copy_build(d, a_data, steps=[{"env": {"K": "a"}}])
    assert [l["cached"] for l in a3["layers"]] == [True, True], a3
    # Once every image is deleted and the entries expired, A's files go too.
    time.sleep(TTL_S + 0.5)
    age_all_blobs(d)
    delete_and_gc(d, [a["id"], a2["id"], a3["id"], b2["id"]])
    assert not blob_path(d, a_hex).exists()
    assert not blob_path(d, b_hex).exists()
    assert not blob_path(d, a["manifest"][7:]).exists()


def test_workspace_keeps_its_most_recently_used_entries(d):
    with_env(d, CAP_ENV)
    other = developer_of(d, "cache-cap-other")
    # The other workspace's entry is the least recently used of all: it must stay.
    y_data = os.urandom(1000)
    copy_build(d, y_data, token=other)
    datas = [os.urandom(1000) for _ in range(3)]
    imgs = [copy_build(d, datas[0])[0], copy_build(d, datas[1])[0]]  # X1, X2: the cap
    x1 = copy_build(d, datas[0])[0]
    assert x1["layers"][0]["cached"] is True  # X1 used again: X2 is the least recently used
    imgs.append(x1)
    imgs.append(copy_build(d, datas[2])[0])  # X3: past the cap, X2 evicted
    again = [copy_build(d, datas[i])[0] for i in (0, 2)]
    assert [g["layers"][0]["cached"] for g in again] == [True, True], again
    x2 = copy_build(d, datas[1])[0]
    assert x2["layers"][0]["cached"] is False, x2  # evicted
    y = copy_build(d, y_data, token=other)[0]
    assert y["layers"][0]["cached"] is True, y  # another workspace's cap
    for i in imgs + again + [x2]:
        s, body = d.api("DELETE", f"/v1/images/{i['id']}")
        assert s == 200, body
    s, body = d.api("DELETE", f"/v1/images/{y['id']}", token=other)
    assert s == 200, body


def test_entry_whose_manifest_is_gone_is_made_again(d):
    with_env(d, CAP_ENV)
    spec = {"base": "busybox", "steps": [{"run": "head -c 16 /dev/urandom > /r"}]}
    first = wait_built(d, build(d, spec)["id"])
    assert first["state"] == "ready", (first, logs(d, first["id"]))
    delete_and_gc(d, [first["id"]])
    # The cache entry still holds its manifest; then the disk loses it.
    path = blob_path(d, first["manifest"][7:])
    assert path.exists()
    path.unlink()
    second = wait_built(d, build(d, spec)["id"])
    assert second["state"] == "ready", (second, logs(d, second["id"]))
    assert second["layers"][0]["cached"] is False, second
    assert "is gone from the store" in logs(d, second["id"])
    assert second["manifest"] != first["manifest"]  # the step's output is random
    # The entry now names what was made again.
    third = wait_built(d, build(d, spec)["id"])
    assert third["layers"][0]["cached"] is True, third
    assert third["manifest"] == second["manifest"]
    for i in (second, third):
        s, body = d.api("DELETE", f"/v1/images/{i['id']}")
        assert s == 200, body


def test_least_recently_used_order_outlives_a_restart(d):
    with_env(d, CAP_ENV)
    datas = [os.urandom(1000) for _ in range(3)]
    p1, p2 = copy_build(d, datas[0])[0], copy_build(d, datas[1])[0]
    p1b = copy_build(d, datas[0])[0]  # a hit: P2 is the least recently used now
    assert p1b["layers"][0]["cached"] is True, p1b
    with_env(d, CAP_ENV)  # a clean stop persists the hit
    p3 = copy_build(d, datas[2])[0]  # past the cap: P2 goes
    p1c = copy_build(d, datas[0])[0]
    assert p1c["layers"][0]["cached"] is True, p1c
    p2b = copy_build(d, datas[1])[0]
    assert p2b["layers"][0]["cached"] is False, p2b
    for i in (p1, p2, p1b, p3, p1c, p2b):
        s, body = d.api("DELETE", f"/v1/images/{i['id']}")
        assert s == 200, body
