"""A stand-in for the image routes of the API (/v1/blobs, /v1/images) on loopback, recording
every request: the client-side tests of `skiff image build` and skiff.Image check what the
clients send (bodies, uploads, and that bad input sends nothing) without a skiffd."""

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    import pytest
except ImportError:  # bench/image_pack.py uses the stand-in alone
    pytest = None

MAX_BODY = 64 << 20


class FakeImagesAPI:
    """requests: (method, path, body bytes) in order; blobs: hex -> bytes. The build ends in
    final_state with error as the image's "error"; logs is the build's output."""

    def __init__(self):
        self.requests = []
        self.blobs = {}
        self.final_state = "ready"
        self.error = None
        self.logs = b"step 1/1: done\n"
        self.on_head = None  # called before a HEAD of a blob is answered
        # Followed logs: the nth ?follow=true request (while n < len) writes the nth list's
        # pieces one by one and drops the connection, the image building meanwhile; after
        # them, with hang_follow, a follow writes logs and then holds the stream open.
        self.follow_pieces = []
        self.follows = 0
        self.hang_follow = False
        self.closing = threading.Event()
        self.get_failures = 0  # so many GETs of the image answer 503 first
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _reply(self, status, body=b"", ctype="application/json"):
                if not isinstance(body, bytes):
                    body = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if 0 < n <= MAX_BODY else b""
                with fake.lock:
                    fake.requests.append((self.command, self.path, body))
                return fake.route(self, body)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()

    def image(self):
        state = "building" if self.follows < len(self.follow_pieces) else self.final_state
        im = {"id": "im-00000000000000000000000000", "state": state}
        if self.error is not None:
            im["error"] = self.error
        return im

    def route(self, h, body):
        m, path = h.command, h.path.split("?")[0]
        if path.startswith("/v1/blobs/sha256:"):
            hexd = path.rsplit(":", 1)[1]
            if m == "HEAD":
                if self.on_head:
                    self.on_head()
                return h._reply(200 if hexd in self.blobs else 404)
            if m == "PUT":
                if hashlib.sha256(body).hexdigest() != hexd:
                    return h._reply(400, {"error": {"code": "invalid_argument",
                                                    "message": "digest mismatch"}})
                self.blobs[hexd] = body
                return h._reply(201, {"digest": f"sha256:{hexd}", "size": len(body)})
        if path == "/v1/images" and m == "POST":
            return h._reply(202, {"id": "im-00000000000000000000000000", "state": "building"})
        if path.endswith("/logs") and "follow=true" in h.path:
            if self.follows < len(self.follow_pieces) or self.hang_follow:
                return self.follow(h)
        if path.endswith("/logs"):
            return h._reply(200, self.logs, "text/plain")
        if path.startswith("/v1/images/") and m == "GET":
            with self.lock:
                fail = self.get_failures > 0
                self.get_failures -= fail
            if fail:
                return h._reply(503, {"error": {"code": "unavailable", "message": "busy"}})
            return h._reply(200, self.image())
        return h._reply(404, {"error": {"code": "not_found", "message": f"no route {path}"}})

    def follow(self, h):
        """A followed log written in pieces, then dropped (or held open)."""
        with self.lock:
            n = self.follows
            pieces = self.follow_pieces[n] if n < len(self.follow_pieces) else [self.logs]
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Transfer-Encoding", "chunked")  # as skiffd streams it
        h.end_headers()
        for p in pieces:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(p), p))
            h.wfile.flush()
            time.sleep(0.2)  # pieces arrive apart
        with self.lock:
            self.follows += 1
        if n >= len(self.follow_pieces):
            self.closing.wait(120)
        h.close_connection = True  # dropped: no last chunk

    def posted(self):
        """The bodies of POST /v1/images, parsed."""
        return [json.loads(b) for m, p, b in self.requests if m == "POST" and p == "/v1/images"]

    def puts(self):
        return [p for m, p, _ in self.requests if m == "PUT"]


if pytest is not None:
    @pytest.fixture
    def fake():
        """A FakeImagesAPI for one test."""
        f = FakeImagesAPI()
        yield f
        f.close()
