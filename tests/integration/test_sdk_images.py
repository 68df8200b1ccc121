"""skiff.Image: first the client alone (immutable definitions, the spec they make, the archive
they pack, what build() sends to a stand-in of the image routes, errors before any upload); then
against a real `skiffd dev` (skipped, saying what is missing, while it has no /v1/images):
build, Sandbox.create on the image, a copied file present with its mode, a failed build."""

import hashlib
import io
import os
import sys
import threading
import tarfile
import uuid

import pytest

from conftest import REPO
from imgfake import fake  # noqa: F401 (a fixture)

sys.path.insert(0, str(REPO / "sdk" / "python"))
import skiff  # noqa: E402
from skiff.image import pack_tar  # noqa: E402

IID = "im-00000000000000000000000000"


@pytest.fixture
def fclient(fake):
    c = skiff.Client(fake.url, "test-token")
    yield c
    c.close()


@pytest.fixture
def tree(tmp_path):
    t = tmp_path / "app"
    (t / "pkg").mkdir(parents=True)
    (t / "main.py").write_text("print('hi')\n")
    (t / "tool").write_text("#!/bin/sh\necho tool\n")
    (t / "tool").chmod(0o741)
    (t / "pkg" / "x").write_bytes(b"x" * 700)
    os.symlink("main.py", t / "alias")
    return t


# ---- no server ----


def test_images_are_immutable_and_spec_keeps_the_order(tree):
    base = skiff.Image.debian_slim()
    img = (base.apt_install("curl", "jq").run_commands("make", "make install")
           .add_local_dir(str(tree), "/app").env({"A": "1"}).workdir("/app")
           .add_local_file(tree / "tool", "/usr/bin/").entrypoint(["python3", "main.py"]))
    assert base.spec() == {"base": "debian-slim", "steps": []}
    assert img.spec(name="n") == {"base": "debian-slim", "name": "n", "steps": [
        {"apt": ["curl", "jq"]}, {"run": "make"}, {"run": "make install"},
        {"copy": {"local": str(tree), "dest": "/app"}}, {"env": {"A": "1"}},
        {"workdir": "/app"}, {"copy": {"local": str(tree / "tool"), "dest": "/usr/bin/"}},
        {"entrypoint": ["python3", "main.py"]}]}
    with pytest.raises(AttributeError):
        img._steps = ()
    spec = img.spec()
    spec["steps"][0]["apt"].append("mutated")
    assert img.spec()["steps"][0] == {"apt": ["curl", "jq"]}
    assert skiff.Image.busybox().spec()["base"] == "busybox"
    assert skiff.Image.debian().spec()["base"] == "debian:bookworm"
    assert skiff.Image.from_id(IID).spec()["base"] == IID
    assert skiff.Image.from_name("web").spec()["base"] == "web"
    assert skiff.Image.from_dir("/srv/root").spec()["base"] == "dir:/srv/root"
    assert skiff.Image.from_oci_archive("x.tar").spec()["base"] == "oci-archive:x.tar"


@pytest.mark.parametrize("make", [
    lambda: skiff.Image.from_id("sb-123"),
    lambda: skiff.Image.from_name(""),
    lambda: skiff.Image.from_dir("relative"),
    lambda: skiff.Image.busybox().workdir("app"),
    lambda: skiff.Image.busybox().add_local_dir(".", "app"),
    lambda: skiff.Image.busybox().apt_install(),
    lambda: skiff.Image.busybox().run_commands(""),
    lambda: skiff.Image.busybox().env({"A=B": "x"}),
    lambda: skiff.Image.busybox().env({"A": 1}),
    lambda: skiff.Image.busybox().entrypoint("python3 main.py"),
])
def test_bad_definitions_are_refused_at_once(make):
    with pytest.raises((skiff.InvalidArgument, TypeError)):
        make()


