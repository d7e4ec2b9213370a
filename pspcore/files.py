"""Files in and out: output that never leaves a partial file at the final name, checks that fail before slow
work, content hashes for provenance, image folders and the reference list-file format."""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from pspcore.errors import InputError


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
        raise InputError(f"cannot write {path}: {_blocker(path) or exc.strerror or exc}") from None
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the final file gets the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _blocker(path: Path) -> str | None:
    """Why a file cannot be created at `path` when an ancestor is in the way: '<x> is a file, not a folder'."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else f"{parent} is a file, not a folder"
    return None


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


def check_writable(path: str | os.PathLike) -> Path:
    """Fail before the slow work, not after it, when a file cannot be written at `path`."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a directory")
    blocker = _blocker(path)
    if blocker:
        raise InputError(f"cannot write {path}: {blocker}")
    parent = path.parent if str(path.parent) else Path(".")
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {path}: {parent} is not writable")
    return path


def check_folder(path: str | os.PathLike, what: str = "folder") -> Path:
    """Fail before the slow work when `path` cannot be (or become) a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {path} is a file; give a folder")
    blocker = _blocker(path)
    if blocker:
        raise InputError(f"cannot create {what} {path}: {blocker}")
    existing = path if path.exists() else next(p for p in path.parents if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"cannot write into {path}: {existing} is not writable")
    return path


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def suffix_of(path: str | os.PathLike) -> str:
    """A file's kind as its name tells it: the suffix, lower-cased ('' when it has none)."""
    return Path(str(path)).suffix.lower()


def by_suffix(path: str | os.PathLike, table: dict):
    """The one dispatch on a model file's suffix: the value `table` gives `path`'s suffix (a key is a suffix
    or a tuple of them, e.g. ENGINE_SUFFIXES), or None when no key names it."""
    suffix = suffix_of(path)
    for key, value in table.items():
        if suffix in ((key,) if isinstance(key, str) else key):
            return value
    return None


def is_image(path: str | os.PathLike) -> bool:
    return suffix_of(path) in IMAGE_SUFFIXES


def list_images(path: str | os.PathLike, recursive: bool = False, what: str = "image") -> list[Path]:
    """One image file, or the images in a folder sorted by path (with `recursive`, in its subfolders too)."""
    p = Path(path)
    if p.is_dir():
        found = p.rglob("*") if recursive else p.iterdir()
        images = sorted(f for f in found if f.is_file() and is_image(f))
        if not images:
            raise InputError(f"{p}: no {what}s ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return images
    require_file(p, what)
    return [p]


def read_list_file(list_path: str | os.PathLike, data_root: str | os.PathLike | None = None,
                   fields: tuple[int, int] = (2, 2), what: str = "list file") -> list[tuple[Path, ...]]:
    """The rows of a reference list file (`image_path label_path` a line): paths relative to `data_root`
    (default: the list's folder; absolute paths kept), blank lines and `#` comments skipped. A row must have
    fields[0]..fields[1] paths; an empty list is an InputError."""
    list_path = require_file(list_path, what)
    root = Path(data_root) if data_root is not None else list_path.parent
    if not root.is_dir():
        raise InputError(f"data root is not a directory: {root}")
    rows = []
    for number, line in enumerate(list_path.read_text().splitlines(), 1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        if not fields[0] <= len(parts) <= fields[1]:
            expected = "'image label'" if fields == (2, 2) else "'image [label]'"
            raise InputError(f"{list_path}:{number}: expected {expected}, found {len(parts)} field(s)")
        rows.append(tuple(root / part for part in parts))
    if not rows:
        raise InputError(f"{list_path}: empty dataset (no 'image label' lines)" if fields == (2, 2)
                         else f"{list_path}: no images listed")
    return rows
