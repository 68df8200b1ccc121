"""Writable layers on btrfs: one subvolume per sandbox with a qgroup limit, on the data
directory's image; the tmpfs fallback."""

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import (DEFAULT_TIMEOUT_S, LEAK_GRACE_S, LOOP_RELEASE_S, REPO, SKIFF_BOX, Box,
                      Skiffd, data_disk_leaks, descendants, disk_subvolumes, end_instance,
                      free_port, kill_all, new_instance, proc_alive, proc_info, read_line,
                      state_dirs, wait_for, wait_no_leaks)

MIB = 1024 * 1024


def btrfs_or_skip(box):
    r = box.run(["true"], "--report", "/dev/stdout")
    assert r.returncode == 0, r.stderr
    if json.loads(r.stdout)["disk_backend"] != "btrfs":
        pytest.skip(f"no btrfs disk on this host: {r.stderr.strip()}")


def disk_full(stderr):
    return "Disk quota exceeded" in stderr or "No space left on device" in stderr


def fill(path, mib):
    """A shell snippet: write mib MiB to path, print the status and the size written."""
    return (f"dd if=/dev/zero of={path} bs=1M count={mib}; echo rc=$?; "
            f"ls -l {path} | awk '{{print $5}}'")


def test_write_past_disk_fails_with_quota(box):
    btrfs_or_skip(box)
    script = ("head -c 3000000 /dev/urandom > /keep && sum1=$(md5sum < /keep) && sync && "
              "sum2=$(md5sum < /keep) && [ \"$sum1\" = \"$sum2\" ] && echo kept; " +
              fill("/big", 32))
    r = box.sh(script, "--disk", "8")
    assert r.returncode == 0, r.stderr
    kept, rc, size = r.stdout.split()
    assert kept == "kept"
    assert rc != "rc=0"
    assert int(size) <= 8 * MIB
    assert disk_full(r.stderr), r.stderr


def test_disk_is_not_memory(box):
    # 96 MiB written under a 48 MiB memory limit: on btrfs it is disk (page cache is reclaimed),
    # on the tmpfs layer it is memory and the sandbox is killed.
    btrfs_or_skip(box)
    script = "dd if=/dev/zero of=/big bs=1M count=96 conv=fsync 2>/dev/null; echo rc=$?; " \
             "ls -l /big | awk '{print $5}'"
    r = box.sh(script, "--disk", "256", "--memory", "48", "--report", "/dev/stderr")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["rc=0", str(96 * MIB)]
    r = box.sh(script, "--disk", "256", "--memory", "48", "--disk-backend", "tmpfs")
    assert r.returncode == 137, (r.stdout, r.stderr)
    assert "out of memory" in r.stderr


def test_the_layer_is_volatile(box):
    # Overlayfs syncs its upper filesystem when it is unmounted and on fsync: on the shared btrfs
    # that is every sandbox's layer, at every sandbox's exit (a commit of the whole disk per
    # exit). The layer dies with the sandbox: volatile, as a tmpfs layer is.
    btrfs_or_skip(box)
    r = box.sh("grep '^overlay / ' /proc/mounts")
    assert r.returncode == 0, r.stderr
    assert "fsync=volatile" in r.stdout.split()[3].split(","), r.stdout
    r = box.sh("grep '^overlay / ' /proc/mounts", "--disk-backend", "tmpfs")
    assert "volatile" not in r.stdout, r.stdout


def test_limit_is_per_sandbox(box):
    btrfs_or_skip(box)
    script = "echo ready; read go; " + fill("/f", 48)
    procs = [box.spawn("--disk", str(mib), "--", "sh", "-c", script, stdin=subprocess.PIPE)
             for mib in (8, 24)]
    for p in procs:
        assert read_line(p) == b"ready\n"
    # Both hold their subvolume at once.
    assert len(disk_subvolumes(box.instance, box.data_dir)) == 2
    outs = []
    for p in procs:
        out, err = p.communicate(b"go\n", timeout=DEFAULT_TIMEOUT_S)
        assert p.returncode == 0, err
        outs.append((out.decode().split(), err.decode()))
    (rc8, size8), err8 = outs[0]
    (rc24, size24), err24 = outs[1]
    assert rc8 != "rc=0" and rc24 != "rc=0", outs
    assert 6 * MIB <= int(size8) <= 8 * MIB
    assert 20 * MIB <= int(size24) <= 24 * MIB
    assert disk_full(err8) and disk_full(err24)


