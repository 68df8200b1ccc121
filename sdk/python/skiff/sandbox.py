"""Sandboxes: create, exec, wait, files, terminate."""

import base64
import time
import urllib.parse

from .client import default_client
from .errors import Conflict, NotFound, SkiffError
from .stream import OutputStream

__all__ = ["Sandbox", "ExecResult", "Exec", "ExecStdin", "Files", "FileEntry", "EntryList"]

SERVER_MAX_WAIT_S = 3600.0     # the most one wait call may ask the server for
WAIT_MARGIN_S = 30.0           # the reply's slack over what the server was asked to wait
EXEC_HOLD_EXTRA_S = 30.0       # the server holds an exec ?wait=true reply timeout_s + this
SANDBOX_ENDED = frozenset({"exited", "terminated", "timeout", "oom", "lost", "failed"})
EXEC_RUNNING = frozenset({"pending", "running"})
LIST_PAGE = 200
STDIN_MAX_WRITE = 1024 * 1024  # the most one stdin request may carry
STDIN_WRITE_TIMEOUT_S = 30.0   # how long the server lets one write wait for the process to read


def _argv(cmd, what):
    """A command as a list of strings: exec("ls", "-l"), exec(["ls", "-l"])."""
    if len(cmd) == 1 and isinstance(cmd[0], (list, tuple)):
        cmd = cmd[0]
    cmd = list(cmd)
    if not cmd or not all(isinstance(a, str) for a in cmd):
        raise TypeError(f"{what}: expected a non-empty list of strings, e.g. "
                        f"['sh', '-c', 'echo hi']")
    return cmd


def _output(reply, stream):
    """One stream of an exec reply as bytes: the text field, else the base64 one."""
    text = reply.get(stream)
    if isinstance(text, str):
        return text.encode("utf-8")
    b64 = reply.get(stream + "_b64")
    if isinstance(b64, str):
        return base64.b64decode(b64)
    return b""


class ExecResult:
    """How a command run with Sandbox.exec() ended: exit_code (int, or None when it did not
    end normally), stdout and stderr (bytes, each capped by the server; truncated says one
    was cut), state and the exec's id."""

    __slots__ = ("exit_code", "stdout", "stderr", "truncated", "state", "id")

    def __init__(self, exit_code, stdout=b"", stderr=b"", truncated=False, state=None, id=None):
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        self.truncated = truncated
        self.state = state
        self.id = id

    @classmethod
    def _from_reply(cls, r):
        return cls(r.get("exit_code"), _output(r, "stdout"), _output(r, "stderr"),
                   bool(r.get("truncated")), r.get("state"), r.get("id"))

    @property
    def stdout_text(self):
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr_text(self):
        return self.stderr.decode("utf-8", "replace")

    @property
    def ok(self):
        return self.exit_code == 0

    def __repr__(self):
        return (f"ExecResult(exit_code={self.exit_code!r}, stdout={self.stdout[:200]!r}, "
                f"stderr={self.stderr[:200]!r}, truncated={self.truncated!r})")


def _read_output(client, path, stream, offset):
    """(bytes from offset to what was written so far, the next offset, whether the writer ended)
    of one output stream, read in pieces; older bytes may have been dropped (the offset moves
    on)."""
    chunks = []
    while True:
        r = client.request("GET", path, query={"stream": stream, "offset": str(offset)})
        headers = {k.lower(): v for k, v in dict(r.headers).items()}
        start = int(headers.get("x-skiff-offset", offset))
        eof = headers.get("x-skiff-eof") == "true"
        offset = start + len(r.body)
        if r.body:
            chunks.append(r.body)
            continue
        return b"".join(chunks), offset, eof


def _bytes(data, what):
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{what}: expected bytes or str")