def test_pack_is_deterministic_and_readable(tree, tmp_path):
    a, b = io.BytesIO(), io.BytesIO()
    da, na = pack_tar(tree, a)
    db, nb = pack_tar(str(tree), b)
    assert (da, na) == (db, nb) and a.getvalue() == b.getvalue()
    assert hashlib.sha256(a.getvalue()).hexdigest() == da and na % 10240 == 0
    with tarfile.open(fileobj=io.BytesIO(a.getvalue())) as t:
        ms = t.getmembers()
    assert [m.name for m in ms] == ["alias", "main.py", "pkg", "pkg/x", "tool"]
    by = {m.name: m for m in ms}
    assert by["tool"].mode == 0o741 and by["alias"].linkname == "main.py"
    assert all(m.uid == 0 and m.gid == 0 for m in ms)
    # A copy of the tree elsewhere, same contents, modes and mtimes: the same digest.
    other = tmp_path / "copy"
    import shutil
    shutil.copytree(tree, other, symlinks=True, copy_function=shutil.copy2)
    for p in [other, *other.rglob("*")]:
        src = tree / p.relative_to(other)
        st = os.lstat(src)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    assert pack_tar(other, io.BytesIO())[0] == da
    # A mode changed: another digest.
    (other / "main.py").chmod(0o600)
    assert pack_tar(other, io.BytesIO())[0] != da
    with pytest.raises(skiff.InvalidArgument):
        pack_tar(tmp_path / "missing", io.BytesIO())


def test_links_are_packed_as_links_even_when_swapped_in(tree, tmp_path, monkeypatch):
    # A link to a directory outside is an entry of its own, never followed.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("key\n")
    os.symlink(outside, tree / "out")
    f = io.BytesIO()
    pack_tar(tree, f)
    with tarfile.open(fileobj=io.BytesIO(f.getvalue())) as t:
        by = {m.name: m for m in t.getmembers()}
    assert by["out"].issym() and by["out"].linkname == str(outside)
    assert not any("secret" in n for n in by)
    # A directory swapped for a link to outside after it was listed: not followed either.
    def swapping(real):
        def stat_then_swap(path, *a, **kw):
            st = real(path, *a, **kw)
            if os.fsdecode(path).endswith("pkg") and not (tree / "pkg.real").exists():
                os.rename(tree / "pkg", tree / "pkg.real")
                os.symlink(outside, tree / "pkg")
            return st
        return stat_then_swap

    monkeypatch.setattr(os, "stat", swapping(os.stat))
    monkeypatch.setattr(os, "lstat", swapping(os.lstat))
    f = io.BytesIO()
    with pytest.raises(skiff.SkiffError, match="changed while it was being packed"):
        pack_tar(tree, f)
    assert b"key\n" not in f.getvalue()


def test_build_uploads_then_posts(fake, fclient, tree):
    img = (skiff.Image.busybox().add_local_dir(tree, "/app/")
           .add_local_file(tree / "tool", "/usr/bin/t").env({"K": "V"}))
    seen = []
    assert img.build(client=fclient, name="web", logs=seen.append) == IID
    dir_hex = pack_tar(tree, io.BytesIO())[0]
    file_hex = pack_tar(tree / "tool", io.BytesIO(), "t")[0]
    assert fake.posted() == [{"base": "busybox", "name": "web", "steps": [
        {"copy": {"blob": f"sha256:{dir_hex}", "dest": "/app"}},
        {"copy": {"blob": f"sha256:{file_hex}", "dest": "/usr/bin"}},
        {"env": {"K": "V"}}]}]
    assert set(fake.blobs) == {dir_hex, file_hex}
    assert "".join(seen) == fake.logs.decode()
    # Again: the server has both blobs; only the build is posted.
    img.build(client=fclient)
    assert len(fake.puts()) == 2 and len(fake.posted()) == 2


def test_build_checks_every_local_before_uploading(fake, fclient, tree):
    img = skiff.Image.busybox().add_local_dir(tree, "/app").add_local_dir(tree / "nope", "/b")
    with pytest.raises(skiff.InvalidArgument, match="nope"):
        img.build(client=fclient)
    with pytest.raises(skiff.InvalidArgument, match="not a directory"):
        skiff.Image.busybox().add_local_dir(tree / "tool", "/b").build(client=fclient)
    with pytest.raises(skiff.InvalidArgument, match="not a file"):
        skiff.Image.busybox().add_local_file(tree / "pkg", "/b").build(client=fclient)
    for dest in ("/etc/..", "/etc/.", "/."):
        with pytest.raises(skiff.InvalidArgument, match="must end with the name"):
            skiff.Image.busybox().add_local_file(tree / "tool", dest).build(client=fclient)
    os.mkfifo(tree / "pkg" / "fifo")
    with pytest.raises(skiff.InvalidArgument, match="only regular files"):
        skiff.Image.busybox().add_local_dir(tree, "/app").build(client=fclient)
    assert fake.puts() == [] and fake.posted() == []


