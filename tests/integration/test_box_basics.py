"""skiff-box as a command: exit codes, stdio, options, specs, errors and the report."""

import json
import os

import pytest


def one_line(stderr):
    """The single line on stderr (asserts there is exactly one)."""
    lines = stderr.splitlines()
    assert len(lines) == 1 and stderr.endswith("\n"), f"expected one line on stderr: {stderr!r}"
    assert lines[0].startswith("skiff-box: "), lines[0]
    return lines[0]


# ---- exit codes ----


@pytest.mark.parametrize(
    "script,code",
    [
        ("exit 0", 0),
        ("exit 3", 3),
        ("exit 255", 255),
        ("kill -TERM $$", 128 + 15),
        ("kill -KILL $$", 128 + 9),
        ("kill -HUP $$", 128 + 1),
    ],
)
def test_exit_code(box, script, code):
    r = box.sh(script)
    assert r.returncode == code, r.stderr
    assert r.stderr == ""


def test_true_and_false(box):
    assert box.run(["true"]).returncode == 0
    assert box.run(["false"]).returncode == 1


# ---- stdio ----


def test_stdin_to_cat(box):
    r = box.run(["cat"], input="hello\nworld\n")
    assert (r.returncode, r.stdout, r.stderr) == (0, "hello\nworld\n", "")


def test_empty_stdin(box):
    r = box.run(["cat"], input="")
    assert (r.returncode, r.stdout) == (0, "")


def test_stdout_and_stderr_separate(box):
    r = box.sh("echo out; echo err >&2; echo out2")
    assert r.returncode == 0
    assert r.stdout == "out\nout2\n"
    assert r.stderr == "err\n"


def test_binary_roundtrip_1mib(box):
    data = os.urandom(1 << 20)
    r = box.run(["cat"], input=data, binary=True)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) == len(data)
    assert r.stdout == data
    assert r.stderr == b""