class ExecStdin:
    """The stdin of a process started with stdin=True (or its terminal, with pty=True).
    write() returns once the bytes are in (a process that does not read makes it wait);
    close() ends the input: the process reads end-of-file (on a terminal, ^D is typed). Both
    raise Conflict once the process has ended, or for a process started without stdin. As a
    context manager it closes on exit."""

    def __init__(self, ex):
        self._ex = ex
        self.closed = False

    def _post(self, data, eof):
        path = (f"/v1/sandboxes/{_q(self._ex.sandbox.id)}/execs/{_q(self._ex.id)}/stdin")
        client = self._ex.sandbox._client
        return client.json("POST", path, query={"eof": "true"} if eof else None, data=data,
                           timeout=max(client.timeout, STDIN_WRITE_TIMEOUT_S + 30.0))

    def write(self, data):
        """Append data (bytes, or str as UTF-8) to the process's stdin, in requests of at most
        1 MiB; returns the number of bytes written."""
        data = _bytes(data, "data")
        for i in range(0, len(data), STDIN_MAX_WRITE):
            self._post(data[i:i + STDIN_MAX_WRITE], False)
        return len(data)

    def close(self):
        """End the input (the process reads end-of-file). Closing twice, or closing the stdin
        of a process that has ended, is not an error."""
        if self.closed:
            return
        try:
            self._post(b"", True)
        except Conflict:
            if self._ex.status() in EXEC_RUNNING:
                raise
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Exec:
    """A process started with Sandbox.exec_async() (or exec() with stdin=True). Its stdout and
    stderr stream as it writes them (OutputStream); status() asks the server for its state;
    wait() polls until it has ended and returns its exit code. stdin writes to it (when
    started with stdin or pty), signal() signals it, resize() sizes its terminal. As a context
    manager it lets the process go on exit (abandon()): nothing is left waiting for input that
    will never come."""

    def __init__(self, sandbox, data, stdin=False, pty=False):
        self.sandbox = sandbox
        self.id = data["id"]
        self._data = data
        self._stdin = stdin
        self._pty = pty
        path = f"/v1/sandboxes/{_q(sandbox.id)}/execs/{_q(self.id)}/output"
        #: The process's output as it is written: ``for line in proc.stdout: ...``
        #: (text lines), ``proc.stdout.iter_bytes()``, ``proc.stdout.read()``.
        self.stdout = OutputStream(sandbox._client, path, "stdout", self._ended)
        self.stderr = OutputStream(sandbox._client, path, "stderr", self._ended)
        self.stdin = ExecStdin(self)

    def _ended(self, exit_code):
        """A stream read to the process's end: its state and exit code are known now."""
        try:
            self.status()
        except SkiffError:
            self._data = dict(self._data, exit_code=exit_code)

    def _url(self, rest):
        return f"/v1/sandboxes/{_q(self.sandbox.id)}/execs/{_q(self.id)}/{rest}"

    def signal(self, sig):
        """Send sig to the process: a name ("TERM", "SIGKILL") or a number. Returns the
        signal's number."""
        if isinstance(sig, bool) or not isinstance(sig, (str, int)):
            raise TypeError("sig: expected a name such as 'TERM' or a number")
        return self.sandbox._client.json("POST", self._url("signal"),
                                         json={"signal": sig}).get("signal")

    def abandon(self):
        """Let the process go: nobody will write to it any more. Its stdin is closed (it reads
        end-of-file) or, on a terminal, the terminal hangs up (SIGHUP, as when a terminal
        goes away). So an interrupted or failed caller does not leave a process waiting for
        input, and its sandbox busy. Best effort: errors are not raised (the server may be
        what failed)."""
        if not (self._stdin or self._pty):
            return
        try:
            if self._pty:
                self.signal("HUP")
            else:
                self.stdin.close()
        except (SkiffError, OSError):
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.abandon()

    def resize(self, rows, cols):
        """Set the size of the process's terminal (started with pty=True)."""
        self.sandbox._client.request("POST", self._url("resize"),
                                     json={"rows": rows, "cols": cols})

    def output(self, stream="stdout", offset=0):
        """What the process wrote to stream ("stdout" or "stderr") from offset so far, as
        bytes. Resumable: pass the length read so far as offset to get only what is new."""
        path = (f"/v1/sandboxes/{_q(self.sandbox.id)}/execs/{_q(self.id)}/output")
        return _read_output(self.sandbox._client, path, stream, offset)[0]

    @property
    def state(self):
        return self._data.get("state")

    @property
    def exit_code(self):
        return self._data.get("exit_code")

    @property
    def data(self):
        return dict(self._data)

    def status(self):
        """Refresh from GET /v1/sandboxes/{id}/execs/{ex}; returns the state."""
        self._data = self.sandbox._client.json(
            "GET", f"/v1/sandboxes/{_q(self.sandbox.id)}/execs/{_q(self.id)}")
        return self.state

    @property
    def done(self):
        return self.state not in EXEC_RUNNING

    def wait(self, poll=0.2, timeout_s=None):
        """Poll every `poll` seconds until the process has ended; return its exit code (None
        when it ended without one, or when timeout_s passed first)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            if self.status() not in EXEC_RUNNING:
                return self.exit_code
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(poll)

    def __repr__(self):
        return f"Exec(id={self.id!r}, state={self.state!r}, exit_code={self.exit_code!r})"


class FileEntry(dict):
    """One entry of fs/list or fs/stat: a dict with attribute access: name, path, type
    ("file", "dir", "symlink", "other"), size, mode (permission bits, an int), mtime (RFC 3339),
    link_target (symlinks only)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            if name in ("name", "path", "type", "size", "mode", "mtime", "link_target"):
                return None
            raise AttributeError(name) from None

    @property
    def is_dir(self):
        return self.get("type") == "dir"

    @property
    def is_file(self):
        return self.get("type") == "file"


