"""Images: a base and steps, built by the server (POST /v1/images) into an image sandboxes start
on.

    image = (skiff.Image.debian_slim()
             .apt_install("curl")
             .add_local_dir("./app", "/app")
             .workdir("/app")
             .env({"MODE": "prod"}))
    image_id = image.build(name="app", logs=print)
    sb = skiff.Sandbox.create(image=image)       # or image_id, or "app"

An Image is immutable: each method returns a new one. Local files are packed as tar when the
image is built, the same bytes `skiff image build --copy` makes (so the same tree has the same
digest from both, and the server's layer cache hits), and uploaded only when the server lacks
them.
"""

import codecs
import contextlib
import errno
import hashlib
import http.client
import itertools
import os
import re
import stat
import tempfile
import time
import urllib.parse

from .client import default_client
from .errors import DeadlineExceeded, InvalidArgument, SkiffError, Unavailable

__all__ = ["Image", "ImageBuildError", "Images", "pack_tar"]

MAX_BLOB_BYTES = 4 << 30       # one upload: the server's default limit on a blob
MAX_TAR_ENTRIES = 1 << 20      # files in one copied tree
BUILD_POLL_S = 0.5
BUILD_WAIT_RETRY_S = 60.0      # a server busy or out of reach this long: the wait gives up
LOG_STREAM_IDLE_S = 600.0      # a step may print nothing for long (apt, a compile)
UPLOAD_TIMEOUT_BASE_S = 300.0  # plus a minute a GiB

# ustar as libarchive writes it (the CLI packs with libarchive): fields, their sizes, and
# numbers as zero-padded octal ended by " \0" (mode, uid, gid, devices) or " " (size, mtime).
_BLOCK = 512
_RECORD = 20 * _BLOCK
_NAME_MAX = 100
_PREFIX_MAX = 155
_LINK_MAX = 100
_MTIME_MAX = 0o77777777777


class ImageBuildError(SkiffError):
    """An image build that failed; .image_id, .step (as the server names it, or None) and
    .image (the image object) say where."""

    def __init__(self, message, image_id=None, step=None, image=None):
        super().__init__(message, code="image_build_failed")
        self.image_id = image_id
        self.step = step
        self.image = image


def _octal(value, digits, end):
    return b"%0*o" % (digits, value) + end


def _split_name(path):
    """(prefix, name) for a path in a ustar header, as libarchive splits it."""
    b = path.encode("utf-8", "surrogateescape")
    if len(b) <= _NAME_MAX:
        return b"", b
    i = b.find(b"/", len(b) - _NAME_MAX - 1)
    if i == 0:
        i = b.find(b"/", 1)
    if i < 0 or i == len(b) - 1 or i > _PREFIX_MAX:
        raise InvalidArgument(f"{path}: the path is too long for the archive")
    return b[:i], b[i + 1:]


def _header(path, mode, size, mtime, typeflag, link=b""):
    prefix, name = _split_name(path)
    h = bytearray(_BLOCK)
    h[0:len(name)] = name
    h[100:108] = _octal(mode & 0o7777, 6, b" \0")
    h[108:116] = _octal(0, 6, b" \0")
    h[116:124] = _octal(0, 6, b" \0")
    h[124:136] = _octal(size, 11, b" ")
    h[136:148] = _octal(min(max(int(mtime), 0), _MTIME_MAX), 11, b" ")
    h[148:156] = b" " * 8
    h[156:157] = typeflag
    h[157:157 + len(link)] = link
    h[257:265] = b"ustar\x0000"
    h[329:337] = _octal(0, 6, b" \0")
    h[337:345] = _octal(0, 6, b" \0")
    h[345:345 + len(prefix)] = prefix
    h[148:155] = _octal(sum(h), 6, b"\0")
    return bytes(h)


