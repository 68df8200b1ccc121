"""Streamed output: an exec's (or a sandbox's main command's) stdout and stderr as they are
written, read as ndjson events from the server with one byte offset per stream, so that a
dropped connection or a restarting server costs nothing: the read resumes where it stopped."""

import base64
import http.client
import json
import time

from .errors import (Conflict, InvalidArgument, NotFound, PermissionDenied, SkiffError,
                     Unauthenticated, Unavailable)

__all__ = ["OutputStream"]

RESUME_WAIT_S = 0.5     # before reading on after a cut
RESUME_MAX_TRIES = 120  # about a minute of a server that is away
STREAM_IDLE_S = 120.0   # no byte for this long on an open stream: reconnect


class _Follower:
    """Yields (stream name, bytes) from path's ndjson output from the given offsets until the
    writer ends (exit_code is then set, None when it ended without one) — or, with
    follow=False, until what was written so far is read."""

    def __init__(self, client, path, follow=True):
        self.client = client
        self.path = path
        self.follow = follow
        self.offsets = {"stdout": 0, "stderr": 0}
        self.dropped = {"stdout": 0, "stderr": 0}
        self.ended = False
        self.exit_code = None

    def _events(self):
        query = {"format": "ndjson", "stdout_offset": self.offsets["stdout"],
                 "stderr_offset": self.offsets["stderr"]}
        if self.follow:
            query["follow"] = "true"
        r = self.client.open_stream(self.path, query=query, timeout=STREAM_IDLE_S)
        try:
            while True:
                line = r.readline()
                if not line:
                    return
                if not line.endswith(b"\n"):
                    raise http.client.IncompleteRead(line)  # cut mid-event: read it again
                yield json.loads(line)
        finally:
            r.close()
            r._skiff_conn.close()

    def __iter__(self):
        tries = 0
        while not self.ended:
            before = self.offsets["stdout"] + self.offsets["stderr"]
            try:
                for ev in self._events():
                    if "exit_code" in ev:
                        self.ended = True
                        self.exit_code = ev["exit_code"]
                        return
                    name = ev["stream"]
                    start = ev["offset"]
                    data = base64.b64decode(ev["data_b64"])
                    if start > self.offsets[name]:
                        self.dropped[name] += start - self.offsets[name]
                    self.offsets[name] = start + len(data)
                    if data:
                        tries = 0  # it moved on: only cuts in a row count
                        yield name, data
                if not self.follow:
                    # One read returns up to 1 MiB a stream: read on until one brings nothing.
                    if self.offsets["stdout"] + self.offsets["stderr"] > before:
                        continue
                    return
            except (NotFound, Conflict, InvalidArgument, PermissionDenied, Unauthenticated):
                raise  # the server meant it: reading again won't help
            except TimeoutError:
                continue  # a quiet stream: ask again, it is not a cut
            except (SkiffError, OSError, http.client.HTTPException, ValueError):
                pass  # cut short (a dropped connection, a restart): read on from the offsets
            tries += 1
            if tries > RESUME_MAX_TRIES:
                raise Unavailable(f"{self.path}: the output stream kept breaking off")
            time.sleep(RESUME_WAIT_S)


class OutputStream:
    """One output stream ("stdout" or "stderr") of an exec or of a sandbox's main command, read
    as it is written. Iterate it for text lines (with their "\\n"); iter_bytes() for chunks of
    bytes as they come; read() / read_bytes() for all of it once the writer has ended. Each
    iteration starts from the beginning of what the server still keeps and survives dropped
    connections and server restarts (reads resume from byte offsets). Bytes the server dropped
    before they were read (a stream keeps its last 16 MiB) are counted in `dropped`."""

    def __init__(self, client, path, name, on_end=None):
        self._client = client
        self._path = path
        self.name = name
        self._on_end = on_end
        self.dropped = 0

    def iter_bytes(self, follow=True):
        f = _Follower(self._client, self._path, follow)
        for name, data in f:
            if name == self.name:
                yield data
        self.dropped = f.dropped[self.name]
        if f.ended and self._on_end:
            self._on_end(f.exit_code)

    def __iter__(self):
        pending = b""
        for chunk in self.iter_bytes():
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield (line + b"\n").decode("utf-8", "replace")
        if pending:
            yield pending.decode("utf-8", "replace")

    def read_bytes(self):
        return b"".join(self.iter_bytes())

    def read(self):
        return self.read_bytes().decode("utf-8", "replace")

    def __repr__(self):
        return f"OutputStream({self._path!r}, {self.name!r})"
