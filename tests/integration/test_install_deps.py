"""scripts/install-deps' Debian bases: the mirror it is given (SKIFF_DEBIAN_MIRROR) is probed
without becoming part of a shell script, and a mirror that can't be reached skips the bases
rather than failing the install. The script's functions are run on their own, against listeners
on loopback, so nothing is installed and nothing leaves the host."""

import os
import socket
import subprocess

import pytest

from conftest import REPO

SCRIPT = REPO / "scripts" / "install-deps"


def run_functions(tmp_path, mirror, call, path=None):
    """install-deps' mirror_reachable and make_debian_tar, defined in a bash with the script's
    options, its bases' directory tmp_path/tars; call is run after them."""
    text = SCRIPT.read_text()
    funcs = "".join(text[text.index(f"\n{name}() {{"):].split("\n}\n", 1)[0] + "\n}\n"
                    for name in ("mirror_reachable", "make_debian_tar"))
    script = f"set -euo pipefail\n{funcs}\nDEBIAN_TARS={tmp_path}/tars\n{call}\n"
    return subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "MIRROR": mirror,
                               "PATH": f"{path}:{os.environ['PATH']}" if path else
                               os.environ["PATH"]})


@pytest.fixture
def listener():
    """A TCP listener on loopback (IPv4, and IPv6 where the host has it): its port."""
    socks = []
    s = socket.create_server(("127.0.0.1", 0))
    socks.append(s)
    port = s.getsockname()[1]
    try:
        socks.append(socket.create_server(("::1", port), family=socket.AF_INET6))
    except OSError:
        pass
    yield port
    for s in socks:
        s.close()


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # bound, never listened on: a connection is refused


def test_mirror_is_not_part_of_a_script(tmp_path):
    # Were the host spliced into `bash -c "…/dev/tcp/$host/$port"`, this would run touch.
    r = run_functions(tmp_path, "http://x;touch${IFS}injected;:/debian", "mirror_reachable")
    assert r.returncode != 0, r
    assert not (tmp_path / "injected").exists(), r


def test_mirror_host_port_credentials_ipv6(tmp_path, listener):
    for url in (f"http://127.0.0.1:{listener}/debian",
                f"http://user:secret@127.0.0.1:{listener}/debian",
                *([f"http://[::1]:{listener}/debian"] if socket.has_ipv6 and
                  subprocess.run(["bash", "-c", f"exec 3<>/dev/tcp/::1/{listener}"],
                                 capture_output=True).returncode == 0 else [])):
        r = run_functions(tmp_path, url, "mirror_reachable")
        assert r.returncode == 0, (url, r)
    r = run_functions(tmp_path, f"http://user:secret@127.0.0.1:{closed_port()}/debian",
                      "mirror_reachable")
    assert r.returncode != 0, r


@pytest.mark.skipif(os.geteuid() != 0, reason="install-deps makes the Debian bases as root only")
@pytest.mark.parametrize("mirror", ["http://127.0.0.1:{port}/debian", "file:///nonexistent/debian"])
def test_unreachable_mirror_skips_the_bases(tmp_path, mirror):
    mirror = mirror.format(port=closed_port())
    r = run_functions(tmp_path, mirror, "make_debian_tar debian-bookworm; echo went-on")
    assert r.returncode == 0 and r.stdout.endswith("went-on\n"), r
    assert f"install-deps: {mirror} can't be reached" in r.stderr, r
    assert not (tmp_path / "tars").exists() or not list((tmp_path / "tars").iterdir()), r


FAKE_MMDEBSTRAP = """#!/bin/bash
printf '%s\\n' "$@" >>"${0%/*}/args"
echo "a root file system" >"${@: -2:1}"
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="install-deps makes the Debian bases as root only")
def test_bases_made_from_the_mirror(tmp_path, listener):
    # mmdebstrap itself is a stand-in that writes down its arguments: the real one needs a
    # full Debian mirror.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "mmdebstrap").write_text(FAKE_MMDEBSTRAP)
    (fake / "mmdebstrap").chmod(0o755)
    mirror = f"http://127.0.0.1:{listener}/debian"
    r = run_functions(tmp_path, mirror, "make_debian_tar debian-bookworm && "
                      "make_debian_tar debian-bookworm-python3 --include=python3", path=fake)
    assert r.returncode == 0, r
    tars = tmp_path / "tars"
    assert sorted(p.name for p in tars.iterdir()) == ["debian-bookworm-python3.tar",
                                                      "debian-bookworm.tar"], r
    assert (fake / "args").read_text().splitlines() == [
        "--quiet", "--variant=minbase", "bookworm", f"{tars}/debian-bookworm.tar.tmp", mirror,
        "--quiet", "--variant=minbase", "--include=python3", "bookworm",
        f"{tars}/debian-bookworm-python3.tar.tmp", mirror]