def test_subvolume_lives_with_a_detached_sandbox(box):
    btrfs_or_skip(box)
    r = box("--detach", "--disk", "16")
    assert r.returncode == 0, r.stderr
    sbid = r.stdout.strip()
    sub = Path(box.data_dir) / "disk" / box.instance / sbid
    try:
        assert sub.is_dir() and sub.stat().st_ino == 256  # a subvolume's root
        r = box("exec", sbid, "--", "sh", "-c", fill("/f", 32))
        assert r.stdout.split()[0] != "rc=0" and int(r.stdout.split()[1]) <= 16 * MIB
    finally:
        k = box("kill", sbid)
    assert k.returncode == 0, k.stderr
    assert not sub.exists()


def test_runtime_killed_helper_removes_subvolume(box):
    btrfs_or_skip(box)
    p = box.spawn("--", "sh", "-c", "echo x > /f; echo ready; exec sleep 60")
    assert read_line(p) == b"ready\n"
    assert len(disk_subvolumes(box.instance, box.data_dir)) == 1
    p.send_signal(signal.SIGKILL)
    p.wait()
    # The cleanup helper removes it; the per-test leak check waits for that.
    assert wait_for(lambda: not disk_subvolumes(box.instance, box.data_dir), 5)


def test_gc_removes_subvolume_and_mount_after_a_crash(box):
    btrfs_or_skip(box)
    r = box("--detach")
    assert r.returncode == 0, r.stderr
    sbid = r.stdout.strip()
    ls = json.loads(box("ls", "--json").stdout)
    pid = next(s["pid"] for s in ls if s["id"] == sbid)
    os.kill(pid, signal.SIGKILL)  # its init: nothing is left to clean up after it
    assert wait_for(lambda: not os.path.exists(f"/proc/{pid}/stat")
                    or open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] == "Z", 5)
    assert disk_subvolumes(box.instance, box.data_dir)
    g = box.gc()
    assert g.returncode == 0, g.stderr
    assert not disk_subvolumes(box.instance, box.data_dir)
    # Nothing of any instance is on the disk any more and no runtime uses it: unmounted, and
    # its loop device released by the kernel once the killed sandbox's mount namespace is torn
    # down (lazily: seconds on a loaded machine).
    assert wait_for(lambda: not data_disk_leaks(box.data_dir), LOOP_RELEASE_S), \
        data_disk_leaks(box.data_dir)


def image_loops(data_dir):
    return [x for x in data_disk_leaks(data_dir) if x.startswith("loop device")]


def test_disk_still_alive_elsewhere_is_mounted_again_not_twice(box):
    """A mount namespace that copied the disk's mount privately keeps its filesystem alive after
    the runtime unmounts it. The next mount must be of that same filesystem (its loop device):
    a second loop device on the image would be a second btrfs (a temporary fsid) on the same
    blocks, which would not see the first's unwritten changes, such as a removed subvolume."""
    btrfs_or_skip(box)
    r = box("--detach")
    assert r.returncode == 0, r.stderr
    sbid = r.stdout.strip()
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               "echo held; exec sleep 60"], stdout=subprocess.PIPE)
    try:
        assert read_line(holder) == b"held\n"
        assert box("kill", sbid).returncode == 0
        assert box.gc().returncode == 0
        # Unmounted here, still alive in the holder's namespace: one loop device.
        assert wait_for(lambda: not any(x.startswith("mount") for x in data_disk_leaks(
            box.data_dir)), LEAK_GRACE_S), data_disk_leaks(box.data_dir)
        before = image_loops(box.data_dir)
        assert len(before) == 1, before
        r = box("--detach")
        assert r.returncode == 0, r.stderr
        again = r.stdout.strip()
        assert image_loops(box.data_dir) == before
        # The same filesystem: the killed sandbox's subvolume is gone from it.
        assert disk_subvolumes(box.instance, box.data_dir) == [
            str(Path(box.data_dir) / "disk" / box.instance / again)]
        assert box("kill", again).returncode == 0
        assert box.gc().returncode == 0
    finally:
        holder.kill()
        holder.wait()
    assert wait_for(lambda: not data_disk_leaks(box.data_dir), LOOP_RELEASE_S), \
        data_disk_leaks(box.data_dir)


