"""Where an image's bytes live: on a data directory that is not btrfs, the content store is on the
btrfs disk skiff mounts for writable layers (<data>/disk/images, reached through the symlink
<data>/images), so that a tree's files share their blobs' extents; the disk's lifecycle with the
store on it; the data directory's own filesystem when there is no disk."""

import ctypes
import fcntl
import hashlib
import os
import struct
import subprocess

import pytest

from conftest import (LOOP_RELEASE_S, SKIFF_BOX, Box, Skiffd, data_disk_leaks, descendants,
                      end_skiffd, free_port, make_tar, new_instance, proc_alive, proc_info, sh,
                      wait_for)
from test_images import build, put_blob, wait_built

BTRFS_SUPER_MAGIC = 0x9123683E
FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_SHARED = 0x2000
FIEMAP_MAX_EXTENTS = 64
MIB = 1024 * 1024


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("f_bsize", ctypes.c_long),
                ("rest", ctypes.c_byte * 120)]


def fs_type(path):
    libc = ctypes.CDLL(None, use_errno=True)
    sf = _Statfs()
    if libc.statfs(str(path).encode(), ctypes.byref(sf)) != 0:
        raise OSError(ctypes.get_errno(), f"statfs {path}")
    return sf.f_type & 0xFFFFFFFF


def extents(path):
    """A file's extents as [(logical, physical, length, flags)] (FIEMAP, synced first)."""
    hdr = struct.pack("QQIIII", 0, 2**64 - 1, FIEMAP_FLAG_SYNC, 0, FIEMAP_MAX_EXTENTS, 0)
    buf = bytearray(hdr + b"\0" * (56 * FIEMAP_MAX_EXTENTS))
    with open(path, "rb") as f:
        fcntl.ioctl(f.fileno(), FS_IOC_FIEMAP, buf)
    n = struct.unpack_from("I", buf, 20)[0]
    out = []
    for i in range(n):
        logical, physical, length = struct.unpack_from("QQQ", buf, 32 + 56 * i)
        flags = struct.unpack_from("I", buf, 32 + 56 * i + 40)[0]
        out.append((logical, physical, length, flags))
    return out


def blob_path(data, hexd):
    return data / "images" / "blobs" / "sha256" / hexd[:2] / hexd[2:]


def tree_file(data, image, path):
    return data / "images" / "trees" / image["manifest"].removeprefix("sha256:") / path


def start(tmp_path, env=None, pool=1):
    d = Skiffd(tmp_path / "data", new_instance("g"), free_port())
    d.start(pool=pool, env=env)
    return d


def image_of(d, files, mode=0o644):
    """An image of busybox with the files {path: bytes} (mode) copied to /."""
    s, body = put_blob(d, make_tar({p: (data, mode) for p, data in files.items()}))
    assert s in (200, 201), body
    img = wait_built(d, build(d, {"base": "busybox", "steps": [
        {"copy": {"blob": body["digest"], "dest": "/"}}]})["id"])
    assert img["state"] == "ready", img
    return img


def materialize(d, img):
    """A sandbox on img (its tree made), removed again; the tree stays."""
    s, sb = d.api("POST", "/v1/sandboxes", {"image": img["id"]})
    assert s == 201, sb
    out = sh(d, sb["id"], "cat /big.bin | wc -c")
    d.api("DELETE", f"/v1/sandboxes/{sb['id']}")
    assert out["exit_code"] == 0, out
    return int(out["stdout"])


def btrfs_disk_or_skip(d):
    if fs_type(d.data) == BTRFS_SUPER_MAGIC:
        pytest.skip("the data directory is btrfs: its store reflinks where it is")
    if fs_type(d.data / "disk") != BTRFS_SUPER_MAGIC:
        pytest.skip(f"no btrfs disk on this host: {d.log_text()[-500:]}")