def test_binary_output_from_sandbox(box):
    # Every byte value, generated inside: nothing is translated on the way out.
    script = "i=0; while [ $i -lt 256 ]; do printf \"\\\\$(printf %o $i)\"; i=$((i+1)); done"
    r = box.sh(script, binary=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout == bytes(range(256))


# ---- environment, workdir, hostname ----


def test_env(box):
    r = box.sh('echo "$FOO|$BAR|$EMPTY|"', "--env", "FOO=bar baz", "--env", "BAR=1",
               "--env", "EMPTY=")
    assert (r.returncode, r.stdout) == (0, "bar baz|1||\n")


def test_env_last_wins(box):
    r = box.sh('echo "$FOO"', "--env", "FOO=one", "--env", "FOO=two")
    assert r.stdout == "two\n"


def test_default_env_and_host_env_not_inherited(box):
    r = box.run(["env"], env={"SKIFF_TEST_HOST_SECRET": "s3cret"})
    assert r.returncode == 0, r.stderr
    env = dict(line.split("=", 1) for line in r.stdout.splitlines())
    assert "SKIFF_TEST_HOST_SECRET" not in env
    assert "SKIFF_INSTANCE" not in env and "SKIFF_DATA" not in env
    assert env["HOME"] == "/root"
    assert "/bin" in env["PATH"].split(":")


def test_env_overrides_default(box):
    r = box.sh('echo "$HOME"', "--env", "HOME=/tmp")
    assert r.stdout == "/tmp\n"


def test_workdir(box):
    assert box.run(["pwd"]).stdout == "/\n"
    assert box.run(["pwd"], "--workdir", "/tmp").stdout == "/tmp\n"
    assert box.run(["pwd"], "--workdir", "/usr/bin").stdout == "/usr/bin\n"


def test_hostname(box):
    r = box.run(["hostname"], "--hostname", "my-box.example")
    assert (r.returncode, r.stdout) == (0, "my-box.example\n")
    r = box.sh('echo "$HOSTNAME"', "--hostname", "named")
    assert r.stdout == "named\n"


def test_default_hostname(box):
    a = box.run(["hostname"]).stdout.strip()
    b = box.run(["hostname"]).stdout.strip()
    assert len(a) == 12 and a == a.lower() and a.isalnum(), a
    assert a != b, "each sandbox gets its own default hostname"


# ---- --json ----

SPEC = {
    "command": ["sh", "-c", 'echo "$A"; pwd; hostname'],
    "env": {"A": "from-json"},
    "workdir": "/etc",
    "hostname": "json-host",
}


def test_json_inline(box):
    r = box("--json", json.dumps(SPEC))
    assert (r.returncode, r.stdout, r.stderr) == (0, "from-json\n/etc\njson-host\n", "")


def test_json_from_file(box, tmp_path):
    f = tmp_path / "spec.json"
    f.write_text(json.dumps(SPEC))
    r = box("--json", f)
    assert (r.returncode, r.stdout) == (0, "from-json\n/etc\njson-host\n")


def test_cli_overrides_json(box):
    # Options apply after --json whatever their order; a command after -- replaces "command".
    r = box("--env", "A=from-cli", "--json", json.dumps(SPEC), "--workdir", "/tmp",
            "--hostname", "cli-host")
    assert (r.returncode, r.stdout) == (0, "from-cli\n/tmp\ncli-host\n")
    r = box("--json", json.dumps(SPEC), "--", "echo", "replaced")
    assert r.stdout == "replaced\n"


def test_json_limits_apply(box):
    r = box("--json", json.dumps({"command": ["sleep", "10"], "timeout_s": 0.5}))
    assert r.returncode == 124, r.stderr
    # and the command line overrides the spec's limit
    r = box("--json", json.dumps({"command": ["true"], "timeout_s": 0.001}), "--timeout", "30")
    assert r.returncode == 0, r.stderr


# ---- --rootfs ----


def test_rootfs_custom_directory(box, custom_root):
    (custom_root / "etc" / "custom-marker").write_text("custom root\n")
    r = box.run(["cat", "/etc/custom-marker"], "--rootfs", custom_root)
    assert (r.returncode, r.stdout) == (0, "custom root\n")
    # the default root doesn't have it
    r = box.run(["cat", "/etc/custom-marker"])
    assert r.returncode != 0


def test_rootfs_from_json(box, custom_root):
    (custom_root / "marker").write_text("json root\n")
    r = box("--json", json.dumps({"rootfs": str(custom_root), "command": ["cat", "/marker"]}))
    assert (r.returncode, r.stdout) == (0, "json root\n")


# ---- bad options and specs: status 2 with one line naming the problem ----


@pytest.mark.parametrize(
    "args,word",
    [
        (["--bogus", "--", "true"], "--bogus"),
        (["--memory", "abc", "--", "true"], "abc"),
        (["--memory", "-5", "--", "true"], "--memory"),
        (["--memory", "1", "--", "true"], "--memory"),
        (["--cpu", "0", "--", "true"], "--cpu"),
        (["--cpu", "lots", "--", "true"], "--cpu"),
        (["--pids", "0", "--", "true"], "--pids"),
        (["--timeout", "-1", "--", "true"], "--timeout"),
        (["--disk", "x", "--", "true"], "--disk"),
        (["--json", '{"bogus":1}', "--", "true"], "bogus"),
        (["--json", "[1]", "--", "true"], "object"),
        (["--json", "{not json", "--", "true"], "JSON"),
        (["--json", '{"memory_mib":"lots"}', "--", "true"], "memory_mib"),
        (["--json", '{"command":"true"}'], "command"),
        (["--json", '{"network":"egress","command":["true"]}'], "egress"),
        (["--json", "/nonexistent/spec.json", "--", "true"], "/nonexistent/spec.json"),
        (["--network", "egress", "--", "true"], "egress"),
        (["--network", "host", "--", "true"], "host"),
        (["--workdir", "relative", "--", "true"], "workdir"),
        (["--hostname", "bad_host!", "--", "true"], "hostname"),
        (["--env", "NOEQUALS", "--", "true"], "NOEQUALS"),
        (["--env", "1X=y", "--", "true"], "env"),
        (["--rootfs", "/nonexistent/root", "--", "true"], "/nonexistent/root"),
        (["--instance", "TOO-LONG", "--", "true"], "instance"),
        (["--memory"], "--memory"),
        ([], "command"),
        (["--"], "command"),
        (["--", ""], "command"),
    ],
)
def test_bad_usage(box, args, word):
    r = box(*args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stdout == ""
    line = one_line(r.stderr)
    assert word in line, line


def test_help_and_version(box):
    r = box("--help")
    assert r.returncode == 0 and "usage: skiff-box" in r.stdout
    for opt in ("--rootfs", "--cpu", "--memory", "--pids", "--timeout", "--network", "--env",
                "--workdir", "--hostname", "--json"):
        assert opt in r.stdout, opt
    r = box("--version")
    assert r.returncode == 0 and r.stdout.startswith("skiff-box ")


# ---- the command itself fails ----


def test_command_not_found(box):
    r = box.run(["no-such-command"])
    assert r.returncode == 127
    assert "no-such-command" in one_line(r.stderr)


def test_command_not_found_absolute(box):
    r = box.run(["/bin/no-such-command"])
    assert r.returncode == 127
    assert "/bin/no-such-command" in one_line(r.stderr)


def test_command_not_executable(box):
    r = box.run(["/etc/passwd"])
    assert r.returncode == 126, r.stderr
    assert "/etc/passwd" in one_line(r.stderr)


def test_workdir_missing(box):
    r = box.run(["true"], "--workdir", "/nonexistent")
    assert r.returncode not in (0, 127), (r.returncode, r.stderr)  # 127 means "not found"
    line = one_line(r.stderr)
    assert "/nonexistent" in line and "workdir" in line, line


# ---- --report ----


def read_report(path):
    rep = json.loads(path.read_text())
    assert rep["id"].startswith("sb-")
    assert isinstance(rep["wall_s"], float) and 0 < rep["wall_s"] < 60
    u = rep["usage"]
    for k in ("cpu_ns", "memory_bytes", "memory_peak_bytes", "oom_kills"):
        assert isinstance(u[k], int) and u[k] >= 0, (k, u)
    return rep


def test_report_exited(box, tmp_path):
    f = tmp_path / "report.json"
    r = box.sh("exit 5", "--report", f)
    assert r.returncode == 5
    rep = read_report(f)
    assert (rep["end"], rep["exit_code"], rep["signal"]) == ("exited", 5, 0)
    assert rep["usage"]["oom_kills"] == 0
    assert rep["usage"]["memory_peak_bytes"] > 0


def test_report_signaled(box, tmp_path):
    f = tmp_path / "report.json"
    r = box.sh("kill -TERM $$", "--report", f)
    assert r.returncode == 143
    rep = read_report(f)
    assert (rep["end"], rep["exit_code"], rep["signal"]) == ("signaled", 143, 15)


def test_report_timeout(box, tmp_path):
    f = tmp_path / "report.json"
    r = box.run(["sleep", "10"], "--timeout", "0.3", "--report", f)
    assert r.returncode == 124
    rep = read_report(f)
    assert rep["end"] == "timeout"
    assert 0.3 <= rep["wall_s"] < 5


def test_report_ids_differ(box, tmp_path):
    ids = set()
    for i in range(3):
        f = tmp_path / f"r{i}.json"
        assert box.run(["true"], "--report", f).returncode == 0
        ids.add(read_report(f)["id"])
    assert len(ids) == 3