def test_fallback_to_tmpfs_when_no_image_can_be_made(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "disk.img").mkdir()  # the image can't be made: a directory is in the way
    b = Box(SKIFF_BOX, new_instance("d"), data)
    try:
        r = b.sh(fill("/f", 16), "--disk", "4", "--report", str(tmp_path / "report"))
        assert r.returncode == 0, r.stderr
        assert "writable layers are tmpfs" in r.stderr and "disk.img" in r.stderr
        assert json.loads((tmp_path / "report").read_text())["disk_backend"] == "tmpfs"
        assert "No space left on device" in r.stderr
        assert int(r.stdout.split()[1]) <= 4 * MIB
        # Said once per data directory: the next run's stderr is the command's alone.
        r = b.run(["sh", "-c", "echo x >&2"])
        assert (r.returncode, r.stderr) == (0, "x\n")
        # Asked for btrfs: a clear failure, nothing started.
        r = b.run(["true"], "--disk-backend", "btrfs")
        assert r.returncode == 125 and "btrfs disk" in r.stderr and "disk.img" in r.stderr
        assert not state_dirs(b.instance)
    finally:
        end_instance(b)


def test_bad_disk_backend_refused(box):
    r = box.run(["true"], "--disk-backend", "zfs")
    assert r.returncode == 2 and "--disk-backend" in r.stderr


def test_two_instances_share_the_data_directorys_disk(box):
    btrfs_or_skip(box)
    other = Box(SKIFF_BOX, new_instance("d"), box.data_dir)
    p = box.spawn("--", "sh", "-c", "echo ready; exec sleep 60")
    try:
        assert read_line(p) == b"ready\n"
        # The other instance runs and its gc ends while ours still holds a subvolume: the
        # disk stays mounted, our subvolume stays.
        assert other.run(["true"]).returncode == 0
        assert other.gc().returncode == 0
        assert not wait_no_leaks(other.instance, data_dir=other.data_dir)
        assert not (Path(box.data_dir) / "disk" / other.instance).exists()
        assert len(disk_subvolumes(box.instance, box.data_dir)) == 1
        assert data_disk_leaks(box.data_dir)
    finally:
        p.kill()
        p.wait()
        other.gc()


def test_pool_serves_another_disk_size(skiffd):
    # The pool's sandbox was made for the default disk size; a create asking for 16 MiB takes it
    # and gets its limit.
    pooled = wait_for(lambda: [d for d in state_dirs(skiffd.instance)
                               if not (Path(d) / "init").exists()], 15)
    if not pooled:
        pytest.skip("no pooled sandbox waiting")
    if not disk_subvolumes(skiffd.instance, skiffd.data):
        pytest.skip("skiffd's disk is not btrfs on this host")
    s, sb = skiffd.api("POST", "/v1/sandboxes", {"disk_mib": 16})
    assert s == 201, sb
    assert (Path(pooled[0]) / "init").exists(), "the create was not served from the pool"
    s, out = skiffd.api("POST", f"/v1/sandboxes/{sb['id']}/exec?wait=true",
                        {"command": ["sh", "-c", fill("/f", 40)]})
    assert s == 200, out
    rc, size = out["stdout"].split()
    assert rc != "rc=0" and int(size) <= 16 * MIB, out
    assert disk_full(out["stderr"]), out
    s, _ = skiffd.api("DELETE", f"/v1/sandboxes/{sb['id']}")
    assert s == 200


def test_gc_after_skiffd_is_killed(tmp_path):
    # skiffd dies with a sandbox running: the sandbox runs on (detached) and keeps its layer;
    # once it is ended too, gc removes the layer, and with it the last use of the disk: the
    # image is unmounted and its loop device released (end_instance checks both).
    d = Skiffd(tmp_path / "data", new_instance("d"), free_port())
    d.start(pool=1)
    box = Box(SKIFF_BOX, d.instance, d.data)
    try:
        s, sb = d.api("POST", "/v1/sandboxes", {"disk_mib": 16})
        assert s == 201, sb
        spawners = [p for p in descendants(d.proc.pid)
                    if (proc_info(p) or (0, ""))[1] == "skiff-spawner"]
        d.proc.kill()
        d.proc.wait()
        # Its spawner goes with it (and the pool's sandbox with the spawner): gc is for what is
        # dead, so wait for that.
        assert wait_for(lambda: not any(proc_alive(p) for p in spawners), 10)
        if not disk_subvolumes(d.instance, d.data):
            pytest.skip("skiffd's disk is not btrfs on this host")
        ls = json.loads(box("ls", "--json").stdout)
        running = [x for x in ls if x["state"] == "running"]
        assert running, ls
        for x in running:
            os.kill(x["pid"], signal.SIGKILL)
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
        d.log.close()
        kill_all(box)
        end_instance(box)