def test_tree_files_share_their_blobs_extents(tmp_path):
    d = start(tmp_path)
    try:
        btrfs_disk_or_skip(d)
        big = os.urandom(4 * MIB)
        h = hashlib.sha256(big).hexdigest()
        one = image_of(d, {"big.bin": big, "one": b"1"})
        # Same bytes, another mode: another inode of the store, its data a reflink too.
        two = image_of(d, {"big.bin": big, "two": b"2"}, mode=0o755)
        assert materialize(d, one) == materialize(d, two) == len(big)
        blob = blob_path(d.data, h)
        a, b = tree_file(d.data, one, "big.bin"), tree_file(d.data, two, "big.bin")
        # On the disk, not on the data directory's filesystem.
        assert os.stat(blob).st_dev == os.stat(d.data / "disk").st_dev != os.stat(d.data).st_dev
        assert os.stat(a).st_ino != os.stat(b).st_ino
        want = [(lo, ph, ln) for lo, ph, ln, _ in extents(blob)]
        assert want and sum(ln for _, _, ln in want) >= len(big)
        for f in (a, b):
            got = extents(f)
            assert [(lo, ph, ln) for lo, ph, ln, _ in got] == want, (f, got, want)
            assert all(fl & FIEMAP_EXTENT_SHARED for *_, fl in got), got
        assert "on the btrfs disk" in d.log_text()
    finally:
        assert end_skiffd(d) == 0


def test_restart_and_kill_keep_images_and_the_disk_goes_at_the_end(tmp_path):
    d = start(tmp_path)
    try:
        btrfs_disk_or_skip(d)
        big = os.urandom(MIB)
        img = image_of(d, {"big.bin": big})
        assert materialize(d, img) == len(big)
        s, sb = d.api("POST", "/v1/sandboxes", {"image": img["id"]})
        assert s == 201, sb
        # A clean stop leaves the sandbox running, and with it the disk.
        assert d.stop() == 0
        assert data_disk_leaks(d.data), "the disk went under a running sandbox"
        d.start()
        assert sh(d, sb["id"], "wc -c < /big.bin")["stdout"].strip() == str(len(big))
        assert materialize(d, img) == len(big)
        # skiff-box gc from another process while skiffd runs: the disk stays.
        d.api("DELETE", f"/v1/sandboxes/{sb['id']}")
        r = Box(SKIFF_BOX, d.instance, d.data).gc()
        assert r.returncode == 0, r.stderr
        assert blob_path(d.data, hashlib.sha256(big).hexdigest()).is_file()
        assert materialize(d, img) == len(big)
        # Killed: the next start finds the store where it was.
        spawners = [p for p in descendants(d.proc.pid)
                    if (proc_info(p) or (0, ""))[1] == "skiff-spawner"]
        d.proc.kill()
        d.proc.wait()
        d.log.close()
        assert wait_for(lambda: not any(proc_alive(p) for p in spawners), 10)
        d.start()
        assert materialize(d, img) == len(big)
        # A clean stop with no sandbox left: skiffd itself unmounts the disk (the store on it
        # is no reason to keep it).
        d.cleanup_sandboxes()
        assert d.stop() == 0
        assert wait_for(lambda: not data_disk_leaks(d.data), LOOP_RELEASE_S), \
            data_disk_leaks(d.data)
        assert (d.data / "images").is_symlink()
        # And the next start mounts it again, images and all.
        d.start()
        assert materialize(d, img) == len(big)
    finally:
        assert end_skiffd(d) == 0


def test_tmpfs_backend_keeps_the_store_on_the_data_directory(tmp_path):
    d = start(tmp_path, env={"SKIFF_DISK_BACKEND": "tmpfs"})
    try:
        store = d.data / "images"
        assert store.is_dir() and not store.is_symlink()
        assert os.stat(store).st_dev == os.stat(d.data).st_dev
        img = image_of(d, {"big.bin": b"x" * 5000})
        assert materialize(d, img) == 5000
        assert "image store on the data directory's filesystem" in d.log_text() and \
            "writable layers are tmpfs" in d.log_text(), d.log_text()[-2000:]
        assert not data_disk_leaks(d.data)
    finally:
        assert end_skiffd(d) == 0