class EntryList(list):
    """The entries of Files.list(); truncated says the server cut the listing."""

    truncated = False


def _q(s):
    return urllib.parse.quote(str(s), safe="")


class Files:
    """The files of a sandbox (its whole root; paths are resolved inside it)."""

    def __init__(self, sandbox):
        self._sb = sandbox

    def _url(self, route):
        return f"/v1/sandboxes/{_q(self._sb.id)}/{route}"

    def read(self, path):
        """A file's contents, as bytes."""
        return self._sb._client.request("GET", self._url("files"), query={"path": path}).body

    def write(self, path, data, mode=None, parents=False):
        """Write data (bytes, or str as UTF-8) to path, replacing the file; mode is the new
        file's permission bits, an int (0o755) or octal string ("755"; the server's default is
        644); parents=True makes missing directories. Returns the size written."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        elif not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data: expected bytes or str")
        if isinstance(mode, int) and not isinstance(mode, bool):
            mode = format(mode, "o")
        q = {"path": path, "mode": mode, "parents": True if parents else None}
        r = self._sb._client.request("PUT", self._url("files"), query=q, data=bytes(data))
        try:
            return r.json().get("size", len(data))
        except (ValueError, AttributeError):
            return len(data)

    def list(self, path="/", depth=1):
        """The entries under the directory path, depth levels down (1-16), as a list of
        FileEntry; its .truncated is True when the server cut the listing."""
        r = self._sb._client.json("GET", self._url("fs/list"),
                                  query={"path": path, "depth": depth})
        if isinstance(r, dict):
            out = EntryList(FileEntry(e) for e in r.get("entries", r.get("items")) or [])
            out.truncated = bool(r.get("truncated"))
            return out
        return EntryList(FileEntry(e) for e in r or [])

    def stat(self, path):
        """One entry (FileEntry); NotFound when there is nothing at path."""
        r = self._sb._client.json("GET", self._url("fs/stat"), query={"path": path})
        if isinstance(r, dict) and isinstance(r.get("entry"), dict):
            r = r["entry"]
        return FileEntry(r)

    def exists(self, path):
        try:
            self.stat(path)
            return True
        except NotFound:
            return False

    def mkdir(self, path, parents=False):
        self._sb._client.request("POST", self._url("fs/mkdir"),
                                 json={"path": path, "parents": bool(parents)})

    def remove(self, path, recursive=False):
        """Remove a file or directory; a non-empty directory needs recursive=True
        (Conflict without)."""
        self._sb._client.request("POST", self._url("fs/remove"),
                                 json={"path": path, "recursive": bool(recursive)})

    def move(self, src, dst):
        """Rename src to dst."""
        self._sb._client.request("POST", self._url("fs/move"), json={"from": src, "to": dst})


class Sandbox:
    """A skiff sandbox. Make one with Sandbox.create(), find them with Sandbox.list() or
    Sandbox.from_id(). The fields of the API's sandbox object are attributes (id, state,
    exit_code, name, tags, image, cpu, memory_mib, timeout_s, created_at, ...); refresh()
    reloads them. As a context manager it terminates the sandbox on exit."""

    def __init__(self, data, client=None):
        self._client = client or default_client()
        self._data = dict(data)
        self.files = Files(self)

    # ---- fields ----

    @property
    def id(self):
        return self._data["id"]

    @property
    def state(self):
        return self._data.get("state")

    @property
    def exit_code(self):
        return self._data.get("exit_code")

    @property
    def name(self):
        return self._data.get("name")

    @property
    def tags(self):
        return dict(self._data.get("tags") or {})

    @property
    def data(self):
        """The sandbox object as the server last sent it."""
        return dict(self._data)

    @property
    def client(self):
        return self._client

    @property
    def ended(self):
        return self.state in SANDBOX_ENDED

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self.__dict__["_data"][name]
        except KeyError:
            raise AttributeError(f"Sandbox has no attribute {name!r}") from None

    def __repr__(self):
        return f"Sandbox(id={self.id!r}, state={self.state!r}, exit_code={self.exit_code!r})"

    def __eq__(self, other):
        return isinstance(other, Sandbox) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def _url(self, rest=""):
        return f"/v1/sandboxes/{_q(self.id)}{rest}"

    # ---- finding and making ----

    @classmethod
    def create(cls, image=None, command=None, env=None, workdir=None, cpu=None,
               memory_mib=None, disk_mib=None, pids=None, timeout_s=None, name=None,
               tags=None, idempotency_key=None, client=None, *, idle_timeout_s=None,
               network=None, ports=None, cidr_allowlist=None):
        """Create a sandbox and return it once it runs. image: "busybox" (the default), an
        image's id (im-...) or name, or a skiff.Image (built first; a build the server has
        cached is quick). command (a list of strings) is its
        main command; without one it stays up idle until terminated or its timeout_s.
        ports: the TCP ports (at most 16) it serves on its loopback, reachable through the
        server (ports(), port_request()).
        network: "none" (loopback only, the default) or "egress" (outbound to public
        addresses, DNS through the worker's resolvers); cidr_allowlist (with "egress"): the
        public IPv4 ranges it may reach, at most 64 (private ones are refused: they are never
        reachable).
        idempotency_key: the same key returns the same sandbox (a retry never makes two)."""
        client = client or default_client()
        body = {}
        if image is not None and not isinstance(image, str):
            from .image import Image
            if not isinstance(image, Image):
                raise TypeError("image: expected a skiff.Image, an image id or a name")
            image = image._ref() or image.build(client=client)
        if cidr_allowlist is not None:
            if isinstance(cidr_allowlist, str):
                raise TypeError("cidr_allowlist: expected a list of ranges, e.g. "
                                "['198.51.100.0/24']")
            cidr_allowlist = [str(c) for c in cidr_allowlist]
        if command is not None:
            if isinstance(command, str):
                raise TypeError("command: expected a list of strings, e.g. "
                                "['sh', '-c', 'echo hi']")
            body["command"] = _argv((command,), "command")
        for k, v in (("image", image), ("env", env), ("workdir", workdir), ("cpu", cpu),
                     ("memory_mib", memory_mib), ("disk_mib", disk_mib), ("pids", pids),
                     ("timeout_s", timeout_s), ("idle_timeout_s", idle_timeout_s),
                     ("network", network), ("name", name), ("tags", tags),
                     ("ports", None if ports is None else list(ports)),
                     ("cidr_allowlist", cidr_allowlist)):
            if v is not None:
                body[k] = v
        headers = {"Idempotency-Key": str(idempotency_key)} if idempotency_key else None
        data = client.json("POST", "/v1/sandboxes", json=body, headers=headers,
                           timeout=max(client.timeout, 120.0))
        return cls(data, client)

    @classmethod
    def from_id(cls, sandbox_id, client=None):
        """The sandbox with this id (NotFound when there is none the token can see)."""
        client = client or default_client()
        return cls(client.json("GET", f"/v1/sandboxes/{_q(sandbox_id)}"), client)

    @classmethod
    def iter(cls, tags=None, state=None, name=None, client=None, page_size=LIST_PAGE):
        """Every matching sandbox, oldest first, following the list's cursors."""
        client = client or default_client()
        query = [("limit", page_size)]
        if state is not None:
            query.append(("state", state))
        if name is not None:
            query.append(("name", name))
        for k, v in (tags or {}).items():
            query.append(("tag", f"{k}:{v}"))
        cursor = None
        while True:
            q = query + ([("cursor", cursor)] if cursor else [])
            page = client.json("GET", "/v1/sandboxes", query=q)
            for item in page.get("items") or []:
                yield cls(item, client)
            cursor = page.get("next_cursor")
            if not cursor:
                return

    @classmethod
    def list(cls, tags=None, state=None, name=None, client=None):
        """Every matching sandbox (tags: {key: value}, all must match), as a list."""
        return list(cls.iter(tags=tags, state=state, name=name, client=client))

    # ---- state ----

    def refresh(self):
        """Reload the fields from the server; returns self."""
        self._data = self._client.json("GET", self._url())
        return self

    def wait(self, timeout_s=None):
        """Wait until the main command has ended (or timeout_s passed); returns exit_code
        (None when it has not ended). Long waits are several server calls."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left = SERVER_MAX_WAIT_S if deadline is None else max(0.0, deadline - time.monotonic())
            left = min(left, SERVER_MAX_WAIT_S)
            self._data = self._client.json("POST", self._url("/wait"),
                                           query={"timeout_s": f"{left:.3f}"},
                                           timeout=left + WAIT_MARGIN_S)
            if self.ended or (deadline is not None and time.monotonic() >= deadline):
                return self.exit_code

    @property
    def stdout(self):
        """The main command's stdout as it is written (an OutputStream: iterate it for
        lines)."""
        return OutputStream(self._client, f"/v1/sandboxes/{_q(self.id)}/logs", "stdout")

    @property
    def stderr(self):
        return OutputStream(self._client, f"/v1/sandboxes/{_q(self.id)}/logs", "stderr")
    def ports(self):
        """The ports the sandbox serves, {port: URL}: each URL reaches the port through the
        server, for any HTTP client that sends this client's token as a bearer token."""
        reply = self._client.json("GET", self._url("/ports"))
        base = self._client.url.rstrip("/")
        return {p["port"]: base + p["url"] for p in reply.get("ports") or []}

    def port_request(self, port, method="GET", path="/", body=None, headers=None,
                     timeout=None):
        """One HTTP request to a port the sandbox serves (path: in the sandbox, with its
        query), through the server. Returns the answer whatever its status (.status,
        .headers, .body bytes): the sandbox's own, or the proxy's JSON error (401, 403, 404 for
        a port not declared at create, 409 when the sandbox has ended, 502 when nothing
        listens, 504)."""
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError("path: expected a path in the sandbox starting with /, e.g. "
                             "'/index.html?x=1'")
        data = body.encode() if isinstance(body, str) else body
        return self._client.request(method, self._url(f"/ports/{int(port)}{path}"), data=data,
                                    headers=headers, timeout=timeout, check=False)

    def logs(self, stream="stdout", offset=0):
        """What the sandbox's main command wrote to stream from offset so far, as bytes."""
        return _read_output(self._client, f"/v1/sandboxes/{_q(self.id)}/logs", stream,
                            offset)[0]

    def snapshot(self, name=None):
        """Save the running sandbox's files (its image and what changed since) as a new
        image, with its image's config; returns the image's id once it is ready."""
        body = {} if name is None else {"name": name}
        im = self._client.json("POST", self._url("/snapshot"), json=body,
                               timeout=max(self._client.timeout, 300.0))
        return im["id"]

    def terminate(self):
        """End the sandbox (SIGTERM, a grace period, SIGKILL) and remove it; returns the
        final exit code. Terminating an ended sandbox is not an error."""
        self._data = self._client.json("DELETE", self._url(), timeout=max(self._client.timeout,
                                                                           120.0))
        return self.exit_code

    def set_tags(self, tags):
        """Replace the sandbox's tags with tags ({key: value})."""
        self._data = self._client.json("PATCH", self._url(), json={"tags": dict(tags)})
        return self

    def extend_timeout(self, seconds):
        """Give the sandbox `seconds` more: its timeout_s (wall-clock from its start) becomes
        the present one plus seconds. Only a sandbox made with a timeout_s can be extended."""
        current = self._data.get("timeout_s")
        if current is None:
            current = self.refresh()._data.get("timeout_s")
        if not current:
            raise SkiffError(f"sandbox {self.id} has no timeout to extend",
                             code="invalid_argument", status=None)
        return self.set_timeout(float(current) + float(seconds))

    def set_timeout(self, timeout_s):
        """Set timeout_s (wall-clock seconds from the start; it can only grow)."""
        self._data = self._client.json("PATCH", self._url(), json={"timeout_s": timeout_s})
        return self

    # ---- processes ----

    def _exec_body(self, cmd, env, workdir, timeout_s, stdin=False, pty=False, pty_size=None):
        body = {"command": _argv(cmd, "command")}
        if env is not None:
            body["env"] = env
        if workdir is not None:
            body["workdir"] = workdir
        if timeout_s is not None:
            body["timeout_s"] = timeout_s
        if stdin:
            body["stdin"] = True
        if pty:
            body["pty"] = True
        if pty_size is not None:
            rows, cols = pty_size
            body["pty_size"] = {"rows": rows, "cols": cols}
        return body

    def exec(self, *cmd, env=None, workdir=None, timeout_s=None, stdin=None, pty=False,
             pty_size=None):
        """Run a command in the sandbox: exec("ls", "-l") or exec(["ls", "-l"]).

        By default it runs to its end and returns an ExecResult (exit_code, stdout and stderr
        as bytes, truncated). stdin=b"..." (or a str) is its input, then end-of-file; it still
        runs to its end. stdin=True starts it with a stdin to write to while it runs and
        returns its Exec at once (exec.stdin.write(), .close(), .signal(), .wait()). pty=True
        runs it on a terminal (pty_size=(rows, cols), default (24, 80)): its stdout and
        stderr are one stream, in stdout."""
        if stdin is True:
            return self.exec_async(*cmd, env=env, workdir=workdir, timeout_s=timeout_s,
                                   stdin=True, pty=pty, pty_size=pty_size)
        if stdin is not None and stdin is not False:
            data = _bytes(stdin, "stdin")
            ex = self.exec_async(*cmd, env=env, workdir=workdir, timeout_s=timeout_s,
                                 stdin=True, pty=pty, pty_size=pty_size)
            try:
                try:
                    ex.stdin.write(data)
                    ex.stdin.close()
                except SkiffError:
                    if ex.status() in EXEC_RUNNING:  # it ended before reading it all: fine
                        raise
                ex.wait(poll=0.05)
            except BaseException:
                ex.abandon()  # failed or interrupted (KeyboardInterrupt): let it go
                raise
            out = ex.output("stdout")
            err = ex.output("stderr")
            return ExecResult(ex.exit_code, out, err, False, ex.state, ex.id)
        body = self._exec_body(cmd, env, workdir, timeout_s, pty=pty, pty_size=pty_size)
        hold = (timeout_s + EXEC_HOLD_EXTRA_S) if timeout_s else SERVER_MAX_WAIT_S
        r = self._client.json("POST", self._url("/exec"), query={"wait": "true"}, json=body,
                              timeout=hold + WAIT_MARGIN_S)
        return ExecResult._from_reply(r)

    def exec_async(self, *cmd, env=None, workdir=None, timeout_s=None, stdin=False, pty=False,
                   pty_size=None):
        """Start a command and return at once with an Exec handle (status(), wait(),
        output()). stdin=True gives it a stdin to write to (Exec.stdin); pty=True a terminal
        (Exec.stdin types into it, Exec.resize() sizes it; pty_size=(rows, cols))."""
        body = self._exec_body(cmd, env, workdir, timeout_s, stdin, pty, pty_size)
        r = self._client.json("POST", self._url("/exec"), json=body,
                              timeout=max(self._client.timeout, 120.0))
        return Exec(self, r, stdin=bool(stdin), pty=bool(pty))

    # ---- context manager ----

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.terminate()
        except NotFound:
            pass