class _TarWriter:
    """Writes the archive to f while hashing it, within the size and entry limits."""

    def __init__(self, f, what):
        self.f = f
        self.what = what
        self.sha = hashlib.sha256()
        self.size = 0
        self.entries = 0

    def write(self, data):
        if self.size + len(data) > MAX_BLOB_BYTES:
            raise InvalidArgument(f"{self.what}: the archive is over the "
                                  f"{MAX_BLOB_BYTES >> 20} MiB a blob may hold")
        self.f.write(data)
        self.sha.update(data)
        self.size += len(data)

    def add(self, dir_fd, name, arc_path, st, shown, top=False):
        """One entry: name in the directory dir_fd (None: a path of the caller's), st its
        lstat (stat for the top, a link to which is followed); a directory's contents follow
        it. What is below the top is opened through its directory's descriptor, never
        following a link: a directory swapped for a link to elsewhere while the tree is
        packed cannot bring that elsewhere in."""
        self.entries += 1
        try:
            arc_path.encode("utf-8")  # image paths are UTF-8 (manifests are JSON)
        except UnicodeEncodeError:
            raise InvalidArgument(f"{shown!r}: the name is not valid UTF-8, which image paths "
                                  f"must be") from None
        if self.entries > MAX_TAR_ENTRIES:
            raise InvalidArgument(f"{self.what}: more than {MAX_TAR_ENTRIES} entries")
        if len(arc_path.encode("utf-8", "surrogateescape")) + stat.S_ISDIR(st.st_mode) > 255:
            raise InvalidArgument(f"{shown}: its path in the archive is over 255 bytes")
        cloexec = getattr(os, "O_CLOEXEC", 0)
        if stat.S_ISDIR(st.st_mode):
            self.write(_header(arc_path + "/", st.st_mode, 0, st.st_mtime, b"5"))
            fd = _open_changed(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | cloexec,
                               dir_fd, shown)
            try:
                self.add_tree(fd, arc_path, shown)
            finally:
                os.close(fd)
        elif stat.S_ISLNK(st.st_mode):
            target = os.readlink(name, dir_fd=dir_fd)
            try:
                target.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidArgument(f"{shown!r}: the link's target is not valid UTF-8") \
                    from None
            if len(target) > _LINK_MAX:
                raise InvalidArgument(f"{shown}: a link target over {_LINK_MAX} bytes")
            self.write(_header(arc_path, st.st_mode, 0, st.st_mtime, b"2", target))
        elif stat.S_ISREG(st.st_mode):
            flags = os.O_RDONLY | (0 if top else os.O_NOFOLLOW) | cloexec
            fd = _open_changed(name, flags, dir_fd, shown)
            with os.fdopen(fd, "rb") as src:
                st = os.fstat(src.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise SkiffError(f"{shown} changed while it was being packed")
                self.write(_header(arc_path, st.st_mode, st.st_size, st.st_mtime, b"0"))
                left = st.st_size
                while left:
                    chunk = src.read(min(left, 256 << 10))
                    if not chunk:
                        raise SkiffError(f"{shown} shrank while it was being packed")
                    self.write(chunk)
                    left -= len(chunk)
                pad = -st.st_size % _BLOCK
                if pad:
                    self.write(b"\0" * pad)
        else:
            raise InvalidArgument(f"{shown}: only regular files, directories and symbolic "
                                  f"links can be copied into an image")

    def add_tree(self, dir_fd, prefix, shown):
        """What the open directory dir_fd holds, names sorted bytewise, under prefix ("" for
        the root)."""
        for name in sorted(os.fsencode(n) for n in os.listdir(dir_fd)):
            sname = os.fsdecode(name)
            self.add(dir_fd, name, f"{prefix}/{sname}" if prefix else sname,
                     os.stat(name, dir_fd=dir_fd, follow_symlinks=False), f"{shown}/{sname}")

    def finish(self):
        self.write(b"\0" * (2 * _BLOCK))
        pad = -self.size % _RECORD
        if pad:
            self.write(b"\0" * pad)
        return self.sha.hexdigest()


def pack_tar(local, f, name=None):
    """Write local as the deterministic tar the CLI makes to the binary file f: a directory's
    contents at the archive's root, or a file as the one entry name. Returns (sha256 hex,
    size). Entries go depth first, each directory's names sorted bytewise, owner 0:0, modes
    and mtimes (whole seconds) kept."""
    local = os.fspath(local)
    try:
        st = os.stat(local)
    except FileNotFoundError:
        raise InvalidArgument(f"{local}: No such file or directory") from None
    w = _TarWriter(f, local)
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(local, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
        try:
            w.add_tree(fd, "", local)
        finally:
            os.close(fd)
    elif stat.S_ISREG(st.st_mode):
        if not name or "/" in name:
            raise InvalidArgument(f"{local}: a file needs a name to have")
        w.add(None, local, name, st, local, top=True)
    else:
        raise InvalidArgument(f"{local}: not a directory or a regular file")
    return w.finish(), w.size


def _open_changed(name, flags, dir_fd, shown):
    """os.open, saying that a link or another kind of file in the place of what was listed
    means the tree changed while it was being packed."""
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise SkiffError(f"{shown} changed while it was being packed") from None
        raise


def _check_abs(path, what):
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidArgument(f"{what}: expected an absolute path, got {path!r}")
    return path


def _strings(items, what):
    items = list(items)
    if not items or not all(isinstance(s, str) and s for s in items):
        raise TypeError(f"{what}: expected non-empty strings")
    return items


def _q(s):
    return urllib.parse.quote(str(s), safe="")


class _Local:
    """A local file or directory a copy step (or an OCI archive base) uploads at build."""

    __slots__ = ("path", "dest", "kind")

    def __init__(self, path, dest, kind):
        self.path = os.fspath(path)
        self.dest = dest
        self.kind = kind  # "dir", "file" or "oci"

    def check(self):
        try:
            st = os.stat(self.path)
        except OSError as e:
            raise InvalidArgument(f"{self.path}: {e.strerror}") from None
        want_dir = self.kind == "dir"
        if stat.S_ISDIR(st.st_mode) != want_dir or not (want_dir or stat.S_ISREG(st.st_mode)):
            raise InvalidArgument(f"{self.path}: not a {'directory' if want_dir else 'file'}")
        if self.kind == "file":
            self.target()  # a destination that names no file

    def target(self):
        """(the directory the tar is unpacked at, the file's name in it or None)."""
        if self.kind == "dir":
            return self.dest.rstrip("/") or "/", None
        if self.dest.endswith("/"):
            return self.dest.rstrip("/") or "/", os.path.basename(self.path)
        d, n = self.dest.rsplit("/", 1)
        if n in (".", ".."):
            raise InvalidArgument(f"{self.dest}: a file's destination must end with the name "
                                  f"to give it, or '/'")
        return d or "/", n


def _upload(client, data_file, size, digest):
    """PUT the blob sha256:digest unless the server has it."""
    path = f"/v1/blobs/sha256:{digest}"
    r = client.request("HEAD", path, check=False)
    if 200 <= r.status < 300:
        return
    if r.status != 404:
        client.request("HEAD", path)  # raises the matching error
    data_file.seek(0, os.SEEK_END)
    if data_file.tell() != size:
        raise SkiffError(f"the archive to upload changed size ({data_file.tell()} != {size})")
    # The file itself is the body: streamed, never read into memory whole.
    client.request("PUT", path, data=data_file, headers={"Content-Length": str(size)},
                   timeout=max(client.timeout, UPLOAD_TIMEOUT_BASE_S + (size >> 24)))


class Image:
    """An image definition: a base and steps. Immutable; each method returns a new Image."""

    __slots__ = ("_base", "_steps")

    def __init__(self, base, steps=()):
        self._base = base
        self._steps = tuple(steps)

    def __setattr__(self, name, value):
        if hasattr(self, "_steps"):
            raise AttributeError("an Image is immutable: its methods return new ones")
        object.__setattr__(self, name, value)

    def __repr__(self):
        return f"Image(base={self._base_text()!r}, steps={len(self._steps)})"

    def _with(self, key, value):
        return Image(self._base, self._steps + ((key, value),))

    # ---- bases ----

    @classmethod
    def busybox(cls):
        return cls("busybox")

    @classmethod
    def debian(cls):
        """Debian 12 (bookworm)."""
        return cls("debian:bookworm")

    @classmethod
    def debian_slim(cls):
        """Debian 12 with python3."""
        return cls("debian-slim")

    @classmethod
    def from_id(cls, image_id):
        if not isinstance(image_id, str) or not image_id.startswith("im-"):
            raise InvalidArgument(f"expected an image id (im-...), got {image_id!r}")
        return cls(image_id)

    @classmethod
    def from_name(cls, name):
        if not isinstance(name, str) or not name:
            raise InvalidArgument("expected an image's name")
        return cls(name)

    @classmethod
    def from_dir(cls, path):
        """A directory on the server's machine as the root (admin tokens only)."""
        return cls("dir:" + _check_abs(os.fspath(path), "from_dir"))

    @classmethod
    def from_oci_archive(cls, path):
        """A local OCI image archive (or `docker save` output), uploaded at build."""
        return cls(_Local(path, None, "oci"))

    # ---- steps ----

    def apt_install(self, *packages):
        if len(packages) == 1 and isinstance(packages[0], (list, tuple)):
            packages = packages[0]
        return self._with("apt", _strings(packages, "apt_install"))

    def run_commands(self, *commands):
        """One step per shell command, in order."""
        if len(commands) == 1 and isinstance(commands[0], (list, tuple)):
            commands = commands[0]
        img = self
        for c in _strings(commands, "run_commands"):
            img = img._with("run", c)
        return img

    def add_local_dir(self, local, remote):
        """The contents of the local directory at remote (an absolute path in the image)."""
        return self._with("copy", _Local(local, _check_abs(remote, "remote"), "dir"))

    def add_local_file(self, local, remote):
        """The local file at remote (a path; ending in "/": a directory to put it in)."""
        return self._with("copy", _Local(local, _check_abs(remote, "remote"), "file"))

    def env(self, variables):
        if not isinstance(variables, dict) or not all(
                isinstance(k, str) and k and "=" not in k and isinstance(v, str)
                for k, v in variables.items()):
            raise TypeError("env: expected a dict of str to str (names without '=')")
        return self._with("env", dict(variables))

    def workdir(self, path):
        return self._with("workdir", _check_abs(path, "workdir"))

    def entrypoint(self, argv):
        if isinstance(argv, str):
            raise TypeError("entrypoint: expected a list of strings, e.g. ['python3', '-m', "
                            "'app']")
        return self._with("entrypoint", _strings(argv, "entrypoint"))

    # ---- the API body ----

    def _base_text(self):
        b = self._base
        return f"oci-archive:{b.path}" if isinstance(b, _Local) else b

    def spec(self, name=None):
        """The POST /v1/images body; local copies as {"local": path, "dest": ...} (and a local
        OCI archive as "oci-archive:PATH") until build() uploads them."""
        steps = []
        for key, value in self._steps:
            if isinstance(value, _Local):
                value = {"local": value.path, "dest": value.dest}
            elif isinstance(value, (list, dict)):
                value = type(value)(value)
            steps.append({key: value})
        body = {"base": self._base_text(), "steps": steps}
        if name is not None:
            body["name"] = name
        return body

    def _locals(self):
        found = [v for _, v in self._steps if isinstance(v, _Local)]
        return ([self._base] if isinstance(self._base, _Local) else []) + found

    @staticmethod
    def _pack_local(loc, f):
        """Write what loc uploads to the temporary file f; returns (digest, size). An OCI
        archive is copied as it is, hashed on the way: the upload is the copy, so the file
        changing meanwhile cannot make the bytes sent differ from their digest."""
        if loc.kind != "oci":
            return pack_tar(loc.path, f, loc.target()[1])
        with open(loc.path, "rb") as src:
            if os.fstat(src.fileno()).st_size > MAX_BLOB_BYTES:
                raise InvalidArgument(f"{loc.path}: over the {MAX_BLOB_BYTES >> 20} MiB a "
                                      f"blob may hold")
            w = _TarWriter(f, loc.path)
            while chunk := src.read(1 << 20):
                w.write(chunk)
        return w.sha.hexdigest(), w.size

    def _ref(self):
        """What a sandbox can start on as it is, without a build: busybox, an image's id or
        name with no steps added; else None."""
        b = self._base
        if self._steps or not isinstance(b, str) or b == "debian-slim" or ":" in b:
            return None  # a Debian base or a directory: made by a build
        return b

    def build(self, client=None, name=None, logs=None, timeout_s=None):
        """Build on the server and return the image's id once it is ready. Every local file
        is checked before anything is uploaded. logs: called with each piece of the build's
        output (str) as it comes. Raises ImageBuildError (naming the failed step) when the
        build fails, and SkiffError (DeadlineExceeded) when timeout_s passes first."""
        client = client or default_client()
        for loc in self._locals():
            loc.check()
        body = self.spec(name)
        # Everything is packed before anything is uploaded: bad input found deep in the last
        # tree (a fifo, a name that is not UTF-8) leaves the server untouched.
        with contextlib.ExitStack() as stack:
            packed = {}
            for loc in self._locals():
                f = stack.enter_context(tempfile.TemporaryFile(prefix="skiff-tar-"))
                packed[id(loc)] = (f, *self._pack_local(loc, f))

            def upload(loc):
                f, digest, size = packed[id(loc)]
                _upload(client, f, size, digest)
                return f"sha256:{digest}"

            if isinstance(self._base, _Local):
                body["base"] = "oci-archive:" + upload(self._base)
            for step, (key, value) in zip(body["steps"], self._steps):
                if isinstance(value, _Local):
                    dest, _ = value.target()
                    step[key] = {"blob": upload(value), "dest": dest}
        im = client.json("POST", "/v1/images", json=body, timeout=max(client.timeout, 120.0))
        return Images(client).wait(im["id"], logs=logs, timeout_s=timeout_s)


class Images:
    """The images of a client's workspace: ``client.images`` (or ``Images()`` for the default
    client)."""

    def __init__(self, client=None):
        self._client = client or default_client()

    def list(self):
        out, cursor = [], None
        while True:
            page = self._client.json("GET", "/v1/images",
                                     query={"limit": 200, "cursor": cursor})
            out.extend(page.get("items") or [])
            cursor = page.get("next_cursor")
            if not cursor:
                return out

    def get(self, ref):
        """The image object of an id or a name."""
        return self._client.json("GET", f"/v1/images/{_q(ref)}")

    def delete(self, ref):
        return self._client.json("DELETE", f"/v1/images/{_q(ref)}")

    def logs(self, ref):
        """The build's output so far, as text."""
        r = self._client.request("GET", f"/v1/images/{_q(ref)}/logs")
        return r.body.decode("utf-8", "replace")

    def _follow_logs(self, image_id, logs, deadline):
        """Pass the build's output to logs as it comes, until the build ends or deadline
        (time.monotonic(), or None) passes. The server sends the whole log on each request:
        a stream cut short while the build goes on is opened again and what was passed
        already is skipped. Characters cut between reads are passed whole."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        seen = 0  # bytes of the log passed to logs
        for attempt in itertools.count():
            if attempt:
                time.sleep(min(BUILD_POLL_S * 2 ** min(attempt - 1, 4), 5.0))
            if _left(deadline) == 0.0:
                return
            try:
                r = self._client.open_stream(f"/v1/images/{_q(image_id)}/logs",
                                             query={"follow": "true"},
                                             timeout=_idle_timeout(deadline))
            except SkiffError:
                return  # wait's polling says what the server answers
            got = 0  # bytes of the log this stream has brought
            cut = False
            try:
                while _left(deadline) != 0.0:
                    r._skiff_sock.settimeout(_idle_timeout(deadline))
                    chunk = r.read1(64 << 10) if hasattr(r, "read1") else r.read(4096)
                    if not chunk:
                        break
                    new = chunk[max(0, seen - got):]
                    got += len(chunk)
                    if new:
                        seen = got
                        text = decoder.decode(new)
                        if text:
                            logs(text)
            except (OSError, http.client.HTTPException):
                cut = True  # the state below says whether to go on
            finally:
                r.close()
                r._skiff_conn.close()
            if self._get_patiently(image_id, deadline).get("state") != "building":
                if cut:  # the build ended meanwhile: the rest of its output, at once
                    rest = self._client.request("GET", f"/v1/images/{_q(image_id)}/logs").body
                    text = decoder.decode(rest[seen:])
                    if text:
                        logs(text)
                tail = decoder.decode(b"", final=True)
                if tail:
                    logs(tail)
                return

    def _get_patiently(self, image_id, deadline):
        """get(), waiting out a server busy (503) or out of reach for up to
        BUILD_WAIT_RETRY_S (and deadline): the build goes on without us."""
        since = time.monotonic()
        while True:
            try:
                return self.get(image_id)
            except Unavailable:
                if time.monotonic() - since >= BUILD_WAIT_RETRY_S or _left(deadline) == 0.0:
                    raise
            time.sleep(BUILD_POLL_S * 2)

    def wait(self, image_id, logs=None, timeout_s=None):
        """Wait for a build to end; returns the id when ready, raises ImageBuildError when it
        failed, DeadlineExceeded when timeout_s passes first (following logs included)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        if logs is not None:
            self._follow_logs(image_id, logs, deadline)
        while True:
            im = self._get_patiently(image_id, deadline)
            state = im.get("state")
            if state == "ready":
                return im["id"]
            if state != "building":
                raise _build_error(image_id, im)
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceeded(f"image {image_id} still building after {timeout_s} s")
            time.sleep(BUILD_POLL_S)


def _left(deadline):
    """Seconds to deadline (0.0 once passed), None without one."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _idle_timeout(deadline):
    left = _left(deadline)
    return LOG_STREAM_IDLE_S if left is None else max(0.05, min(LOG_STREAM_IDLE_S, left))


def _build_error(image_id, im):
    e = im.get("error")
    msg = e if isinstance(e, str) else (e or {}).get("message") if isinstance(e, dict) else None
    step = im.get("failed_step")
    if step is None and isinstance(e, dict):
        step = e.get("step")
    if step is None and msg:
        m = re.match(r"step (\d+)\b", msg)  # the server's message starts with the step
        step = int(m.group(1)) if m else None
    where = f" at step {step}" if step is not None and not (msg or "").startswith("step") else ""
    return ImageBuildError(f"image {image_id} {im.get('state')}{where}: {msg or 'no reason given'}",
                           image_id=image_id, step=step, image=im)