def test_a_store_from_before_is_kept_where_it_is(tmp_path):
    # A data directory whose store an earlier version made on its own filesystem: used as it
    # is (its images stay), and the log says why the bytes are stored twice.
    store = tmp_path / "data" / "images"
    (store / "blobs").mkdir(parents=True)
    d = start(tmp_path)
    try:
        assert store.is_dir() and not store.is_symlink()
        img = image_of(d, {"big.bin": b"y" * 5000})
        assert materialize(d, img) == 5000
        assert blob_path(d.data, hashlib.sha256(b"y" * 5000).hexdigest()).is_file()
        assert os.stat(store).st_dev == os.stat(d.data).st_dev
        # Kept for being there, not for want of a disk.
        assert "image store on the data directory's filesystem" in d.log_text() and \
            "kept where it was made (by an earlier version" in d.log_text(), \
            d.log_text()[-2000:]
    finally:
        assert end_skiffd(d) == 0


def test_pruning_looks_at_the_disks_free_space(tmp_path):
    # --image-min-free between what the disk and the data directory's filesystem have free:
    # the store is on the disk, so trees are dropped (on the data directory none would be).
    d = start(tmp_path)
    try:
        btrfs_disk_or_skip(d)
        disk, data = (os.statvfs(p) for p in (d.data / "disk", d.data))
        disk_free, data_free = (s.f_bavail * s.f_frsize for s in (disk, data))
        if data_free - disk_free < 2 * 1024 * MIB:
            pytest.skip(f"the disk ({disk_free >> 20} MiB free) and the data directory "
                        f"({data_free >> 20} MiB free) are too close to tell apart")
        assert d.stop() == 0
        d.start(extra=["--image-min-free", f"{(disk_free + data_free) // 2 >> 20}M"])
        one = image_of(d, {"big.bin": b"1" * 5000})
        two = image_of(d, {"big.bin": b"2" * 5000})
        assert materialize(d, one) == materialize(d, two) == 5000
        a = one["manifest"].removeprefix("sha256:")
        assert f"dropped the unused tree of sha256:{a}" in d.log_text(), d.log_text()[-2000:]
        assert not tree_file(d.data, one, "big.bin").exists()
        assert tree_file(d.data, two, "big.bin").exists()
    finally:
        assert end_skiffd(d) == 0


def stopped_with_an_image(tmp_path):
    """A skiffd that made an image with a tree on the disk and was stopped, the disk unmounted
    with it: (d, image)."""
    d = start(tmp_path)
    try:
        btrfs_disk_or_skip(d)
        img = image_of(d, {"big.bin": b"z" * 5000})
        assert materialize(d, img) == 5000
    except BaseException:
        end_skiffd(d)
        raise
    assert end_skiffd(d) == 0
    assert wait_for(lambda: not data_disk_leaks(d.data), LOOP_RELEASE_S), \
        data_disk_leaks(d.data)
    return d, img


def end_and_unmount(d, path):
    """end_skiffd(d), then nothing left mounted on path (a test's own mount, or one skiffd
    should not have made), whatever end_skiffd found."""
    try:
        end_skiffd(d)
    finally:
        while os.path.ismount(path):
            subprocess.run(["umount", str(path)], check=True)


