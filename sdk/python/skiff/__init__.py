"""skiff: the Python SDK of the skiff sandbox platform (standard library only).

    import skiff
    with skiff.Sandbox.create(memory_mib=256) as sb:
        r = sb.exec("sh", "-c", "echo hi")
        print(r.exit_code, r.stdout_text)
"""

from .client import Client, DEFAULT_URL, config_path, configure, default_client
from .errors import (Conflict, DeadlineExceeded, Internal, InvalidArgument, NotFound,
                     PayloadTooLarge, PermissionDenied, ResourceExhausted, SkiffError,
                     Unauthenticated, Unavailable)
from .image import Image, ImageBuildError, Images
from .sandbox import EntryList, Exec, ExecResult, ExecStdin, FileEntry, Files, Sandbox
from .stream import OutputStream

__version__ = "0.1.0"

__all__ = [
    "Client", "DEFAULT_URL", "config_path", "configure", "default_client",
    "SkiffError", "InvalidArgument", "Unauthenticated", "PermissionDenied", "NotFound",
    "Conflict", "PayloadTooLarge", "ResourceExhausted", "DeadlineExceeded", "Unavailable",
    "Internal",
    "Sandbox", "ExecResult", "Exec", "ExecStdin", "Files", "FileEntry", "EntryList",
    "OutputStream", "Image", "ImageBuildError", "Images",
]
