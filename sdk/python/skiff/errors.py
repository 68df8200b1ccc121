"""Typed errors: one class per error code of the skiff API.

Every error the SDK raises is a :class:`SkiffError`; ``.code`` is the API's code
(``"not_found"``, ...), ``.status`` the HTTP status (``None`` when no reply came back, e.g. the
server could not be reached) and ``.message`` what the server (or the SDK) said.
"""

__all__ = [
    "SkiffError", "InvalidArgument", "Unauthenticated", "PermissionDenied", "NotFound",
    "Conflict", "PayloadTooLarge", "ResourceExhausted", "DeadlineExceeded", "Unavailable",
    "Internal", "error_from_reply",
]


class SkiffError(Exception):
    """Base class of every error the SDK raises."""

    code = "unknown"
    default_status = None

    def __init__(self, message, code=None, status=None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.status = status

    def __str__(self):
        where = f"{self.status} " if self.status is not None else ""
        return f"{where}{self.code}: {self.message}"

    def __repr__(self):
        return (f"{type(self).__name__}(message={self.message!r}, code={self.code!r}, "
                f"status={self.status!r})")


class InvalidArgument(SkiffError):
    code = "invalid_argument"
    default_status = 400


class Unauthenticated(SkiffError):
    code = "unauthenticated"
    default_status = 401


class PermissionDenied(SkiffError):
    code = "permission_denied"
    default_status = 403


class NotFound(SkiffError):
    code = "not_found"
    default_status = 404


class Conflict(SkiffError):
    code = "conflict"
    default_status = 409


class PayloadTooLarge(SkiffError):
    code = "payload_too_large"
    default_status = 413


class ResourceExhausted(SkiffError):
    code = "resource_exhausted"
    default_status = 429


class DeadlineExceeded(SkiffError):
    code = "deadline_exceeded"
    default_status = 504


class Unavailable(SkiffError):
    code = "unavailable"
    default_status = 503


class Internal(SkiffError):
    code = "internal"
    default_status = 500


_BY_CODE = {c.code: c for c in (InvalidArgument, Unauthenticated, PermissionDenied, NotFound,
                                Conflict, PayloadTooLarge, ResourceExhausted, DeadlineExceeded,
                                Unavailable, Internal)}
# When a reply has no (known) code: by status. 503 is both unavailable and resource_exhausted;
# without a code, unavailable is the better guess.
_BY_STATUS = {400: InvalidArgument, 401: Unauthenticated, 403: PermissionDenied, 404: NotFound,
              409: Conflict, 413: PayloadTooLarge, 429: ResourceExhausted, 500: Internal,
              503: Unavailable, 504: DeadlineExceeded}


def error_from_reply(status, body):
    """The error for an HTTP reply with a non-2xx status; body is the raw reply (bytes)."""
    import json

    code = message = None
    try:
        obj = json.loads(body) if body else None
        err = obj.get("error") if isinstance(obj, dict) else None
        if isinstance(err, dict):
            code = err.get("code") if isinstance(err.get("code"), str) else None
            message = err.get("message") if isinstance(err.get("message"), str) else None
    except ValueError:
        pass
    if message is None:
        text = body.decode("utf-8", "replace").strip() if body else ""
        message = text[:500] or f"HTTP {status}"
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status)
    if cls is None:
        cls = Internal if status >= 500 else SkiffError
    return cls(message, code=code or cls.code, status=status)
