"""The HTTP client: one keep-alive connection per Client, bearer auth, typed errors.

Where the server is and the token come, in this order, from the arguments, the environment
(``SKIFF_URL``, ``SKIFF_TOKEN``) and the CLI's config file (``$XDG_CONFIG_HOME/skiff/config.json``
or ``~/.config/skiff/config.json``, ``{"url": ..., "token": ...}``, written by ``skiff login``);
the URL defaults to ``http://127.0.0.1:7457``. As in the CLI, the config file's token is used only
for the config file's URL, so pointing the SDK elsewhere never sends it there.
"""

import http.client
import json as _json
import os
import select
import socket
import threading
import urllib.parse

from .errors import DeadlineExceeded, InvalidArgument, SkiffError, Unavailable, error_from_reply

__all__ = ["Client", "DEFAULT_URL", "default_client", "configure", "config_path"]

DEFAULT_URL = "http://127.0.0.1:7457"
DEFAULT_TIMEOUT_S = 60.0          # an ordinary request
DEFAULT_CONNECT_TIMEOUT_S = 10.0
MAX_CONFIG_BYTES = 64 * 1024
USER_AGENT = "skiff-python/0.1"

# What a reused keep-alive connection raises when the server had closed it while it was idle:
# the request is sent again, once, on a new connection.
_STALE_ERRORS = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                 ConnectionAbortedError, http.client.BadStatusLine)


