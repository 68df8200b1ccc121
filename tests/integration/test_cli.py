"""The skiff command-line client, run as a user would against a real `skiffd dev`.

DRAFT: written before the server existed and checked only against a throwaway mock; it has not yet
run against skiffd. It needs a fixture `skiffd` (from conftest.py) whose value has .url (base URL),
.token (an admin secret) and .data (the data directory). The tests marked "no server" need nothing.
"""

import json
import os
import signal
import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("SKIFF_BIN", str(REPO / "build" / "bin")))
SKIFF = BIN_DIR / "skiff"
TIMEOUT_S = 60
ENDED = {"exited", "terminated", "timeout", "oom", "lost", "failed"}


def skiff_env(home, url=None, token=None):
    """An environment with its own config directory and no SKIFF_* from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKIFF_")}
    env["XDG_CONFIG_HOME"] = str(home)
    if url:
        env["SKIFF_URL"] = url
    if token:
        env["SKIFF_TOKEN"] = token
    return env


def run(env, *args, input=None, check=None):
    """Run skiff; check=N asserts the exit status."""
    p = subprocess.run([str(SKIFF), *args], env=env, input=input, capture_output=True,
                       text=True, timeout=TIMEOUT_S)
    if check is not None:
        assert p.returncode == check, (args, p.returncode, p.stdout, p.stderr)
    return p


@pytest.fixture
def env(skiffd, tmp_path):
    return skiff_env(tmp_path / "config", skiffd.url, skiffd.token)


def ls_json(env, *args):
    return json.loads(run(env, "sandbox", "ls", "--json", *args, check=0).stdout)


# ---- no server ----


def test_help_and_version(tmp_path):
    e = skiff_env(tmp_path)
    assert "sandbox" in run(e, "--help", check=0).stdout
    assert "exec" in run(e, "sandbox", "--help", check=0).stdout
    assert "--image" in run(e, "sandbox", "create", "--help", check=0).stdout
    assert run(e, "--version", check=0).stdout.startswith("skiff ")


@pytest.mark.parametrize("args", [
    [], ["bogus"], ["--bogus"], ["sandbox"], ["sandbox", "bogus"],
    ["sandbox", "create", "--bogus"], ["sandbox", "create", "--cpu"],
    ["sandbox", "create", "--tag", "novalue"], ["sandbox", "create", "--env", "=x"],
    ["sandbox", "create", "--memory", "0"], ["sandbox", "create", "--tag", "a=1", "--tag", "a=2"],
    ["sandbox", "ls", "--tag", "a=b"], ["sandbox", "exec", "sb-x"], ["sandbox", "exec"],
    ["sandbox", "run"], ["sandbox", "rm"], ["sandbox", "wait"],
    ["token", "create", "--name", "x"],
    ["token", "create", "--name", "x", "--role", "viewer", "--expires-at", "tomorrow"],
    ["token", "create", "--name", "x", "--role", "viewer", "--expires-in", "5",
     "--expires-at", "2030-01-01T00:00:00Z"],
    ["workspace", "create"],
])
def test_usage_errors_exit_2(tmp_path, args):
    p = run(skiff_env(tmp_path), *args, check=2)
    assert p.stderr.strip(), "a usage error says what is wrong"


def test_no_token_says_what_to_do(tmp_path):
    p = run(skiff_env(tmp_path), "sandbox", "ls", check=1)
    assert "skiff login" in p.stderr and "SKIFF_TOKEN" in p.stderr


def test_unreachable_server(tmp_path):
    p = run(skiff_env(tmp_path, "http://127.0.0.1:1", "x"), "sandbox", "ls", check=1)
    assert p.stderr.startswith("skiff: ") and "127.0.0.1:1" in p.stderr


def test_login_refuses_empty_stdin(tmp_path):
    p = run(skiff_env(tmp_path), "login", "--url", "http://127.0.0.1:1", input="", check=1)
    assert "--token" in p.stderr
    assert not (tmp_path / "skiff" / "config.json").exists()


# ---- against skiffd ----


def test_login_saves_config(skiffd, tmp_path):
    e = skiff_env(tmp_path)
    p = run(e, "login", "--url", skiffd.url, input=skiffd.token + "\n", check=0)
    assert p.stdout.startswith("logged in to ") and " as admin in workspace default" in p.stdout
    assert skiffd.token not in p.stdout + p.stderr
    cfg = tmp_path / "skiff" / "config.json"
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert stat.S_IMODE(cfg.parent.stat().st_mode) == 0o700
    assert json.loads(cfg.read_text()) == {"url": skiffd.url.rstrip("/"),
                                           "token": skiffd.token}
    # Later commands use the saved URL and token.
    run(e, "workspace", "ls", check=0)
    # The saved token is not sent to another server.
    p = run(e, "--url", "http://127.0.0.1:1", "workspace", "ls", check=1)
    assert "skiff login" in p.stderr


def test_login_rejects_a_bad_token(skiffd, tmp_path):
    e = skiff_env(tmp_path)
    p = run(e, "login", "--url", skiffd.url, "--token", "not-a-token", check=1)
    assert p.stderr.startswith("skiff: ")
    assert not (tmp_path / "skiff" / "config.json").exists()


def test_sandbox_lifecycle(env):
    tag = uuid.uuid4().hex[:12]
    name = "cli-" + tag
    sid = run(env, "sandbox", "create", "--name", name, "--tag", "t=" + tag, "--memory", "256",
              "--timeout", "120", check=0).stdout.strip()
    assert sid.startswith("sb-")
    items = ls_json(env, "--tag", "t:" + tag)
    assert [s["id"] for s in items] == [sid]
    assert items[0]["memory_mib"] == 256 and items[0]["state"] == "running"
    assert [s["id"] for s in ls_json(env, "--name", name)] == [sid]
    table = run(env, "sandbox", "ls", "--tag", "t:" + tag, check=0).stdout.splitlines()
    assert table[0].split() == ["ID", "NAME", "STATE", "EXIT", "IMAGE", "CREATED"]
    assert table[1].split()[:3] == [sid, name, "running"]
    shown = json.loads(run(env, "sandbox", "show", sid, "--json", check=0).stdout)
    assert shown["id"] == sid and shown["tags"] == {"t": tag}
    assert f"id:" in run(env, "sandbox", "show", sid, check=0).stdout
    assert run(env, "sandbox", "rm", sid, check=0).stdout.split() == [sid]
    assert json.loads(run(env, "sandbox", "show", sid, "--json", check=0).stdout)["state"] in ENDED
    p = run(env, "sandbox", "show", "sb-00000000000000000000000000", check=1)
    assert p.stderr.startswith("skiff: ")


def test_sandbox_exec(env):
    sid = run(env, "sandbox", "create", "--timeout", "120", check=0).stdout.strip()
    try:
        p = run(env, "sandbox", "exec", sid, "--env", "FOO=bar", "--workdir", "/tmp", "--",
                "sh", "-c", 'echo "$FOO $(pwd)"; echo oops >&2; exit 7', check=7)
        assert p.stdout == "bar /tmp\n" and p.stderr == "oops\n"
        # Bytes that are not UTF-8 come back as they are.
        p = subprocess.run([str(SKIFF), "sandbox", "exec", sid, "--", "printf", r"\377\000a"],
                           env=env, capture_output=True, timeout=TIMEOUT_S)
        assert p.returncode == 0 and p.stdout == b"\xff\x00a"
    finally:
        run(env, "sandbox", "rm", sid)


def test_sandbox_create_with_command_and_wait(env):
    sid = run(env, "sandbox", "create", "--", "sh", "-c", "sleep 1; exit 3", check=0).stdout.strip()
    p = run(env, "sandbox", "wait", sid, "--timeout", "30", check=3)
    assert p.stdout.strip() == "exited"
    sid = run(env, "sandbox", "create", "--", "sleep", "60", check=0).stdout.strip()
    p = run(env, "sandbox", "wait", sid, "--timeout", "0.5", check=1)
    assert "still" in p.stderr
    run(env, "sandbox", "rm", sid, check=0)


def test_sandbox_run_removes_the_sandbox(env):
    tag = uuid.uuid4().hex[:12]
    p = run(env, "sandbox", "run", "--tag", "t=" + tag, "--", "sh", "-c", "echo hi; exit 4",
            check=4)
    assert p.stdout == "hi\n"
    assert all(s["state"] in ENDED for s in ls_json(env, "--tag", "t:" + tag))


def test_sandbox_run_sigint_removes_the_sandbox(env):
    tag = uuid.uuid4().hex[:12]
    proc = subprocess.Popen([str(SKIFF), "sandbox", "run", "--tag", "t=" + tag, "--",
                             "sleep", "60"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + TIMEOUT_S
    while not ls_json(env, "--tag", "t:" + tag, "--state", "running"):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    time.sleep(0.5)  # let the exec start
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=TIMEOUT_S) == 130
    items = ls_json(env, "--tag", "t:" + tag)
    assert items and all(s["state"] in ENDED for s in items)


def test_tokens(env, tmp_path):
    name = "cli-" + uuid.uuid4().hex[:8]
    p = run(env, "token", "create", "--name", name, "--role", "viewer", "--expires-in", "3600",
            check=0)
    secret = p.stdout.strip()
    assert secret and "shown" in p.stderr
    toks = json.loads(run(env, "token", "ls", "--json", check=0).stdout)
    mine = [t for t in toks if t["name"] == name]
    assert len(mine) == 1 and mine[0]["role"] == "viewer" and mine[0]["expires_at"]
    assert all("secret" not in t for t in toks)
    # The new secret works.
    e2 = skiff_env(tmp_path / "other", env["SKIFF_URL"], secret)
    run(e2, "sandbox", "ls", check=0)
    assert run(env, "token", "rm", mine[0]["id"], check=0).stdout.split() == [mine[0]["id"]]
    run(e2, "sandbox", "ls", check=1)


def test_workspaces(env):
    name = "cli-" + uuid.uuid4().hex[:8]
    ws = json.loads(run(env, "workspace", "create", name, "--json", check=0).stdout)
    assert ws["id"].startswith("ws-") and ws["name"] == name
    listed = json.loads(run(env, "workspace", "ls", "--json", check=0).stdout)
    assert {"default", name} <= {w["name"] for w in listed}
    tok = run(env, "token", "create", "--name", "t", "--role", "developer", "--workspace", name,
              check=0).stdout.strip()
    assert run(env, "workspace", "ls", check=0).stdout.splitlines()[0].split() == \
        ["ID", "NAME", "CREATED"]
    assert tok


def test_sandbox_logs(env, skiffd):
    sid = run(env, "sandbox", "create", "--", "sh", "-c",
              "for i in 1 2 3; do echo line$i; sleep 0.3; done; echo err >&2",
              check=0).stdout.strip()
    try:
        # --follow reads while the command runs and stops when it ends.
        # Both streams by default, each to its own; --stdout / --stderr pick one.
        p = run(env, "sandbox", "logs", "--follow", sid, check=0)
        assert (p.stdout, p.stderr) == ("line1\nline2\nline3\n", "err\n"), p
        p = run(env, "sandbox", "logs", "--stdout", sid, check=0)
        assert (p.stdout, p.stderr) == ("line1\nline2\nline3\n", ""), p
        p = run(env, "sandbox", "logs", "--stderr", sid, check=0)
        assert (p.stdout, p.stderr) == ("", "err\n"), p
        s, ex = skiffd.api("POST", f"/v1/sandboxes/{sid}/exec",
                           {"command": ["sh", "-c", "echo from-exec"]})
        if s == 409:  # the main command ended: an exec needs a running sandbox
            return
        time.sleep(0.5)
        p = run(env, "sandbox", "logs", "--exec", ex["id"], sid, check=0)
        assert p.stdout == "from-exec\n"
    finally:
        run(env, "sandbox", "rm", sid)
    run(env, "sandbox", "logs", "sb-00000000000000000000000000", check=1)
    run(env, "sandbox", "logs", check=2)


def test_sandbox_exec_output_through_logs(env, skiffd):
    sid = run(env, "sandbox", "create", check=0).stdout.strip()
    try:
        s, ex = skiffd.api("POST", f"/v1/sandboxes/{sid}/exec",
                           {"command": ["sh", "-c", "printf 'a\\nb\\n'; echo e >&2"]})
        assert s == 201
        p = run(env, "sandbox", "logs", "--exec", ex["id"], "--follow", sid, check=0)
        assert (p.stdout, p.stderr) == ("a\nb\n", "e\n")
        p = run(env, "sandbox", "logs", "--exec", ex["id"], "--stderr", sid, check=0)
        assert (p.stdout, p.stderr) == ("", "e\n")
    finally:
        run(env, "sandbox", "rm", sid)


def test_idle_timeout_flag(env, skiffd):
    sid = run(env, "sandbox", "create", "--idle-timeout", "1.5", check=0).stdout.strip()
    try:
        s, sb = skiffd.api("GET", f"/v1/sandboxes/{sid}")
        assert sb["idle_timeout_s"] == 1.5
        p = run(env, "sandbox", "wait", "--timeout", "30", sid)
        assert p.returncode == 124, p  # ended idle: timeout
        assert skiffd.api("GET", f"/v1/sandboxes/{sid}")[1]["state"] == "timeout"
    finally:
        run(env, "sandbox", "rm", sid)
    p = run(env, "sandbox", "create", "--idle-timeout", "0")
    assert p.returncode == 2 and "--idle-timeout" in p.stderr


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_interrupted_shell_hangs_up_its_command(env, skiffd, sig):
    """A shell that is interrupted does not leave its command running (and its sandbox busy):
    it hangs the terminal up there, as a terminal that goes away does, and ends by the
    signal."""
    from conftest import read_bytes, sandbox_pids, wait_for
    marker = "7104"

    def running():
        return [p for p, _ in sandbox_pids(skiffd.instance)
                if marker.encode() in read_bytes(f"/proc/{p}/cmdline")]
    sid = run(env, "sandbox", "create", check=0).stdout.strip()
    try:
        p = subprocess.Popen([str(SKIFF), "sandbox", "shell", sid, "--", "sh", "-c",
                              f"echo ready; exec sleep {marker}"], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        try:
            assert p.stdout.readline().strip() == b"ready"
            assert wait_for(running, 10, 0.05)
            p.send_signal(getattr(signal, sig))
            assert p.wait(30) == -getattr(signal, sig), p.stderr.read()
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            for f in (p.stdout, p.stderr, p.stdin):
                f.close()
        assert wait_for(lambda: not running(), 15, 0.1), running()
    finally:
        run(env, "sandbox", "rm", sid)


def test_sandbox_shell_on_a_terminal(env, skiffd):
    """`skiff sandbox shell` driven through a pty as a person would: a prompt, a terminal of
    this window's size inside, a resize passed on, and the shell's exit status."""
    import fcntl
    import pty
    import select
    import signal
    import struct
    import termios
    sid = run(env, "sandbox", "create", check=0).stdout.strip()
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(str(SKIFF), ["skiff", "sandbox", "shell", sid], dict(env, TERM="xterm"))
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))

        def read_until(want, timeout=20):
            out, end = b"", time.monotonic() + timeout
            while want not in out and time.monotonic() < end:
                if select.select([fd], [], [], 0.1)[0]:
                    try:
                        out += os.read(fd, 4096)
                    except OSError:
                        break
            assert want in out, out
            return out

        read_until(b"# ")
        os.write(fd, b"tty; stty size\r")
        out = read_until(b"30 100")
        assert b"/dev/pts/" in out
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        os.kill(pid, signal.SIGWINCH)
        time.sleep(0.5)
        os.write(fd, b"stty size\r")
        read_until(b"40 120")
        os.write(fd, b"exit 3\r")
        _, st = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(st) == 3
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
        run(env, "sandbox", "rm", sid)