@pytest.fixture
def btrfs_dir(tmp_path):
    """A btrfs filesystem of 2 GiB of ours, mounted: (its mount point, its /sys/fs/btrfs dir)."""
    if not shutil.which("mkfs.btrfs"):
        pytest.skip("mkfs.btrfs is missing (btrfs-progs): needed to make a btrfs data directory")
    img, mnt = tmp_path / "fs.img", tmp_path / "mnt"
    mnt.mkdir()
    with open(img, "wb") as f:
        f.truncate(2 << 30)
    subprocess.run(["mkfs.btrfs", "-q", str(img)], check=True, capture_output=True)
    r = subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"can't mount a btrfs image here: {r.stderr.strip()}")
    uuid = subprocess.run(["findmnt", "-no", "UUID", str(mnt)], capture_output=True,
                          text=True).stdout.strip()
    try:
        yield mnt, Path("/sys/fs/btrfs") / uuid
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def limited_on(b, tmp_path):
    """Run a 4 MiB sandbox that writes 16 MiB under b's data directory: it must be btrfs and fail
    with a full disk."""
    report = tmp_path / "report"
    r = b.sh(fill("/f", 16), "--disk", "4", "--report", str(report))
    assert r.returncode == 0, r.stderr
    assert json.loads(report.read_text())["disk_backend"] == "btrfs"
    assert int(r.stdout.split()[1]) <= 4 * MIB and disk_full(r.stderr)


def test_btrfs_data_directory_without_quotas_is_left_as_it_is(btrfs_dir, tmp_path):
    # Its quotas are off: turning them on would change the host's filesystem for good (simple
    # quotas are an incompatible feature). The layers go to an image on it, as on ext4.
    mnt, sysfs = btrfs_dir
    assert sysfs.is_dir() and not (sysfs / "qgroups").exists()
    b = Box(SKIFF_BOX, new_instance("d"), mnt)
    try:
        limited_on(b, tmp_path)
        assert not (sysfs / "qgroups").exists(), "quotas turned on on the data directory's fs"
        assert (mnt / "disk.img").is_file()
        assert os.stat(mnt / "disk").st_dev != os.stat(mnt).st_dev
    finally:
        end_instance(b)


def test_data_directory_on_btrfs_is_used_as_it_is(btrfs_dir, tmp_path):
    mnt, sysfs = btrfs_dir
    # Quotas on already (its owner's choice): the data directory's filesystem holds the layers.
    subprocess.run(["btrfs", "quota", "enable", str(mnt)], check=True, capture_output=True)
    assert (sysfs / "qgroups").is_dir()
    b = Box(SKIFF_BOX, new_instance("d"), mnt)
    try:
        limited_on(b, tmp_path)
        # No image, no mount of ours: the data directory's own filesystem holds the layers.
        assert not (mnt / "disk.img").exists()
        assert os.stat(mnt / "disk").st_dev == os.stat(mnt).st_dev
    finally:
        end_instance(b)


@pytest.fixture
def small_fs(tmp_path):
    """mount_tmpfs(MiB): a data directory on a filesystem of that size (a tmpfs of ours)."""
    made = []

    def mount_tmpfs(mib):
        d = tmp_path / f"fs{len(made)}"
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "skiff-test", str(d)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"can't mount a tmpfs here: {r.stderr.strip()}")
        made.append(d)
        return d

    yield mount_tmpfs
    for d in made:
        subprocess.run(["umount", "-l", str(d)], check=True)


