"""apt steps end to end, against a repository of the test's own: two small packages (one
depending on the other) in a flat repository served by `python3 -m http.server` on a test host
(a network namespace holding a TEST-NET address, netns_hosts), and a skiffd whose apt steps use
only that source (--apt-source). Nothing goes to the uplink: the image's own sources
(deb.debian.org) are never read."""

import email.utils
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import types

import pytest

from conftest import SKIFFD, _after_test, _own_skiffd, free_test_octet, netns_hosts, wait_for
from test_images import DEBIAN_TAR, build, in_sandbox, layer_paths, logs, wait_built

pytestmark = pytest.mark.skipif(
    not os.path.exists(DEBIAN_TAR),
    reason=f"{DEBIAN_TAR} is missing (scripts/install-deps makes it with mmdebstrap where the "
           "Debian mirror can be reached)")

GREETING = "hello from the test repository"

PACKAGES = {
    "skiff-apt-test-data": {
        "control": {},
        "files": {"usr/share/skiff-apt-test/greeting": (0o644, GREETING + "\n")},
    },
    "skiff-apt-test": {
        "control": {"Depends": "skiff-apt-test-data (>= 1.0)"},
        "files": {"usr/bin/skiff-apt-test":
                  (0o755, "#!/bin/sh\nexec cat /usr/share/skiff-apt-test/greeting\n")},
    },
}


def make_deb(top, name, spec):
    """name_1.0_all.deb in top, made with dpkg-deb; its control fields."""
    root = top / f"{name}-root"
    control = {"Package": name, "Version": "1.0", "Architecture": "all",
               "Maintainer": "skiff tests <tests@skiff.invalid>", **spec["control"],
               "Description": "a package of skiff's apt step tests"}
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "".join(f"{k}: {v}\n" for k, v in control.items()))
    for path, (mode, text) in spec["files"].items():
        p = root / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(mode)
    deb = top / f"{name}_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)],
                   check=True, capture_output=True, timeout=60)
    shutil.rmtree(root)
    return control, deb


def make_repo(top):
    """A flat repository in top: the .debs, their Packages index and a Release that hashes
    it (what dpkg-scanpackages and apt-ftparchive would write)."""
    stanzas = []
    for name, spec in PACKAGES.items():
        control, deb = make_deb(top, name, spec)
        data = deb.read_bytes()
        fields = {**control, "Filename": f"./{deb.name}", "Size": len(data),
                  "MD5sum": hashlib.md5(data).hexdigest(),
                  "SHA256": hashlib.sha256(data).hexdigest()}
        stanzas.append("".join(f"{k}: {v}\n" for k, v in fields.items()))
    packages = "\n".join(stanzas).encode()
    (top / "Packages").write_bytes(packages)
    (top / "Release").write_text(
        f"Date: {email.utils.formatdate(usegmt=True)}\nSHA256:\n"
        f" {hashlib.sha256(packages).hexdigest()} {len(packages)} Packages\n")


@pytest.fixture(scope="module")
def apt_repo(tmp_path_factory):
    """The repository on its test host (192.0.2.N, the host's end N + 1, N apart from other
    runs on the host): yields its address, its sources.list line and the file its server logs
    requests to."""
    if not shutil.which("dpkg-deb"):
        pytest.skip("dpkg-deb is missing (dpkg): needed to make the test's packages")
    top = tmp_path_factory.mktemp("apt-repo")
    make_repo(top)
    log_path = top.parent / "apt-repo-requests.log"
    n = free_test_octet(["192.0.2"], 2)
    addr = f"192.0.2.{n}"
    with netns_hosts([addr], f"192.0.2.{n + 1}") as net, open(log_path, "wb") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", net["ns"], sys.executable, "-m",
                                 "http.server", "--bind", addr, "--directory", str(top),
                                 "80"], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            def up():
                try:
                    socket.create_connection((addr, 80), timeout=1).close()
                    return True
                except OSError:
                    return proc.poll() is not None

            assert wait_for(up, 15, 0.05) and proc.poll() is None, log_path.read_text()
            yield types.SimpleNamespace(addr=addr, log=log_path,
                                        source=f"deb [trusted=yes] http://{addr}/ ./")
        finally:
            proc.kill()
            proc.wait()


def requests(repo):
    return [l for l in repo.log.read_text(errors="replace").splitlines() if '"GET ' in l]


@pytest.fixture(scope="module")
def _apt_skiffd(tmp_path_factory, apt_repo):
    # Its egress sandboxes' resolver is the test host too: nothing asks the host's.
    yield from _own_skiffd(tmp_path_factory,
                           extra=["--apt-source", apt_repo.source, "--dns", apt_repo.addr])


@pytest.fixture
def d(_apt_skiffd):
    yield from _after_test(_apt_skiffd)


