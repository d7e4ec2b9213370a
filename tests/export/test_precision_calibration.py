"""Calibration images: found in folders and list files, prepared exactly like runtime frames."""
import cv2
import numpy as np
import pytest

from export.precision.calibration import find_calibration_images, load_calibration_set, spread
from export.scenes import draw_scene
from pspcore.errors import InputError
from pspcore.model_info import ModelInfo
from pspcore.preprocess import prepare_frame


@pytest.fixture
def image_dir(tmp_path):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), draw_scene(40, 60, seed=i))
    cv2.imwrite(str(folder / "sub" / "3.jpg"), draw_scene(50, 30, seed=3))
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_folder_is_searched_recursively_for_images(image_dir):
    found = find_calibration_images(image_dir)
    assert [p.name for p in found] == ["0.png", "1.png", "2.png", "3.jpg"]


def test_list_file_takes_the_image_column_relative_to_its_folder(image_dir, tmp_path):
    listing = tmp_path / "calib.txt"
    listing.write_text("# calibration\nimages/0.png labels/0.png\n\nimages/sub/3.jpg\n")
    assert find_calibration_images(list_file=listing) == [tmp_path / "images/0.png", tmp_path / "images/sub/3.jpg"]


@pytest.mark.parametrize("kwargs,message", [
    ({}, "exactly one of"),
    ({"images_dir": "a", "list_file": "b"}, "exactly one of"),
    ({"images_dir": "/no/such/folder"}, "folder not found"),
    ({"list_file": "/no/such/list.txt"}, "not found"),
])
def test_bad_sources_are_input_errors(kwargs, message):
    with pytest.raises(InputError, match=message):
        find_calibration_images(**kwargs)


def test_empty_folder_and_empty_list(tmp_path):
    with pytest.raises(InputError, match="no calibration images"):
        find_calibration_images(tmp_path)
    listing = tmp_path / "empty.txt"
    listing.write_text("# nothing\n")
    with pytest.raises(InputError, match="no images listed"):
        find_calibration_images(list_file=listing)


def test_spread_covers_the_whole_set():
    assert spread(list(range(10)), 3) == [0, 4, 9]
    assert spread(list(range(3)), 8) == [0, 1, 2]
    assert spread(list(range(3)), None) == [0, 1, 2]


def test_images_are_prepared_like_runtime_frames(image_dir):
    info = ModelInfo(mean=(100.0, 110.0, 120.0), std=(50.0, 60.0, 70.0))
    paths = find_calibration_images(image_dir)
    calib = load_calibration_set(paths, info, (33, 49), progress=False)
    assert calib.batch.shape == (4, 3, 33, 49) and calib.batch.dtype == np.float32
    expected = prepare_frame(cv2.imread(str(paths[3])), info, (33, 49))[0]
    np.testing.assert_array_equal(calib.batch[3], expected)


def test_unreadable_images_are_skipped_and_reported(image_dir):
    bad = image_dir / "broken.png"
    bad.write_bytes(b"\x89PNG truncated")
    paths = [*find_calibration_images(image_dir), image_dir / "gone.png"]
    calib = load_calibration_set(paths, ModelInfo(), (33, 33), progress=False)
    assert len(calib.used) == 4
    assert {(p.name, why.split()[0]) for p, why in calib.skipped} == {("broken.png", "not"), ("gone.png", "missing")}
    with pytest.raises(InputError, match="none of the 2 calibration images could be read"):
        load_calibration_set([bad, image_dir / "gone.png"], ModelInfo(), (33, 33), progress=False)


@pytest.mark.parametrize("n, stride", [(64, 2), (16, 2), (13, 1), (1, 1), (2, 2)])
def test_calibration_stride_divides_the_image_count(n, stride):
    from export.precision.targets.int8_onnxruntime import calibration_stride

    assert calibration_stride(n) == stride and n % stride == 0


def test_calibration_reader_serves_each_stride_then_stops():
    """ONNX Runtime reads strides with set_range + get_next until None; every image comes exactly once."""
    from export.precision.targets.int8_onnxruntime import _Batches

    batch = np.arange(5 * 3 * 2 * 2, dtype=np.float32).reshape(5, 3, 2, 2)
    reader = _Batches("image", batch)
    assert len(reader) == 5
    seen = []
    for start in range(0, 5, 2):
        reader.set_range(start_index=start, end_index=start + 2)
        while (item := reader.get_next()) is not None:
            seen.append(int(item["image"][0, 0, 0, 0]) // 12)
    assert seen == [0, 1, 2, 3, 4]
    reader.rewind()
    assert sum(1 for _ in iter(reader.get_next, None)) == 5


def test_a_named_dataset_gives_its_split_images(tmp_path):
    from tests.pspnet.dataset_trees import make_cityscapes

    root, _ = make_cityscapes(tmp_path)
    found = find_calibration_images(data_root=root, dataset="cityscapes")
    assert [p.name for p in found] == ["aachen_000000_000019_leftImg8bit.png", "bochum_000000_000313_leftImg8bit.png"]
    assert [p.parent.name for p in find_calibration_images(data_root=root, dataset="cityscapes", split="val")] == [
        "frankfurt"]
    with pytest.raises(InputError, match="exactly one of"):
        find_calibration_images(images_dir=tmp_path, data_root=root, dataset="cityscapes")
    with pytest.raises(InputError, match="--calib-dataset voc needs --data-root"):
        find_calibration_images(dataset="voc")
    with pytest.raises(InputError, match="not a Pascal VOC2012 folder.*dataset 'cityscapes'"):
        find_calibration_images(data_root=root, dataset="voc")


def test_int8_cli_takes_a_dataset_as_calibration_source(tmp_path):
    from click.testing import CliRunner

    from export.precision.cli import int8_command

    result = CliRunner().invoke(int8_command, [str(tmp_path / "m.onnx"), "-o", str(tmp_path / "q.onnx"),
                                               "--calib-dataset", "ade20k", "--data-root", str(tmp_path)])
    assert result.exit_code == 2 and result.output.startswith("error: ")
    assert "not an ADE20K (ADEChallengeData2016) folder: expected images/ and annotations/" in result.output