def test_no_image_where_there_is_no_room_for_one(small_fs):
    # 200 MiB, a tenth of it left to the host: too little for a disk image. The image is not
    # made larger than the space under it (btrfs would fail writes mid-transaction): tmpfs.
    data = small_fs(200)
    b = Box(SKIFF_BOX, new_instance("d"), data)
    try:
        r = b.run(["true"], "--report", "/dev/stderr")
        assert r.returncode == 0, r.stderr
        assert "writable layers are tmpfs" in r.stderr and "MiB free" in r.stderr, r.stderr
        assert '"disk_backend":"tmpfs"' in r.stderr.replace(" ", "")
        assert not (data / "disk.img").exists()
    finally:
        end_instance(b)


def test_a_sandbox_cannot_fill_the_data_directorys_filesystem(small_fs):
    # A disk limit larger than the filesystem under the data directory: the sandbox fills the
    # image, never the host's filesystem, and the disk stays writable for the next sandbox (a
    # btrfs larger than the space under it goes read-only once that space runs out).
    data = small_fs(1024)
    b = Box(SKIFF_BOX, new_instance("d"), data)
    try:
        btrfs_or_skip(b)
        assert os.stat(data / "disk.img").st_size <= 1024 * MIB * 9 // 10
        r = b.sh(fill("/f", 1100), "--disk", "4096")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split()[0] != "rc=0" and disk_full(r.stderr), (r.stdout, r.stderr)
        st = os.statvfs(data)
        assert st.f_bavail * st.f_frsize >= 64 * MIB, "the host's filesystem was filled"
        # Full, not broken: the disk is still mounted read-write.
        assert not os.statvfs(data / "disk").f_flag & os.ST_RDONLY
        assert os.stat(data / "disk").st_dev != os.stat(data).st_dev
    finally:
        end_instance(b)


PROBE = Path(os.environ.get("SKIFF_PROBE", str(REPO / "build" / "tests" / "skiff-probe")))


def test_the_layer_defeats_no_quota(box, custom_root):
    # What a sandbox could try against its limit, through the overlay on its subvolume: btrfs'
    # own ioctls (a subvolume or snapshot of its own would have a qgroup with no limit, and
    # would block the layer's destroy) do not pass through overlayfs; preallocation, metadata
    # alone (empty files, xattrs) and reflinks are charged like data.
    btrfs_or_skip(box)
    if not PROBE.is_file():
        pytest.fail(f"{PROBE} is missing: build it with `make` (or set SKIFF_PROBE)",
                    pytrace=False)
    shutil.copy2(PROBE, custom_root / "bin" / "probe")
    script = ("probe btrfs-subvol / sv; probe btrfs-subvol /tmp sv; probe btrfs-snap /tmp sn; "
              "probe fallocate /fa 32; probe fill-files /tmp 1000000; rm -rf /tmp/*; "
              "mkdir /x; probe fill-files /x 100000 4 2048; rm -rf /x; "
              "head -c 3000000 /dev/zero > /a; probe ficlone /a /b; probe ficlone /a /c; "
              "probe ficlone /a /d; probe ficlone /a /e; " + fill("/f", 16))
    r = box.sh(script, "--rootfs", custom_root, "--disk", "8")
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[:3] == ["err ENOTTY"] * 3, out
    assert out[3] == "err EDQUOT", out  # 32 MiB preallocated under an 8 MiB limit
    files, why = out[4].split()
    assert why == "EDQUOT" and int(files) < 1000000, out
    files, why = out[5].split()
    assert why == "EDQUOT" and int(files) < 100000, out
    # Clones share the blocks they clone (or, where refused, cost nothing): 3 MB is charged
    # once, so 16 MiB more fails well before its end.
    assert all(x in ("ok", "err EXDEV", "err EOPNOTSUPP") for x in out[6:10]), out
    rc, size = out[10:12]
    assert rc != "rc=0" and int(size) <= 8 * MIB, out