APT_SPEC = {"base": "debian:bookworm", "steps": [{"apt": ["skiff-apt-test"]}]}


def etc_apt(d, image):
    """The image's /etc/apt: every file with its content's hash."""
    return in_sandbox(d, image, "find /etc/apt -type f -exec sha256sum {} + | sort")


def assert_cached(d, repo, got):
    """APT_SPEC built again is got's image: its step cached, no request to the repository."""
    before = len(requests(repo))
    again = wait_built(d, build(d, APT_SPEC)["id"], timeout=120)
    assert again["state"] == "ready", (again, logs(d, again["id"]))
    assert [l["cached"] for l in again["layers"]] == [True], again
    assert again["manifest"] == got["manifest"], (again, got)
    assert requests(repo)[before:] == []


def test_apt_step_installs_from_the_configured_source(d, apt_repo):
    before = len(requests(apt_repo))
    got = wait_built(d, build(d, APT_SPEC)["id"], timeout=600)
    log = logs(d, got["id"])
    assert got["state"] == "ready", (got, log)
    # The packages came from the test's repository, the dependency resolved by apt.
    assert "skiff-apt-test-data" in log, log
    got_requests = requests(apt_repo)[before:]
    assert any("/skiff-apt-test_1.0_all.deb HTTP" in l for l in got_requests), got_requests
    assert any("/skiff-apt-test-data_1.0_all.deb HTTP" in l for l in got_requests), got_requests
    out = in_sandbox(d, got["id"], "skiff-apt-test && dpkg-query -W -f '${Package} ${Status}\\n' "
                                   "skiff-apt-test skiff-apt-test-data && dpkg -s skiff-apt-test")
    lines = out.splitlines()
    assert lines[:3] == [GREETING, "skiff-apt-test install ok installed",
                         "skiff-apt-test-data install ok installed"], out
    assert "Status: install ok installed" in lines, out
    # The step left the image's sources as they were, and no lists nor sources file behind.
    base = wait_built(d, build(d, {"base": "debian:bookworm"})["id"], timeout=600)
    assert base["state"] == "ready", base
    assert etc_apt(d, got["id"]) == etc_apt(d, base["id"])
    assert in_sandbox(d, got["id"], "ls -A /var/lib/apt/lists") == ""
    # The step's layer itself (a manifest in the store): the packages' files, and nothing of
    # the sources file (/dev is a tmpfs of the sandbox's, no sandbox on the image would see it).
    paths = layer_paths(d, got["layers"][0]["layer"])
    assert {"/usr/bin/skiff-apt-test", "/usr/share/skiff-apt-test/greeting"} <= paths, paths
    assert not [p for p in paths if p.startswith(("/dev/", "/etc/apt/")) or "sources" in p], paths
    # Nor apt's caches and the .debs, nor the build sandbox's resolv.conf (the worker's
    # resolvers, which the runtime writes for egress): no file of the image names the repository.
    assert not [p for p in paths if p.endswith((".bin", ".deb"))], paths
    assert in_sandbox(d, got["id"], f"grep -rlF '{apt_repo.addr}' /etc /var /usr /root "
                                    "|| true") == ""

    # The same spec again: every step cached, nothing asked of the repository.
    assert_cached(d, apt_repo, got)


def test_apt_step_reads_none_of_the_images_sources(d, apt_repo):
    # The image's sources.list and sources.list.d name paths of the test host that are not
    # there: apt reading either would ask for them, and its update would fail.
    image_sources = (f"echo 'deb [trusted=yes] http://{apt_repo.addr}/image-list/ ./' "
                     ">/etc/apt/sources.list && "
                     f"echo 'deb [trusted=yes] http://{apt_repo.addr}/image-parts/ ./' "
                     ">/etc/apt/sources.list.d/image.list")
    before = len(requests(apt_repo))
    got = wait_built(d, build(d, {"base": "debian:bookworm", "steps": [
        {"run": image_sources}, {"apt": ["skiff-apt-test"]}]})["id"], timeout=600)
    assert got["state"] == "ready", (got, logs(d, got["id"]))
    got_requests = requests(apt_repo)[before:]
    assert any("/skiff-apt-test_1.0_all.deb HTTP" in l for l in got_requests), got_requests
    assert not [l for l in got_requests if "/image-" in l], got_requests
    # The image keeps its own sources.
    assert "/image-parts/" in in_sandbox(d, got["id"], "cat /etc/apt/sources.list.d/image.list")


def restart(d, repo, source):
    d.cleanup_sandboxes()
    assert d.stop() == 0
    d.start(pool=d.pool, extra=["--apt-source", source, "--dns", repo.addr])