def test_bad_input_deep_in_a_later_tree_uploads_nothing(fake, fclient, tree, tmp_path):
    # Found only while packing the second copy: neither the base nor the first copy may have
    # been uploaded.
    arc = tmp_path / "img.tar"
    arc.write_bytes(os.urandom(3000))
    other = tmp_path / "other"
    (other / "a").mkdir(parents=True)
    os.mkfifo(other / "a" / "fifo")
    img = skiff.Image.from_oci_archive(arc).add_local_dir(tree, "/app") \
        .add_local_dir(other, "/other")
    with pytest.raises(skiff.InvalidArgument, match="fifo"):
        img.build(client=fclient)
    assert fake.requests == []


def test_an_archive_changed_during_upload_is_sent_as_hashed(fake, fclient, tmp_path):
    arc = tmp_path / "img.tar"
    data = os.urandom(1 << 20)
    arc.write_bytes(data)
    fake.on_head = lambda: arc.write_bytes(os.urandom(1 << 20))  # same size, other bytes
    skiff.Image.from_oci_archive(arc).build(client=fclient)
    hexd = hashlib.sha256(data).hexdigest()
    assert fake.blobs == {hexd: data}
    assert fake.posted()[0]["base"] == f"oci-archive:sha256:{hexd}"


def test_failed_build_raises_naming_the_step(fake, fclient):
    fake.final_state = "failed"
    fake.error = "step 2 (false) failed: exit code 1"  # as skiffd says it
    with pytest.raises(skiff.ImageBuildError) as e:
        skiff.Image.busybox().run_commands("true", "false").build(client=fclient)
    assert e.value.step == 2 and e.value.image_id == IID and "step 2 (false)" in str(e.value)
    fake.error = {"message": "exit code 1", "step": 2}  # a structured one
    with pytest.raises(skiff.ImageBuildError) as e:
        skiff.Image.busybox().run_commands("true", "false").build(client=fclient)
    assert e.value.step == 2 and "at step 2: exit code 1" in str(e.value)


def test_logs_followed_again_after_a_cut_stream(fake, fclient):
    # The stream drops mid-build, a character cut between two reads: the output goes on from
    # where it stopped, whole, nothing repeated.
    fake.logs = "step 1: \u00fc\nstep 2: done\n".encode()
    # Each request sends the log from its start: the second one's first 15 bytes were
    # passed already; the build ends while the second stream is cut short too.
    fake.follow_pieces = [[fake.logs[:9], fake.logs[9:15]], [fake.logs[:20]]]
    seen = []
    assert skiff.Image.busybox().run_commands("x").build(client=fclient,
                                                         logs=seen.append) == IID
    assert "".join(seen) == fake.logs.decode() and fake.follows == 2


def test_timeout_bounds_a_build_whose_output_is_followed(fake, fclient):
    fake.final_state = "building"
    fake.hang_follow = True
    out = {}

    def build():
        try:
            skiff.Image.busybox().run_commands("x").build(client=fclient, logs=print,
                                                          timeout_s=1)
        except Exception as e:  # noqa: BLE001 (checked below)
            out["error"] = e

    t = threading.Thread(target=build, daemon=True)
    t.start()
    t.join(60)  # a bound far past timeout_s, so the test cannot hang
    assert not t.is_alive(), "build() went on following the output past timeout_s"
    assert isinstance(out.get("error"), skiff.DeadlineExceeded), out


def test_a_server_busy_for_a_while_is_waited_out(fake, fclient):
    fake.get_failures = 3
    seen = []
    assert skiff.Image.busybox().run_commands("x").build(client=fclient,
                                                         logs=seen.append) == IID
    assert fake.get_failures == 0 and "".join(seen) == fake.logs.decode()