def config_path():
    """The CLI's config file: $XDG_CONFIG_HOME/skiff/config.json (when absolute), else
    ~/.config/skiff/config.json; None when no home directory is known."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    if base.startswith("/"):
        return os.path.join(base, "skiff", "config.json")
    home = os.environ.get("HOME", "")
    if not home.startswith("/"):
        try:
            import pwd
            home = pwd.getpwuid(os.getuid()).pw_dir
        except (ImportError, KeyError):
            return None
    return os.path.join(home, ".config", "skiff", "config.json")


def _load_config():
    """(url, token) from the config file, each None when absent."""
    path = config_path()
    if not path:
        return None, None
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return None, None
    except OSError as e:
        raise SkiffError(f"cannot read {path}: {e}", code="invalid_argument") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise InvalidArgument(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        cfg = _json.loads(data)
    except ValueError:
        cfg = None
    if not isinstance(cfg, dict):
        # The file holds the token: never quote it.
        raise InvalidArgument(f"{path}: not a JSON object; run skiff login")
    url = cfg.get("url") if isinstance(cfg.get("url"), str) else None
    token = cfg.get("token") if isinstance(cfg.get("token"), str) else None
    return (_normalize_url(url) if url else None), token


def _normalize_url(url):
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise InvalidArgument(f"URL {url!r} must start with http:// or https://")
    if any(c <= " " or c == "\x7f" for c in url):
        raise InvalidArgument("URL contains a space or control character")
    return url.rstrip("/")


def _check_token(token):
    if not token:
        raise InvalidArgument("the token is empty")
    if any(c <= " " or c >= "\x7f" for c in token):
        raise InvalidArgument("the token contains a space, control character or non-ASCII "
                              "character")
    return token


def _resolve(url, token):
    """(url, token) from arguments > environment > config file > default."""
    cfg = None
    if url is None:
        url = os.environ.get("SKIFF_URL") or None
    if url is None:
        cfg = _load_config()
        url = cfg[0]
    url = _normalize_url(url or DEFAULT_URL)
    if token is None:
        token = os.environ.get("SKIFF_TOKEN") or None
    if token is None:
        cfg = cfg or _load_config()
        if cfg[1] and cfg[0] == url:
            token = cfg[1]
    if token is not None:
        _check_token(token)
    return url, token


def _sock_is_stale(sock):
    """True when an idle keep-alive socket is readable: the server closed it (EOF) or sent
    something unasked; either way it can't carry the next request."""
    try:
        if hasattr(select, "poll"):
            p = select.poll()
            p.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
            return bool(p.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class _Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return _json.loads(self.body) if self.body else None


class Client:
    """A connection to one skiff server.

    One keep-alive HTTP connection, opened on the first request and reopened when the server
    has closed it while idle. A Client is safe to share between threads, but its requests run
    one at a time: give each thread its own Client for concurrency.

    ``connections_opened`` counts the TCP connections this client has made.
    """

    def __init__(self, url=None, token=None, *, timeout=DEFAULT_TIMEOUT_S,
                 connect_timeout=DEFAULT_CONNECT_TIMEOUT_S):
        self.url, self.token = _resolve(url, token)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        u = urllib.parse.urlsplit(self.url)
        self._https = u.scheme == "https"
        self._host = u.hostname or "127.0.0.1"
        self._port = u.port or (443 if self._https else 80)
        self._base = u.path.rstrip("/")
        self._conn = None
        self._lock = threading.Lock()
        self.connections_opened = 0
        self.requests_sent = 0

    def __repr__(self):
        return f"Client(url={self.url!r})"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Close the connection (the next request opens a new one)."""
        with self._lock:
            self._drop()

    def _drop(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None

    def _connect(self, timeout):
        conn = self._open_connection()
        self._conn = conn
        return conn

    def _open_connection(self):
        """A new connection to the server, connected (Unavailable when it can't be)."""
        if self._https:
            import ssl
            conn = http.client.HTTPSConnection(self._host, self._port,
                                               timeout=self.connect_timeout,
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(self._host, self._port,
                                              timeout=self.connect_timeout)
        try:
            conn.connect()
        except socket.timeout:
            conn.close()
            raise Unavailable(f"cannot connect to {self.url}: no answer within "
                              f"{self.connect_timeout:g} s") from None
        except OSError as e:
            conn.close()
            raise Unavailable(f"cannot connect to {self.url}: {e.strerror or e}") from None
        try:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.connections_opened += 1
        return conn

    def _path(self, path, query):
        p = self._base + path
        if query:
            items = []
            for k, v in (query.items() if isinstance(query, dict) else query):
                if v is None:
                    continue
                if isinstance(v, bool):
                    v = "true" if v else "false"
                items.append((k, str(v)))
            if items:
                p += "?" + urllib.parse.urlencode(items, quote_via=urllib.parse.quote,
                                                  safe="/:")
        return p

    def request(self, method, path, *, query=None, json=None, data=None, headers=None,
                timeout=None, check=True):
        """Send one request and return the reply (status, headers, body bytes); raises the
        matching SkiffError for a non-2xx status (check=False: returns it whatever its status).
        json= is sent as JSON, data= as raw bytes (or a binary file, streamed from its start,
        with its Content-Length in headers). timeout is the seconds to wait for the reply
        (default: the client's)."""
        h = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        body = None
        if json is not None:
            body = _json.dumps(json, separators=(",", ":")).encode()
            h["Content-Type"] = "application/json"
        elif data is not None and hasattr(data, "read"):
            body = data  # a file, sent from its start (headers must give Content-Length)
            h["Content-Type"] = "application/octet-stream"
        elif data is not None:
            body = data if isinstance(data, bytes) else bytes(data)
            h["Content-Type"] = "application/octet-stream"
        elif method in ("POST", "PUT", "PATCH"):
            body = b""
        h.update(headers or {})
        target = self._path(path, query)
        t = self.timeout if timeout is None else timeout
        with self._lock:
            resp = self._send(method, target, body, h, t)
        if check and not 200 <= resp.status < 300:
            raise error_from_reply(resp.status, resp.body)
        return resp

    def _send(self, method, target, body, headers, timeout):
        for attempt in (0, 1):
            conn = self._conn
            reused = conn is not None and conn.sock is not None
            if reused and _sock_is_stale(conn.sock):
                self._drop()
                reused = False
            if not reused:
                self._drop()
                conn = self._connect(timeout)
            conn.sock.settimeout(timeout)
            if hasattr(body, "seek"):
                body.seek(0)  # a file body, sent again after a stale connection
            try:
                self.requests_sent += 1
                conn.request(method, target, body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
                resp = _Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
                if r.will_close:
                    self._drop()
                return resp
            except socket.timeout:
                self._drop()
                raise DeadlineExceeded(f"{method} {target}: no reply from {self.url} within "
                                       f"{timeout:g} s") from None
            except _STALE_ERRORS as e:
                self._drop()
                # A connection the server had closed while idle: send once more on a new one.
                if reused and attempt == 0:
                    continue
                raise Unavailable(f"{method} {target}: the connection to {self.url} was "
                                  f"lost: {e or type(e).__name__}") from None
            except (OSError, http.client.HTTPException) as e:
                self._drop()
                raise Unavailable(f"{method} {target}: {self.url}: {e or type(e).__name__}") \
                    from None
        raise AssertionError("unreachable")

    def open_stream(self, path, *, query=None, timeout=None):
        """GET path on a connection of its own and return the http.client response once its
        head has come, for the caller to read as the body streams (and close). Raises the
        matching SkiffError for a non-2xx status; timeout bounds each wait for bytes."""
        h = {"User-Agent": USER_AGENT, "Accept": "application/x-ndjson, application/json"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        target = self._path(path, query)
        conn = self._open_connection()
        try:
            sock = conn.sock  # the connection forgets it when the reply says close
            sock.settimeout(self.timeout if timeout is None else timeout)
            conn.request("GET", target, headers=h)
            r = conn.getresponse()
        except socket.timeout:
            conn.close()
            raise DeadlineExceeded(f"GET {target}: no reply from {self.url}") from None
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise Unavailable(f"GET {target}: {self.url}: {e or type(e).__name__}") from None
        if not 200 <= r.status < 300:
            body = r.read()
            conn.close()
            raise error_from_reply(r.status, body)
        r._skiff_conn = conn  # closed with the response by the caller
        r._skiff_sock = sock  # for a caller to change the wait for bytes as it reads
        return r

    def json(self, method, path, **kw):
        """request() and the reply's JSON."""
        return self.request(method, path, **kw).json()

    @property
    def images(self):
        """This client's images: list(), get(id or name), delete(id), logs(id)."""
        from .image import Images
        return Images(self)

    def whoami(self):
        return self.json("GET", "/v1/whoami")

    def healthz(self):
        return self.request("GET", "/healthz").status == 200


_default = None
_default_lock = threading.Lock()


def default_client():
    """The module-level Client, made on first use from the environment or config file."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Client()
        return _default


def configure(url=None, token=None, **kw):
    """Replace the module-level Client with one for url/token; returns it."""
    global _default
    c = Client(url, token, **kw)
    with _default_lock:
        old, _default = _default, c
    if old is not None:
        old.close()
    return c