def test_cache_key_follows_the_sources(d, apt_repo):
    first = wait_built(d, build(d, APT_SPEC)["id"], timeout=600)
    assert first["state"] == "ready", (first, logs(d, first["id"]))
    # Another line (the same repository, so the same packages): another key, the step runs.
    other = f"deb [trusted=yes check-valid-until=no] http://{apt_repo.addr}/ ./"
    try:
        restart(d, apt_repo, other)
        before = len(requests(apt_repo))
        got = wait_built(d, build(d, APT_SPEC)["id"], timeout=600)
        assert got["state"] == "ready", (got, logs(d, got["id"]))
        assert [l["cached"] for l in got["layers"]] == [False], got
        assert any("/skiff-apt-test_1.0_all.deb HTTP" in l
                   for l in requests(apt_repo)[before:]), requests(apt_repo)[before:]
    finally:
        restart(d, apt_repo, apt_repo.source)
    # The first line again: its layer, cached across the restart, nothing asked.
    assert_cached(d, apt_repo, first)


def test_missing_package_fails_naming_the_step(d, apt_repo):
    got = wait_built(d, build(d, {"base": "debian:bookworm", "steps": [
        {"env": {"X": "1"}}, {"apt": ["skiff-apt-test", "skiff-apt-test-missing"]}]})["id"],
        timeout=600)
    assert got["state"] == "failed", got
    assert got["error"].startswith("step 2 (") and "skiff-apt-test-missing" in got["error"], got
    assert "exit code 100" in got["error"], got  # apt-get's
    log = logs(d, got["id"])
    assert "Unable to locate package skiff-apt-test-missing" in log, log


@pytest.mark.parametrize("line, msg", [
    ("", "1 to 512 bytes"),
    ("x" * 513, "1 to 512 bytes"),
    ("http://192.0.2.1/ ./", 'expected "deb'),
    ("deb [trusted=yes http://192.0.2.1/ ./", "no closing ]"),
    ("deb [trusted=yes]", "no URI"),
    ("deb http://192.0.2.1/", "no suite"),
    ("deb [trusted=yes] http://user:secret@192.0.2.1/ ./", "user:password@"),
    ("deb http://token@192.0.2.1:3142/debian bookworm main", "user:password@"),
    ("deb http://192.0.2.1/ ./\ndeb http://192.0.2.2/ ./", "byte 25 is a control"),
    ("deb http://192.0.2.1/ ./ caf\u00e9", "non-ASCII"),
])
def test_bad_apt_source_refused_at_start(tmp_path, line, msg):
    data = tmp_path / "data"
    r = subprocess.run([str(SKIFFD), "dev", "--data", str(data), "--apt-source", line],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and msg in r.stderr, r
    assert not data.exists()  # refused before anything was made


@pytest.mark.parametrize("url, env, msg", [
    ("ftp://192.0.2.1/debian", None, "an http://, https:// or file:/// URL"),
    ("http://192.0.2.1/deb'ian", None, "byte 21: a space, quote"),
    ("http://192.0.2.1/deb ian", None, "byte 21: a space, quote"),
    ("", None, "1 to 512 bytes"),
    (None, "mirror.example/debian", "(SKIFF_DEBIAN_MIRROR) mirror.example/debian: an http://"),
])
def test_bad_debian_mirror_refused_at_start(tmp_path, url, env, msg):
    data = tmp_path / "data"
    r = subprocess.run([str(SKIFFD), "dev", "--data", str(data),
                        *(["--debian-mirror", url] if url is not None else [])],
                       capture_output=True, text=True, timeout=30,
                       env={**os.environ, "SKIFF_DEBIAN_MIRROR": env or ""})
    assert r.returncode == 2 and msg in r.stderr, r
    assert not data.exists()


def test_too_many_apt_sources_refused(tmp_path):
    args = [a for i in range(9) for a in ("--apt-source", f"deb http://192.0.2.{i}/ ./")]
    r = subprocess.run([str(SKIFFD), "dev", "--data", str(tmp_path / "data"), *args],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "at most 8" in r.stderr, r
    r = subprocess.run([str(SKIFFD), "worker", "--server", "http://127.0.0.1:1", "--token-file",
                        "/nonexistent", "--data", str(tmp_path / "w"), *args[:2]],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--apt-source and --debian-mirror are the server's" in r.stderr, r



def test_worker_ignores_the_servers_mirror_setting(tmp_path):
    # SKIFF_DEBIAN_MIRROR is for install-deps and the server; a worker goes on to its own
    # checks (here: its token file) whatever it says.
    r = subprocess.run([str(SKIFFD), "worker", "--server", "http://127.0.0.1:1", "--token-file",
                        str(tmp_path / "missing-token"), "--data", str(tmp_path / "w")],
                       capture_output=True, text=True, timeout=30,
                       env={**os.environ, "SKIFF_DEBIAN_MIRROR": "deb http://192.0.2.1/ x y"})
    assert r.returncode != 0 and "missing-token" in r.stderr, r
    assert "mirror" not in r.stderr.lower(), r