def test_oci_archive_uploaded_as_it_is(fake, fclient, tmp_path):
    arc = tmp_path / "img.tar"
    arc.write_bytes(os.urandom(4000))
    skiff.Image.from_oci_archive(arc).build(client=fclient)
    hexd = hashlib.sha256(arc.read_bytes()).hexdigest()
    assert fake.blobs[hexd] == arc.read_bytes()
    assert fake.posted()[0]["base"] == f"oci-archive:sha256:{hexd}"


def test_sandbox_create_builds_an_image_first(fake, fclient):
    with pytest.raises(skiff.NotFound):  # the stand-in has no sandboxes
        skiff.Sandbox.create(image=skiff.Image.busybox().run_commands("true"), client=fclient)
    assert len(fake.posted()) == 1
    body = [b for m, p, b in fake.requests if p == "/v1/sandboxes"]
    assert body and b'"image":"' + IID.encode() + b'"' in body[0]
    with pytest.raises(TypeError):
        skiff.Sandbox.create(image=3, client=fclient)
    # Nothing to build: the image is named as it is.
    for img, ref in ((skiff.Image.from_id(IID), IID), (skiff.Image.from_name("web"), "web"),
                     (skiff.Image.busybox(), "busybox")):
        with pytest.raises(skiff.NotFound):
            skiff.Sandbox.create(image=img, client=fclient)
        assert f'"image":"{ref}"'.encode() in fake.requests[-1][2]
    assert len(fake.posted()) == 1


# ---- against skiffd ----


@pytest.fixture
def client(skiffd):
    s, _ = skiffd.api("GET", "/v1/images")
    if s != 200:
        pytest.skip("skiffd has no /v1/images yet (the image API is not built in)")
    c = skiff.Client(skiffd.url, skiffd.token)
    yield c
    c.close()


def test_build_and_start_a_sandbox_on_it(client, tree):
    name = "sdk-" + uuid.uuid4().hex[:10]
    lines = []
    img = (skiff.Image.busybox().add_local_dir(tree, "/app").workdir("/app")
           .env({"GREETING": "hello"}).run_commands("echo built-it"))
    iid = img.build(client=client, name=name, logs=lines.append)
    assert iid.startswith("im-") and "built-it" in "".join(lines)
    assert client.images.get(name)["id"] == iid
    assert iid in [i["id"] for i in client.images.list()]
    # The image's env and workdir are the main command's defaults.
    sb = skiff.Sandbox.create(image=name, client=client, timeout_s=60, command=[
        "sh", "-c", "echo $GREETING; pwd; stat -c %a tool; cat main.py"])
    try:
        assert sb.wait(timeout_s=30) == 0
        assert sb.logs().decode().split("\n")[:4] == ["hello", "/app", "741", "print('hi')"]
    finally:
        sb.terminate()
    # An Image given to create is built (the server's cache makes it quick) and used.
    with skiff.Sandbox.create(image=img, client=client) as sb:
        assert sb.exec("cat", "/app/pkg/x").stdout == b"x" * 700
    client.images.delete(iid)
    with pytest.raises(skiff.NotFound):
        client.images.get(iid)


def test_failed_build_names_the_step_against_skiffd(client):
    with pytest.raises(skiff.ImageBuildError) as e:
        skiff.Image.busybox().run_commands("true", "exit 3").build(client=client)
    # Steps counted from 1, as the server counts them.
    assert e.value.step == 2 and "exit 3" in str(e.value), e.value
    assert e.value.image_id.startswith("im-") and e.value.image["state"] == "failed"


def test_snapshot_then_create_on_it(client):
    with skiff.Sandbox.create(client=client, timeout_s=60) as sb:
        sb.exec("sh", "-c", "echo kept > /root-file")
        iid = sb.snapshot()
    assert client.images.get(iid)["state"] == "ready"
    with skiff.Sandbox.create(image=skiff.Image.from_id(iid), client=client) as sb2:
        assert sb2.exec("cat", "/root-file").stdout == b"kept\n"
    client.images.delete(iid)