def test_a_read_only_disk_falls_back_and_is_unmounted(tmp_path):
    # btrfs turns read-only after a write it could not make (the host filled the filesystem under
    # the image): the next sandboxes get tmpfs layers (btrfs asked for: a clear failure), and the
    # disk is unmounted once nothing uses it, to be mounted writable again.
    b = Box(SKIFF_BOX, new_instance("d"), tmp_path / "data")
    try:
        btrfs_or_skip(b)
        p = b.spawn("--", "sh", "-c", "echo ready; exec sleep 60")
        assert read_line(p) == b"ready\n"
        disk = tmp_path / "data" / "disk"
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        r = b.run(["true"], "--report", "/dev/stderr")
        assert r.returncode == 0, r.stderr
        assert "read-only" in r.stderr and '"disk_backend":"tmpfs"' in r.stderr, r.stderr
        r = b.run(["true"], "--disk-backend", "btrfs")
        assert r.returncode == 125 and "read-only" in r.stderr, r.stderr
        p.kill()
        p.wait()
        # Its cleanup helper ends it (the layer can't be removed from a read-only disk).
        assert not wait_no_leaks(b.instance)
        g = b.gc()
        assert g.returncode == 0, g.stderr
        assert wait_for(lambda: not data_disk_leaks(b.data_dir), LEAK_GRACE_S), \
            data_disk_leaks(b.data_dir)
        r = b.run(["sh", "-c", "echo x > /f"], "--report", "/dev/stderr")
        assert r.returncode == 0 and '"disk_backend":"btrfs"' in r.stderr, r.stderr
    finally:
        kill_all(b)
        end_instance(b)


def test_kill_and_gc_from_another_data_directory_remove_the_layer(box, tmp_path):
    # kill and exec take no --data: a detached sandbox's layer is found where its start recorded
    # it, not in the data directory of whoever ends it.
    btrfs_or_skip(box)
    elsewhere = {"SKIFF_DATA": str(tmp_path / "elsewhere")}
    r = box("--detach")
    assert r.returncode == 0, r.stderr
    k = box("kill", r.stdout.strip(), env=elsewhere)
    assert k.returncode == 0, k.stderr
    assert not disk_subvolumes(box.instance, box.data_dir)
    # A crash (its init killed), then gc for another data directory.
    r = box("--detach")
    assert r.returncode == 0, r.stderr
    sbid = r.stdout.strip()
    pid = next(s["pid"] for s in json.loads(box("ls", "--json").stdout) if s["id"] == sbid)
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not os.path.exists(f"/proc/{pid}/stat")
                    or open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] == "Z", 5)
    g = subprocess.run([box.binary, "gc", "--instance", box.instance], capture_output=True,
                       text=True, env=box.env(elsewhere), timeout=DEFAULT_TIMEOUT_S)
    assert g.returncode == 0, g.stderr
    assert not disk_subvolumes(box.instance, box.data_dir)
    assert not (tmp_path / "elsewhere").exists()


def test_the_last_kill_from_another_data_directory_unmounts_the_disk(tmp_path):
    # A sandbox started with data directory A, killed by a skiff-box that knows only B (kill
    # takes no --data): its layer goes, and with nothing else on A's disk, so does A's mount
    # (nobody else knows it is there).
    a = tmp_path / "a"
    a.mkdir()
    b = Box(SKIFF_BOX, new_instance("d"), a)
    try:
        btrfs_or_skip(b)
        r = b("--detach")
        assert r.returncode == 0, r.stderr
        assert data_disk_leaks(a)  # mounted while the sandbox runs
        k = b("kill", r.stdout.strip(), env={"SKIFF_DATA": str(tmp_path / "b")})
        assert k.returncode == 0, k.stderr
        assert not disk_subvolumes(b.instance, a)
        assert wait_for(lambda: not data_disk_leaks(a), 5), data_disk_leaks(a)
        assert not (tmp_path / "b").exists()
    finally:
        end_instance(b)


def test_an_image_left_mid_format_is_not_reused(tmp_path):
    # A start killed while mkfs.btrfs formats <data>/disk.img.new leaves that mkfs running: the
    # next start formats a file of its own, never the one the orphan still writes to.
    data = tmp_path / "data"
    data.mkdir()
    orphan = data / "disk.img.new"
    orphan.write_bytes(b"still being formatted")
    os.link(orphan, tmp_path / "orphan")
    b = Box(SKIFF_BOX, new_instance("d"), data)
    try:
        r = b.run(["true"], "--report", "/dev/stderr")
        assert r.returncode == 0, r.stderr
        if '"disk_backend":"btrfs"' not in r.stderr:
            pytest.skip(f"no btrfs disk on this host: {r.stderr.strip()}")
        kept = tmp_path / "orphan"
        assert kept.stat().st_size == 21 and kept.read_bytes() == b"still being formatted"
        assert not orphan.exists()
    finally:
        end_instance(b)
