"""The reference list-file format: one `image_path label_path` pair a line, relative to a data root
(absolute paths are kept as they are); blank lines and `#` comments are skipped."""
from __future__ import annotations

import os
from pathlib import Path

from pspcore.errors import InputError
from pspcore.files import read_list_file
from pspnet.data.samples import Sample, SampleSource


def read_list(list_path: str | os.PathLike, data_root: str | os.PathLike | None = None) -> list[tuple[Path, Path]]:
    """The (image, label) pairs of a list file; every file must exist. `data_root` defaults to the list's folder."""
    pairs = read_list_file(list_path, data_root)
    missing = [str(p) for pair in pairs for p in pair if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        root = data_root if data_root is not None else Path(list_path).parent
        raise InputError(f"{list_path}: file not found: {missing[0]}{more} (paths are relative to {root})")
    return pairs


class ListFileSource(SampleSource):
    """`source[i]` -> (image RGB uint8 HxWx3, label uint8 HxW) read from a list file's pair i; labels may be
    grey or palette PNGs (pspnet.data.samples.read_label)."""

    def __init__(self, list_path: str | os.PathLike, data_root: str | os.PathLike | None = None):
        super().__init__([Sample(image, label) for image, label in read_list(list_path, data_root)])
