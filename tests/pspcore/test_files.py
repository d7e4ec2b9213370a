"""Files: atomic output, image folders and the list-file format shared by training, evaluation and calibration."""
from pathlib import Path

import pytest

from pspcore.errors import InputError
from pspcore.files import atomic_output, list_images, read_list_file


def test_list_images(tmp_path):
    for name in ("b.png", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.png"]
    assert list_images(tmp_path / "a.jpg") == [tmp_path / "a.jpg"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        list_images(tmp_path / "empty")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.webp").write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path, recursive=True)] == ["a.jpg", "b.png", "c.webp"]


def test_list_file_rows_comments_and_field_counts(tmp_path):
    listing = tmp_path / "val.txt"
    listing.write_text("# header\na.jpg a.png\n\n/abs/b.jpg b.png  # trailing comment\n")
    assert read_list_file(listing) == [(tmp_path / "a.jpg", tmp_path / "a.png"),
                                      (Path("/abs/b.jpg"), tmp_path / "b.png")]
    assert read_list_file(listing, tmp_path / "..", fields=(1, 2))[0][0] == tmp_path / ".." / "a.jpg"
    listing.write_text("a.jpg a.png extra\n")
    with pytest.raises(InputError, match=r"val.txt:1: expected 'image label', found 3 field"):
        read_list_file(listing)
    listing.write_text("# nothing\n")
    with pytest.raises(InputError, match="empty dataset"):
        read_list_file(listing)
    with pytest.raises(InputError, match="data root is not a directory"):
        read_list_file(listing, tmp_path / "missing")


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_output(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and list(tmp_path.iterdir()) == [target]


def test_one_dispatch_on_a_model_files_suffix(tmp_path):
    """by_suffix is the one rule (case-insensitive, a key may be a tuple of suffixes); model info, Triton export
    and the model cost all dispatch through it and refuse what no key names."""
    from pspcore.engine_file import ENGINE_SUFFIXES
    from pspcore.files import by_suffix, suffix_of
    from pspcore.model_reader import read_model_info

    table = {".onnx": "onnx", ENGINE_SUFFIXES: "engine"}
    assert [by_suffix(f"m{s}", table) for s in (".ONNX", ".plan", ".Engine", ".xml", "")] == [
        "onnx", "engine", "engine", None, None]
    assert suffix_of("a/b.PTH") == ".pth" and suffix_of("model") == ""
    with pytest.raises(InputError, match="cannot read model info from a .xml file"):
        read_model_info(tmp_path / "m.xml")
