"""`skiff image …`: first what the client sends, against a stand-in of the image routes on
loopback (bad input exits 2 and sends nothing; copies are packed deterministically and uploaded
once; the body keeps the steps' order; the exit status follows the build); then builds against
a real `skiffd dev` (skipped, saying what is missing, while the server has no /v1/images)."""

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import uuid

import pytest

from conftest import REPO, wait_for
from imgfake import fake  # noqa: F401 (a fixture)
from test_cli import SKIFF, run, skiff_env

sys.path.insert(0, str(REPO / "sdk" / "python"))
import skiff  # noqa: E402
from skiff.image import pack_tar  # noqa: E402


IID = "im-00000000000000000000000000"


@pytest.fixture
def fenv(fake, tmp_path):
    return skiff_env(tmp_path / "config", fake.url, "test-token")


@pytest.fixture
def tree(tmp_path):
    """A small tree: nested directories, modes, an old mtime, a symbolic link, a long path."""
    t = tmp_path / "tree"
    (t / "sub" / "deep").mkdir(parents=True)
    (t / "empty").mkdir()
    (t / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (t / "run.sh").chmod(0o750)
    (t / "sub" / "deep" / "data").write_bytes(os.urandom(3000))
    os.utime(t / "sub" / "deep" / "data", (1_000_000_000, 1_000_000_000))
    os.symlink("../run.sh", t / "sub" / "link")
    long_dir = t / ("d" * 90) / ("e" * 60)
    long_dir.mkdir(parents=True)
    (long_dir / "f").write_text("long\n")
    # Names as bytes, sorted bytewise by both clients.
    (t / "sub" / "\u00fc name").write_text("u\n")
    (t / "sub" / "Zebra").write_text("z\n")
    return t


def digest_of(local, name=None):
    f = io.BytesIO()
    hexd, size = pack_tar(local, f, name)
    assert len(f.getvalue()) == size
    return hexd, f.getvalue()


# ---- no server: the client alone ----


def test_help_names_the_options(tmp_path):
    e = skiff_env(tmp_path)
    assert "image" in run(e, "--help", check=0).stdout
    out = run(e, "image", "--help", check=0).stdout
    assert all(c in out for c in ("build", "ls", "show", "logs", "rm"))
    out = run(e, "image", "build", "--help", check=0).stdout
    for opt in ("--from", "--apt", "--run", "--copy", "--env", "--workdir", "--entrypoint",
                "--name", "--detach", "-f SPEC.json", "oci-archive:FILE", "dir:PATH"):
        assert opt in out, opt


@pytest.mark.parametrize("args, says", [
    (["--copy", "nocolon"], "LOCAL:DEST"),
    (["--copy", "./x:relative"], "LOCAL:DEST"),
    (["--copy", ":/app"], "LOCAL:DEST"),
    (["--apt", "a,,b"], "empty package"),
    (["--run", ""], "--run"),
    (["--workdir", "app"], "absolute"),
    (["--env", "=x"], "--env"),
    (["--entrypoint", "[1, 2]"], "JSON array of strings"),
    (["--entrypoint", " "], "--entrypoint"),
    (["--bogus"], "bogus"),
    (["--from"], "--from"),
    (["-f", "spec.json", "--run", "true"], "-f"),
    (["unexpected"], "unexpected"),
    (["--copy", "/nonexistent-dir-for-test:/app"], "/nonexistent-dir-for-test"),
    (["--from", "oci-archive:/nonexistent.tar"], "/nonexistent.tar"),
    (["--from", "oci-archive:/"], "not a regular file"),
    (["-f", "/nonexistent-spec.json"], "/nonexistent-spec.json"),
])
def test_bad_input_exits_2_and_sends_nothing(fake, fenv, args, says):
    p = run(fenv, "image", "build", *args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert says in p.stderr and p.stderr.startswith("skiff: ")
    assert "usage: skiff image build" in p.stderr
    assert fake.requests == []


def test_a_missing_copy_uploads_none_of_the_others(fake, fenv, tree):
    p = run(fenv, "image", "build", "--copy", f"{tree}:/app", "--run", "true",
            "--copy", f"{tree}/missing:/m")
    # Steps counted from 1, as the server's build log counts them.
    assert p.returncode == 2 and "step 3 (copy)" in p.stderr and "missing" in p.stderr
    assert fake.requests == []


def test_spec_file_errors_exit_2(fake, fenv, tmp_path, tree):
    bad = [
        ("[]", "expected a JSON object"),
        ('{"steps": 3}', "not an array"),
        ('{"steps": [{"copy": {"local": "./nope", "dest": "/a"}}]}', "nope"),
        ('{"steps": [{"copy": {"local": "tree", "dest": "rel"}}]}', "absolute"),
        ('{"steps": [{"copy": {"local": "tree", "dest": "/a", "blob": "sha256:00"}}]}',
         "both"),
        ('{"base": "busybox", ', "line"),
    ]
    for text, says in bad:
        spec = tmp_path / "spec.json"
        spec.write_text(text)
        p = run(fenv, "image", "build", "-f", str(spec))
        assert p.returncode == 2 and says in p.stderr, (text, p.stderr)
    p = run(fenv, "image", "build", "-f", str(tmp_path))  # a directory
    assert p.returncode == 2 and "not a regular file" in p.stderr, p.stderr
    for dest in ("/etc/..", "/etc/.", "/."):
        p = run(fenv, "image", "build", "--copy", f"{tree}/run.sh:{dest}")
        assert p.returncode == 2 and "must end with the name" in p.stderr, (dest, p.stderr)
    p = run(fenv, "image", "build", "--copy", f"{tree}:/app/..", "--detach")  # a directory's
    assert p.returncode == 0, p.stderr
    fake.requests.clear()
    big = tmp_path / "big.json"
    big.write_text('{"name": "' + "x" * (300 << 10) + '"}')
    p = run(fenv, "image", "build", "-f", str(big))
    assert p.returncode == 2 and "larger than" in p.stderr
    assert fake.requests == []


def test_build_sends_steps_in_order_and_uploads_once(fake, fenv, tree):
    args = ["image", "build", "--from", "debian-slim", "--apt", "curl,jq", "--run", "make",
            "--copy", f"{tree}:/app//", "--env", "A=1", "--env", "B=x=y",
            "--copy", f"{tree}/run.sh:/usr/local/bin/start", "--copy", f"{tree}/run.sh:/opt/",
            "--workdir", "/app", "--entrypoint", "sh -c  'x'", "--name", "web"]
    p = run(fenv, *args, check=0)
    assert p.stdout == "im-00000000000000000000000000\n"
    assert "step 1/1: done" in p.stderr  # the build's output, on stderr
    tree_hex, tree_tar = digest_of(tree)
    start_hex, _ = digest_of(tree / "run.sh", "start")
    opt_hex, _ = digest_of(tree / "run.sh", "run.sh")
    assert fake.posted() == [{
        "base": "debian-slim", "name": "web",
        "steps": [
            {"apt": ["curl", "jq"]},
            {"run": "make"},
            {"copy": {"blob": f"sha256:{tree_hex}", "dest": "/app"}},
            {"env": {"A": "1", "B": "x=y"}},
            {"copy": {"blob": f"sha256:{start_hex}", "dest": "/usr/local/bin"}},
            {"copy": {"blob": f"sha256:{opt_hex}", "dest": "/opt"}},
            {"workdir": "/app"},
            {"entrypoint": ["sh", "-c", "'x'"]},
        ]}]
    # The CLI's archive is the SDK's, byte for byte.
    assert fake.blobs[tree_hex] == tree_tar
    assert len(fake.puts()) == 3
    # Built again: the server has every blob, so nothing is uploaded.
    run(fenv, *args, check=0)
    assert len(fake.puts()) == 3


def test_archive_is_deterministic_and_keeps_what_it_says(fake, fenv, tree):
    run(fenv, "image", "build", "--copy", f"{tree}:/app", "--detach", check=0)
    (hexd,) = fake.blobs
    data = fake.blobs[hexd]
    assert hashlib.sha256(data).hexdigest() == hexd and len(data) % 10240 == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        members = t.getmembers()
    names = [m.name for m in members]
    assert names[:2] == ["d" * 90, "d" * 90 + "/" + "e" * 60]
    assert names[3:] == ["empty", "run.sh", "sub", "sub/Zebra", "sub/deep", "sub/deep/data",
                         "sub/link", "sub/\u00fc name"]
    by = {m.name: m for m in members}
    assert all(m.uid == 0 and m.gid == 0 and m.uname == "" for m in members)
    assert by["run.sh"].mode == 0o750 and by["sub/deep/data"].mtime == 1_000_000_000
    assert by["sub/link"].issym() and by["sub/link"].linkname == "../run.sh"
    assert by["sub/deep/data"].size == 3000
    # Another run of the same tree: the same bytes; a changed mtime: others.
    fake.blobs.clear()
    run(fenv, "image", "build", "--copy", f"{tree}:/app", "--detach", check=0)
    assert list(fake.blobs) == [hexd]
    os.utime(tree / "run.sh", (2_000_000_000, 2_000_000_000))
    run(fenv, "image", "build", "--copy", f"{tree}:/app", "--detach", check=0)
    assert len(fake.blobs) == 2


def test_an_empty_directory_is_the_same_archive_from_both(fake, fenv, tmp_path):
    (tmp_path / "empty").mkdir()
    run(fenv, "image", "build", "--copy", f"{tmp_path}/empty:/", "--detach", check=0)
    hexd, data = digest_of(tmp_path / "empty")
    assert fake.blobs == {hexd: data} and len(data) == 10240
    assert fake.posted()[0]["steps"] == [{"copy": {"blob": f"sha256:{hexd}", "dest": "/"}}]


def test_both_clients_pack_edge_cases_alike(fake, fenv, tmp_path):
    # Where two tar writers most easily differ: names at the 100-byte split, a path split
    # into prefix and name, set-id and sticky bits, mtimes before 1970 and past the 11
    # octal digits, a 100-byte link target, hard links, a link to a directory outside.
    d = tmp_path / "edge"
    (d / ("p" * 50)).mkdir(parents=True)
    (d / ("a" * 100)).write_text("a\n")
    (d / ("b" * 99)).mkdir()
    (d / ("p" * 50) / ("f" * 50)).write_text("f\n")
    (d / ("q" * 60) / ("r" * 60)).mkdir(parents=True)
    (d / ("q" * 60) / ("r" * 60) / "g").write_text("")
    (d / "suid").write_text("s\n")
    (d / "suid").chmod(0o4755)
    (d / "sticky").mkdir()
    (d / "sticky").chmod(0o1777)
    (d / "old").write_text("")
    os.utime(d / "old", (-100, -100))
    (d / "far").write_text("")
    os.utime(d / "far", (2**34, 2**34))
    os.symlink("l" * 100, d / "l100")
    os.link(d / "suid", d / "hard")
    os.symlink(tmp_path, d / "outside")
    run(fenv, "image", "build", "--copy", f"{d}:/app", "--detach", check=0)
    hexd, data = digest_of(d)
    assert fake.blobs == {hexd: data}
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        by = {m.name: m for m in t.getmembers()}
    assert by["suid"].mode == 0o4755 and by["sticky"].mode == 0o1777
    assert by["outside"].issym() and by["far"].mtime == 0o77777777777


def test_things_that_cannot_be_copied_are_refused(fake, fenv, tree):
    os.mkfifo(tree / "sub" / "fifo")
    p = run(fenv, "image", "build", "--copy", f"{tree}:/app")
    assert p.returncode == 2 and "fifo" in p.stderr and "only regular files" in p.stderr
    assert fake.puts() == [] and fake.posted() == []


def test_bad_input_deep_in_a_later_tree_uploads_nothing(fake, fenv, tree, tmp_path):
    # Found only while packing the second copy (and after the base's archive was read): the
    # first copy and the base must not have been uploaded either.
    arc = tmp_path / "img.tar"
    arc.write_bytes(os.urandom(3000))
    other = tmp_path / "other"
    (other / "a" / "b").mkdir(parents=True)
    os.mkfifo(other / "a" / "b" / "fifo")
    p = run(fenv, "image", "build", "--from", f"oci-archive:{arc}", "--copy", f"{tree}:/app",
            "--copy", f"{other}:/other")
    assert p.returncode == 2 and "step 2 (copy)" in p.stderr and "fifo" in p.stderr, p.stderr
    assert fake.requests == []


def test_an_archive_changed_during_upload_is_sent_as_hashed(fake, fenv, tmp_path):
    # The file shrinks after it was hashed, before it is sent: what is sent is what was
    # hashed (no crash reading past the file's new end, no digest the bytes do not match).
    arc = tmp_path / "img.tar"
    data = os.urandom(1 << 20)
    arc.write_bytes(data)
    fake.on_head = lambda: arc.write_bytes(b"short")
    p = run(fenv, "image", "build", "--from", f"oci-archive:{arc}", "--detach")
    assert p.returncode == 0, p.stderr
    hexd = hashlib.sha256(data).hexdigest()
    assert fake.blobs == {hexd: data}
    assert fake.posted()[0]["base"] == f"oci-archive:sha256:{hexd}"


def test_the_cli_says_what_a_spec_file_uploads(fake, fenv, tmp_path):
    # A spec's "local" may reach outside its directory: the user is told which file went.
    secret = tmp_path / "secret"
    secret.write_text("key\n")
    (tmp_path / "specs").mkdir()
    spec = tmp_path / "specs" / "spec.json"
    spec.write_text(json.dumps({"steps": [{"copy": {"local": "../secret", "dest": "/k"}}]}))
    p = run(fenv, "image", "build", "-f", str(spec), "--detach")
    hexd, _ = digest_of(secret, "k")
    shown = f"{tmp_path}/specs/../secret"
    assert f"skiff: step 1 (copy): {shown}: 10 KiB, sha256:{hexd[:12]}, uploaded\n" in p.stderr
    p = run(fenv, "image", "build", "-f", str(spec), "--detach")
    assert f"{shown}: 10 KiB, sha256:{hexd[:12]}, already on the server\n" in p.stderr
    assert len(fake.puts()) == 1


@pytest.mark.parametrize("path", ["x" * 150, "d" * 60 + "/" + "e" * 101])
def test_a_path_a_tar_cannot_hold_is_bad_input(fake, fenv, tmp_path, path):
    d = tmp_path / "d"
    (d / path).parent.mkdir(parents=True, exist_ok=True)
    (d / path).write_text("x\n")
    p = run(fenv, "image", "build", "--copy", f"{d}:/app")
    assert p.returncode == 2 and "at most 100 bytes" in p.stderr, p.stderr
    assert path.split("/")[-1] in p.stderr
    with pytest.raises(skiff.InvalidArgument, match="too long"):
        pack_tar(d, io.BytesIO())
    assert fake.requests == []


@pytest.mark.parametrize("name", [b"caf\xe9", b"ok"])
def test_names_that_are_not_utf8_are_refused(fake, fenv, tmp_path, name):
    d = tmp_path / "d"
    d.mkdir()
    if name == b"ok":  # a link whose target is not UTF-8
        os.symlink(b"caf\xe9", os.path.join(os.fsencode(d), name))
    else:
        open(os.path.join(os.fsencode(d), name), "wb").close()
    p = subprocess.run([str(SKIFF), "image", "build", "--copy", f"{d}:/app"], env=fenv,
                       capture_output=True, timeout=60)
    assert p.returncode == 2 and b"not valid UTF-8" in p.stderr, p.stderr
    with pytest.raises(skiff.InvalidArgument, match="not valid UTF-8"):
        pack_tar(d, io.BytesIO())
    assert fake.requests == []


def test_failed_build_exits_1_naming_the_step(fake, fenv):
    fake.final_state = "failed"
    fake.error = "step 2 (false) failed: exit code 1"  # as skiffd says it
    p = run(fenv, "image", "build", "--run", "true", "--run", "false")
    assert p.returncode == 1 and p.stdout == ""
    assert "im-00000000000000000000000000 failed: step 2 (false)" in p.stderr
    fake.error = {"message": "exit code 1", "step": 2}  # a structured one
    p = run(fenv, "image", "build", "--run", "true", "--run", "false")
    assert p.returncode == 1 and "failed at step 2: exit code 1" in p.stderr


def test_interrupt_leaves_the_build_going(fake, fenv):
    fake.final_state = "building"  # never ends
    proc = subprocess.Popen([str(SKIFF), "image", "build", "--run", "sleep 1000"], env=fenv,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: sum(p.startswith("/v1/images/im-") and "logs" not in p
                                    for _, p, _ in fake.requests) >= 2, 30)
        proc.send_signal(signal.SIGINT)
        out, errs = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130 and out == ""
    assert "goes on" in errs and "skiff image logs -f im-" in errs
    assert not any(m == "DELETE" for m, _, _ in fake.requests)


def test_build_output_followed_again_after_a_cut_stream(fake, fenv):
    # The stream drops mid-build twice (each request resends the log from its start), the
    # build ending meanwhile: every byte printed once, in order.
    fake.logs = "step 1: \u00fc\nstep 2: done\n".encode()
    fake.follow_pieces = [[fake.logs[:9], fake.logs[9:15]], [fake.logs[:20]]]
    p = run(fenv, "image", "build", "--run", "x")
    assert p.returncode == 0 and p.stdout == IID + "\n", p.stderr
    assert p.stderr == fake.logs.decode() and fake.follows == 2


def test_logs_follow_goes_on_after_a_cut_stream(fake, fenv):
    # `skiff image logs -f` as the build's own follow: every byte once, in order, and done
    # when the build has ended.
    fake.logs = "step 1: \u00fc\nstep 2: done\n".encode()
    fake.follow_pieces = [[fake.logs[:9], fake.logs[9:15]], [fake.logs[:20]]]
    p = run(fenv, "image", "logs", "-f", "im-x")
    assert p.returncode == 0, p.stderr
    assert p.stdout == fake.logs.decode() and fake.follows == 2


def test_a_server_busy_for_a_while_is_waited_out(fake, fenv):
    fake.get_failures = 3
    p = run(fenv, "image", "build", "--run", "x")
    assert p.returncode == 0 and p.stdout == IID + "\n", p.stderr
    assert "trying again" in p.stderr and fake.get_failures == 0


def test_detach_prints_the_id_at_once(fake, fenv):
    p = run(fenv, "image", "build", "--run", "true", "--detach", check=0)
    assert p.stdout == "im-00000000000000000000000000\n"
    assert [m for m, _, _ in fake.requests] == ["POST"]


def test_oci_archive_is_uploaded_as_it_is(fake, fenv, tmp_path):
    arc = tmp_path / "img.tar"
    arc.write_bytes(os.urandom(5000))
    run(fenv, "image", "build", "--from", f"oci-archive:{arc}", "--detach", check=0)
    hexd = hashlib.sha256(arc.read_bytes()).hexdigest()
    assert fake.blobs[hexd] == arc.read_bytes()
    assert fake.posted()[0]["base"] == f"oci-archive:sha256:{hexd}"
    # A digest is passed through.
    run(fenv, "image", "build", "--from", f"oci-archive:sha256:{hexd}", "--detach", check=0)
    assert fake.posted()[1]["base"] == f"oci-archive:sha256:{hexd}"


def test_spec_file_locals_are_relative_to_it(fake, fenv, tree, tmp_path):
    spec = tmp_path / "spec.json"
    (tmp_path / "img.tar").write_bytes(b"an archive")
    spec.write_text(json.dumps({"base": "oci-archive:img.tar", "steps": [
        {"copy": {"local": "tree", "dest": "/app"}}, {"run": "ls /app"}]}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    p = subprocess.run([str(SKIFF), "image", "build", "-f", str(spec), "--name", "n1"],
                       env=fenv, cwd=elsewhere, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    tree_hex, _ = digest_of(tree)
    arc_hex = hashlib.sha256(b"an archive").hexdigest()
    assert fake.posted() == [{"base": f"oci-archive:sha256:{arc_hex}", "name": "n1", "steps": [
        {"copy": {"blob": f"sha256:{tree_hex}", "dest": "/app"}}, {"run": "ls /app"}]}]


def test_ls_show_logs_rm_reach_their_routes(fake, fenv):
    p = run(fenv, "image", "show", "my image", check=0)
    assert json.loads(p.stdout)["state"] == "ready"
    assert run(fenv, "image", "logs", "im-x", check=0).stdout == fake.logs.decode()
    run(fenv, "image", "logs", "-f", "im-x", check=0)
    p = run(fenv, "image", "rm", "im-a", "im-b")
    assert p.returncode == 1  # the stand-in has no DELETE
    assert [(m, pth) for m, pth, _ in fake.requests] == [
        ("GET", "/v1/images/my%20image"), ("GET", "/v1/images/im-x/logs"),
        ("GET", "/v1/images/im-x/logs?follow=true"), ("DELETE", "/v1/images/im-a"),
        ("DELETE", "/v1/images/im-b")]
    for args in (["show"], ["show", "a", "b"], ["logs"], ["rm"], ["ls", "x"]):
        assert run(fenv, "image", *args).returncode == 2, args


# ---- against skiffd ----


def has_images(skiffd):
    s, _ = skiffd.api("GET", "/v1/images")
    return s == 200


@pytest.fixture
def ienv(skiffd, tmp_path):
    if not has_images(skiffd):
        pytest.skip("skiffd has no /v1/images yet (the image API is not built in)")
    return skiff_env(tmp_path / "config", skiffd.url, skiffd.token)


def test_build_run_and_remove(ienv, skiffd, tree):
    name = "cli-" + uuid.uuid4().hex[:10]
    p = run(ienv, "image", "build", "--copy", f"{tree}:/app", "--env", "GREETING=hello",
            "--workdir", "/app", "--run", "echo building-now; ls /app/sub/deep",
            "--name", name)
    assert p.returncode == 0, p.stderr
    iid = p.stdout.strip()
    assert iid.startswith("im-") and "building-now" in p.stderr and "data" in p.stderr
    items = json.loads(run(ienv, "image", "ls", "--json", check=0).stdout)
    assert [i["state"] for i in items if i["id"] == iid] == ["ready"]
    size = next(i["size"] for i in items if i["id"] == iid)
    row = next(line for line in run(ienv, "image", "ls", check=0).stdout.splitlines()
               if line.startswith(iid))
    # The size as a person reads it: N B under a KiB, else one decimal of the largest unit.
    shown_size = f"{size} B" if size < 1024 else next(
        f"{size / 1024 ** k:.1f} {u}" for k, u in ((3, "GiB"), (2, "MiB"), (1, "KiB"))
        if size >= 1024 ** k)
    assert f"  {shown_size}  " in row, (row, size)
    shown = json.loads(run(ienv, "image", "show", name, check=0).stdout)
    assert shown["id"] == iid
    assert "building-now" in run(ienv, "image", "logs", iid, check=0).stdout
    # The image's env and workdir are the main command's defaults.
    sid = run(ienv, "sandbox", "create", "--image", name, "--timeout", "60", "--",
              "sh", "-c", 'echo $GREETING; pwd; stat -c %a run.sh; cat sub/deep/data | wc -c',
              check=0).stdout.strip()
    run(ienv, "sandbox", "wait", sid, "--timeout", "30", check=0)
    assert run(ienv, "sandbox", "logs", sid, check=0).stdout.split() == [
        "hello", "/app", "750", "3000"]
    run(ienv, "sandbox", "rm", sid, check=0)
    # By id too, with `sandbox run`.
    p = run(ienv, "sandbox", "run", "--image", iid, "--", "readlink", "/app/sub/link")
    assert (p.returncode, p.stdout) == (0, "../run.sh\n"), p.stderr
    run(ienv, "image", "rm", iid, check=0)
    assert run(ienv, "image", "show", iid).returncode == 1


def test_failed_build_names_the_step(ienv):
    p = run(ienv, "image", "build", "--run", "true", "--run", "echo out-of-step; exit 3")
    assert p.returncode == 1 and p.stdout == ""
    # The step is named, by its number (from 1) and its command, and its output was shown.
    last = p.stderr.splitlines()[-1]
    assert last.startswith("skiff: image im-") and " failed: " in last
    assert "step 2 (" in last and "exit 3" in last and "exit code 3" in last, last
    assert "out-of-step" in p.stderr


def test_spec_file_on_a_server_directory(ienv, custom_root, tree, tmp_path):
    """A dir: base (admin) and a spec file whose copy names a local directory."""
    (custom_root / "marker").write_text("from-the-dir\n")
    spec = tmp_path / "image.json"
    spec.write_text(json.dumps({"base": f"dir:{custom_root}", "steps": [
        {"copy": {"local": "tree/sub", "dest": "/srv"}},
        {"env": {"WHERE": "spec"}}, {"workdir": "/srv"}]}))
    p = run(ienv, "image", "build", "-f", str(spec))
    assert p.returncode == 0, p.stderr
    iid = p.stdout.strip()
    p = run(ienv, "sandbox", "run", "--image", iid, "--",
            "sh", "-c", "cat /marker; echo $WHERE; wc -c < /srv/deep/data")
    assert (p.returncode, p.stdout.split()) == (0, ["from-the-dir", "spec", "3000"]), p.stderr
    run(ienv, "image", "rm", iid, check=0)


def test_a_refused_token_is_said_before_any_upload(ienv, skiffd, tree):
    ienv["SKIFF_TOKEN"] = "sk_not_a_token"
    p = run(ienv, "image", "build", "--copy", f"{tree}:/app")
    assert p.returncode == 1 and "refused the token" in p.stderr, p.stderr


def test_a_viewer_may_not_upload(ienv, skiffd, tree):
    s, t = skiffd.api("POST", "/v1/tokens", {"name": "v" + uuid.uuid4().hex[:8],
                                             "role": "viewer"})
    assert s == 201, t
    ienv["SKIFF_TOKEN"] = t["secret"]
    p = run(ienv, "image", "build", "--copy", f"{tree}:/app")
    # It may look (HEAD) but not upload: the server's refusal of the PUT is shown.
    assert p.returncode == 1 and "viewer may not PUT /v1/blobs" in p.stderr, p.stderr
    skiffd.api("DELETE", f"/v1/tokens/{t['id']}")


def test_snapshot_becomes_an_image(ienv):
    sid = run(ienv, "sandbox", "create", "--timeout", "60", check=0).stdout.strip()
    try:
        run(ienv, "sandbox", "exec", sid, "--", "sh", "-c",
            "mkdir -p /data && echo kept > /data/f && chmod 640 /data/f", check=0)
        name = "snap-" + uuid.uuid4().hex[:8]
        iid = run(ienv, "sandbox", "snapshot", sid, "--name", name, check=0).stdout.strip()
        assert iid.startswith("im-")
    finally:
        run(ienv, "sandbox", "rm", sid, check=0)
    p = run(ienv, "sandbox", "run", "--image", name, "--", "sh", "-c",
            "cat /data/f; stat -c %a /data/f")
    assert (p.returncode, p.stdout.split()) == (0, ["kept", "640"]), p.stderr
    assert run(ienv, "sandbox", "snapshot", sid).returncode == 1  # ended: refused
    run(ienv, "image", "rm", iid, check=0)


def test_snapshot_usage_errors(tmp_path):
    e = skiff_env(tmp_path)
    for args in (["snapshot"], ["snapshot", "a", "b"], ["snapshot", "a", "--name"]):
        p = run(e, "sandbox", *args)
        assert p.returncode == 2 and "usage: skiff sandbox snapshot" in p.stderr, args


def oci_archive(root, path, env):
    """An OCI image layout as a tar at path: one layer (root's files) and a config with env."""
    blobs = {}

    def blob(data):
        h = hashlib.sha256(data).hexdigest()
        blobs[h] = data
        return {"digest": f"sha256:{h}", "size": len(data)}

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as t:
        t.add(root, arcname=".")
    lay = blob(layer.getvalue())
    cfg = blob(json.dumps({"architecture": "amd64", "os": "linux",
                           "config": {"Env": env, "WorkingDir": "/"},
                           "rootfs": {"type": "layers", "diff_ids": [lay["digest"]]}}).encode())
    man = blob(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **cfg},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **lay}]}).encode())
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", **man}]}
    with tarfile.open(path, "w") as t:
        for name, data in [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                           ("index.json", json.dumps(index).encode())] + \
                [(f"blobs/sha256/{h}", d) for h, d in blobs.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def test_build_on_an_oci_archive(ienv, custom_root, tmp_path):
    arc = tmp_path / "img.tar"
    oci_archive(custom_root, arc, ["FROM_OCI=yes"])
    p = run(ienv, "image", "build", "--from", f"oci-archive:{arc}",
            "--run", "echo $FROM_OCI > /from-step")
    assert p.returncode == 0, p.stderr
    iid = p.stdout.strip()
    p = run(ienv, "sandbox", "run", "--image", iid, "--", "sh", "-c",
            "cat /from-step; echo $FROM_OCI")
    assert (p.returncode, p.stdout.split()) == (0, ["yes", "yes"]), p.stderr
    run(ienv, "image", "rm", iid, check=0)
