"""Each dataset reader on a tiny tree in its download's layout, with labels in that dataset's real format,
checked pixel for pixel; and read_label, the one label reader (list files too)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from pspcore.errors import InputError
from pspcore.model_info import generic_palette
from pspnet.data import DATASETS, open_dataset
from pspnet.data.samples import read_label
from tests.pspnet.dataset_trees import (
    CITYSCAPES_TRAIN_ID,
    VOC_SPLITS,
    make_ade20k,
    make_cityscapes,
    make_voc,
    random_label,
    vocbit_palette,
    write_png,
)


def test_voc_palette_is_the_devkit_colormap():
    palette = DATASETS["voc"].label_set.palette
    assert palette[:5] == ((0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128))
    assert list(palette) == vocbit_palette(21)
    assert generic_palette(256)[255] == (224, 224, 192)  # the border colour of VOC's PNGs
    assert DATASETS["voc"].label_set.class_names[0] == "background"


def test_voc_reads_palette_indices_pixel_for_pixel(tmp_path):
    root, labels = make_voc(tmp_path, VOC_SPLITS)
    assert Image.open(root / "SegmentationClass" / "2007_000032.png").mode == "P"
    # why Pillow: OpenCV would hand back the palette's colours, not the class indices
    assert cv2.imread(str(root / "SegmentationClass" / "2007_000032.png"), cv2.IMREAD_UNCHANGED).ndim == 3
    data = open_dataset("voc", root, "train")
    assert len(data) == 2
    for index, image_id in enumerate(VOC_SPLITS["train"]):
        image, label = data[index]
        assert image.dtype == np.uint8 and image.shape == labels[image_id].shape + (3,)
        assert label.dtype == np.uint8
        np.testing.assert_array_equal(label, labels[image_id])
        assert (label[0] == 255).all()
    assert abs(int(image[0, 0, 0]) - 200) < 8 and int(image[0, 0, 2]) < 30  # RGB, not BGR


def test_voc_split_selection(tmp_path):
    root, _ = make_voc(tmp_path, VOC_SPLITS)
    for split, members in VOC_SPLITS.items():
        data = open_dataset("voc", root, split)
        assert [s.image.stem for s in data.samples] == members
        assert all(s.label.parent.name == "SegmentationClass" for s in data.samples)


def test_voc_train_aug_from_sbd_folder_excludes_val(tmp_path):
    rng = np.random.default_rng(1)
    aug = {i: random_label(rng, (8, 10), 21) for i in ["2007_000032", "2007_000033", "2008_000002"]}
    root, _ = make_voc(tmp_path, VOC_SPLITS, aug)
    data = open_dataset("voc", root, "train_aug")
    assert [s.image.stem for s in data.samples] == ["2007_000032", "2008_000002"]  # val's 2007_000033 left out
    assert all(s.label.parent.name == "SegmentationClassAug" for s in data.samples)
    np.testing.assert_array_equal(data[1][1], aug["2008_000002"])


def test_voc_train_aug_list_file_in_deeplab_format(tmp_path):
    rng = np.random.default_rng(2)
    aug = {i: random_label(rng, (8, 10), 21) for i in ["2007_000032", "2008_000002"]}
    root, _ = make_voc(tmp_path, VOC_SPLITS, aug)
    (root / "ImageSets/Segmentation/train_aug.txt").write_text(
        "/JPEGImages/2008_000002.jpg /SegmentationClassAug/2008_000002.png\n")
    data = open_dataset("voc", root, "train_aug")
    assert [s.image.stem for s in data.samples] == ["2008_000002"]


def test_voc_train_aug_without_sbd_says_what_is_missing(tmp_path):
    root, _ = make_voc(tmp_path, VOC_SPLITS)
    with pytest.raises(InputError, match=r"no split 'train_aug' \(it needs the SBD-augmented labels in "
                                         r"ROOT/SegmentationClassAug/\); available: train, trainval, val$"):
        open_dataset("voc", root, "train_aug")


def test_voc_missing_label_names_both_paths(tmp_path):
    root, _ = make_voc(tmp_path, VOC_SPLITS)
    (root / "SegmentationClass" / "2007_000039.png").unlink()
    with pytest.raises(InputError) as error:
        open_dataset("voc", root, "train")
    message = str(error.value)
    assert str(root / "JPEGImages" / "2007_000039.jpg") in message
    assert str(root / "SegmentationClass" / "2007_000039.png") in message


def test_voc_empty_split(tmp_path):
    root, _ = make_voc(tmp_path, {**VOC_SPLITS, "test": []})
    with pytest.raises(InputError, match="split 'test' of Pascal VOC2012 is empty"):
        open_dataset("voc", root, "test")


def test_unknown_split_lists_available(tmp_path):
    root, _ = make_voc(tmp_path, VOC_SPLITS)
    with pytest.raises(InputError, match="no split 'training'; available: train, trainval, val$"):
        open_dataset("voc", root, "training")


@pytest.mark.parametrize("given", ["", "VOCdevkit"])
def test_voc_root_one_or_two_levels_up_suggests_the_folder(tmp_path, given):
    root, _ = make_voc(tmp_path, VOC_SPLITS)
    with pytest.raises(InputError) as error:
        open_dataset("voc", tmp_path / given, "train")
    assert str(error.value) == (f"{tmp_path / given}: not a Pascal VOC2012 folder: expected JPEGImages/, "
                                f"SegmentationClass/ and ImageSets/Segmentation/ in it; did you mean {root}?")


def test_voc_root_one_level_too_deep_suggests_the_parent(tmp_path):
    root, _ = make_voc(tmp_path, VOC_SPLITS)
    with pytest.raises(InputError, match=f"did you mean {root}\\?"):
        open_dataset("voc", root / "JPEGImages", "train")


def test_missing_root_and_unknown_dataset(tmp_path):
    with pytest.raises(InputError, match="no such directory \\(expected the Cityscapes folder\\)"):
        open_dataset("cityscapes", tmp_path / "nope", "train")
    with pytest.raises(InputError, match="unknown dataset 'coco'; known: ade20k, cityscapes, voc"):
        open_dataset("coco", tmp_path, "train")


# ---- ADE20K ----------------------------------------------------------------------------------------------

def test_ade20k_maps_zero_to_ignore_and_k_to_k_minus_1(tmp_path):
    root, labels = make_ade20k(tmp_path)
    data = open_dataset("ade20k", root, "val")
    assert len(data) == 2
    for index, sample in enumerate(data.samples):
        image, label = data[index]
        raw = labels[sample.image.stem]
        assert image.shape == raw.shape + (3,)
        np.testing.assert_array_equal(label, np.where(raw == 0, 255, raw.astype(int) - 1))
        assert label[0, :3].tolist() == [255, 0, 149]


def test_ade20k_splits_and_label_set(tmp_path):
    root, _ = make_ade20k(tmp_path)
    train = open_dataset("ade20k", root, "train")
    assert [s.image.parent.name for s in train.samples] == ["training"] * 3
    assert [s.label.parent.parent.name for s in train.samples] == ["annotations"] * 3
    with pytest.raises(InputError, match="available: train, val$"):
        open_dataset("ade20k", root, "validation")
    labels = train.label_set
    assert labels.num_classes == len(labels.palette) == 150
    assert labels.class_names[:3] == ("wall", "building", "sky") and labels.palette[0] == (120, 120, 120)


def test_ade20k_root_checks(tmp_path):
    root, _ = make_ade20k(tmp_path)
    with pytest.raises(InputError, match=f"not an ADE20K.*expected images/ and annotations/ in it; "
                                         f"did you mean {root}\\?"):
        open_dataset("ade20k", tmp_path, "train")
    with pytest.raises(InputError, match="not a Pascal VOC2012 folder.*looks like an ADE20K.*dataset 'ade20k'"):
        open_dataset("voc", root, "train")


# ---- Cityscapes ------------------------------------------------------------------------------------------

def test_cityscapes_maps_label_ids_to_train_ids(tmp_path):
    root, labels = make_cityscapes(tmp_path)
    data = open_dataset("cityscapes", root, "train")
    assert [s.image.parent.name for s in data.samples] == ["aachen", "bochum"]
    table = np.array([CITYSCAPES_TRAIN_ID.get(v, 255) for v in range(256)], np.uint8)
    for index, sample in enumerate(data.samples):
        image, label = data[index]
        raw = labels[sample.image.name.removesuffix("_leftImg8bit.png")]
        assert image.shape == raw.shape + (3,)
        np.testing.assert_array_equal(label, table[raw])
        assert label[0, :3].tolist() == [255, 0, 18] and label[1, 0] == 255


def test_cityscapes_prefers_label_train_ids(tmp_path):
    root, labels = make_cityscapes(tmp_path)
    train_ids = np.full((7, 7), 4, np.uint8)
    train_ids[0, 0] = 255
    write_png(root / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelTrainIds.png", train_ids)
    data = open_dataset("cityscapes", root, "val")
    assert data.samples[0].label.name.endswith("_gtFine_labelTrainIds.png")
    np.testing.assert_array_equal(data[0][1], train_ids)  # read as is, not mapped again


def test_cityscapes_label_set_and_registry():
    labels = DATASETS["cityscapes"].label_set
    assert labels.num_classes == 19
    assert labels.palette[0] == (128, 64, 128) and labels.palette[18] == (119, 11, 32)
    assert labels.class_names[11] == "person" and labels.palette[11] == (220, 20, 60)
    assert {name: spec.crop_size for name, spec in DATASETS.items()} == {"voc": 473, "ade20k": 473,
                                                                         "cityscapes": 713}
    assert DATASETS["voc"].train_splits == ("train_aug", "train") and DATASETS["voc"].label_set.num_classes == 21


def test_cityscapes_missing_label_names_both_paths(tmp_path):
    root, _ = make_cityscapes(tmp_path)
    label = root / "gtFine/train/bochum/bochum_000000_000313_gtFine_labelIds.png"
    label.unlink()
    with pytest.raises(InputError, match="no label for image .*bochum_000000_000313_leftImg8bit.png: "
                                         f"expected {label}$"):
        open_dataset("cityscapes", root, "train")


def test_describe_names_image_and_label(tmp_path):
    root, _ = make_cityscapes(tmp_path)
    data = open_dataset("cityscapes", root, "val")
    assert data.describe(0) == f"{data.samples[0].image} / {data.samples[0].label}"


# ---- read_label on its own (also for list files) ------------------------------------------------------

def test_read_label_grey_and_16_bit(tmp_path):
    label = np.array([[0, 5], [255, 200]], np.uint8)
    write_png(tmp_path / "grey.png", label)
    np.testing.assert_array_equal(read_label(tmp_path / "grey.png"), label)
    Image.fromarray(label.astype(np.uint16)).save(tmp_path / "wide.png")
    assert Image.open(tmp_path / "wide.png").mode.startswith("I")
    wide = read_label(tmp_path / "wide.png")
    assert wide.dtype == np.uint8
    np.testing.assert_array_equal(wide, label)
    Image.fromarray(np.array([[0, 300]], np.uint16)).save(tmp_path / "big.png")
    with pytest.raises(InputError, match="holds values 0..300; class indices must lie in 0..255"):
        read_label(tmp_path / "big.png")


def test_read_label_rejects_colour_images(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "colour.png")
    with pytest.raises(InputError, match=r"label .*colour.png is a colour image \(Pillow mode RGB\); labels must "
                                         r"be single-channel class indices \(255 = ignore\), or palette PNGs"):
        read_label(tmp_path / "colour.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read label .*junk.png"):
        read_label(tmp_path / "junk.png")


def test_list_file_reads_palette_png_labels_as_indices(tmp_path):
    from pspnet.data.listfile import ListFileSource

    root, labels = make_voc(tmp_path, VOC_SPLITS)
    (tmp_path / "val.txt").write_text("VOCdevkit/VOC2012/JPEGImages/2007_000033.jpg "
                                      "VOCdevkit/VOC2012/SegmentationClass/2007_000033.png\n")
    image, label = ListFileSource(tmp_path / "val.txt")[0]
    np.testing.assert_array_equal(label, labels["2007_000033"])


def test_default_train_split_falls_back_to_voc_train_with_a_notice(tmp_path, capsys):
    from pspnet.data.datasets import default_train_split

    root, _ = make_voc(tmp_path, VOC_SPLITS)
    assert default_train_split("voc", root) == "train"
    assert "split 'train': the reference split 'train_aug' is absent" in capsys.readouterr().err
    make_voc(tmp_path / "aug", VOC_SPLITS, {"2008_000002": np.zeros((8, 10), np.uint8)})
    assert default_train_split("voc", tmp_path / "aug" / "VOCdevkit" / "VOC2012") == "train_aug"
    assert default_train_split("ade20k", make_ade20k(tmp_path)[0]) == "train"
