"""File output that never leaves a partial file at the final name, and content hashes for provenance."""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from runtime.errors import InputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside `path`; on success it is renamed to `path`, on any failure removed.

    `suffix` keeps an extension some writers insist on (OpenCV picks the container from it)."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".partial", dir=parent)
        os.close(fd)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the final file gets the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def require_file(path: str | os.PathLike, what: str = "file", error: type[InputError] = InputError) -> Path:
    """The path, if it names an existing readable file; else `error` (an InputError) naming it."""
    p = Path(path)
    if not p.exists():
        raise error(f"{what} not found: {p}")
    if not p.is_file():
        raise error(f"{what} is not a file: {p}")
    if not os.access(p, os.R_OK):
        raise error(f"{what} is not readable: {p}")
    return p