def test_a_read_only_disk_is_mounted_again_writable_at_start(tmp_path):
    # btrfs turned read-only (a write it could not make) and left mounted: the next start, no
    # one else holding the disk, unmounts it and mounts it writable again, images and all
    # (not a skiffd that can't start, nor a store made anew on the data directory).
    d, img = stopped_with_an_image(tmp_path)
    disk = d.data / "disk"
    try:
        subprocess.run(["mount", "-o", "loop,ro", str(d.data / "disk.img"), str(disk)],
                       check=True)
        assert os.statvfs(disk).f_flag & os.ST_RDONLY
        d.start()
        assert not os.statvfs(disk).f_flag & os.ST_RDONLY
        assert (d.data / "images").is_symlink()
        assert materialize(d, img) == 5000
        two = image_of(d, {"big.bin": b"w" * 5000})
        assert materialize(d, two) == 5000
    finally:
        end_and_unmount(d, disk)


def test_a_disk_made_anew_says_its_images_are_gone(tmp_path):
    # The disk's image removed while skiffd was stopped: the next start makes a new disk and an
    # empty store on it, and says so; a sandbox on an image made before is refused, clearly.
    d, img = stopped_with_an_image(tmp_path)
    (d.data / "disk.img").unlink()
    try:
        d.start()
        assert "made anew, empty" in d.log_text(), d.log_text()[-2000:]
        s, body = d.api("POST", "/v1/sandboxes", {"image": img["id"]})
        assert s != 201 and "not in this worker's store" in str(body), (s, body)
        two = image_of(d, {"big.bin": b"v" * 5000})
        assert materialize(d, two) == 5000
    finally:
        assert end_skiffd(d) == 0


def data_with_a_symlink(tmp_path, name):
    """A skiffd (not started) whose data directory's name is a symlink to a directory
    elsewhere (mode 0755): (skiffd, elsewhere)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / name).symlink_to(elsewhere)
    return Skiffd(tmp_path / "data", new_instance("g"), free_port()), elsewhere


def test_a_store_symlink_leading_elsewhere_is_refused(tmp_path):
    # <data>/images is followed only where it leads to the disk's store: anything else stops
    # skiffd with why, and nothing is written where it leads.
    d, elsewhere = data_with_a_symlink(tmp_path, "images")
    try:
        with pytest.raises(pytest.fail.Exception):
            d.start(timeout=10)
        assert d.proc.wait(10) != 0
        assert "links to" in d.log_text() and "expected disk/images" in d.log_text(), \
            d.log_text()[-2000:]
        assert not list(elsewhere.iterdir())
    finally:
        end_skiffd(d)


def test_a_symlink_at_the_disk_is_not_followed(tmp_path):
    # <data>/disk a symlink (a crafted data directory): the disk is never mounted where it
    # leads, nor its mode changed; no btrfs disk, and the store stays on the data directory.
    d, elsewhere = data_with_a_symlink(tmp_path, "disk")
    try:
        d.start()
        assert not os.path.ismount(elsewhere)
        assert os.stat(elsewhere).st_mode & 0o777 == 0o755
        assert (d.data / "images").is_dir() and not (d.data / "images").is_symlink()
        assert "a symlink" in d.log_text(), d.log_text()[-2000:]
        img = image_of(d, {"big.bin": b"u" * 5000})
        assert materialize(d, img) == 5000
    finally:
        end_and_unmount(d, elsewhere)


def test_a_disk_that_cannot_be_mounted_stops_skiffd_with_why(tmp_path):
    # The store is on the disk (the symlink says so) but its image is no btrfs any more: skiffd
    # dev says why and stops; no store is made on the data directory under the empty
    # <data>/disk, and no loop device is left.
    d, _ = stopped_with_an_image(tmp_path)
    with open(d.data / "disk.img", "r+b") as f:
        f.write(b"\0" * (1 * MIB))  # the superblock is at 64 KiB
    try:
        with pytest.raises(pytest.fail.Exception):
            d.start(timeout=20)
        assert d.proc.wait(20) != 0
        assert "image store is on the btrfs disk" in d.log_text(), d.log_text()[-2000:]
        assert not list((d.data / "disk").iterdir())
        assert wait_for(lambda: not data_disk_leaks(d.data), LOOP_RELEASE_S), \
            data_disk_leaks(d.data)
    finally:
        end_skiffd(d)
