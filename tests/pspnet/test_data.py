"""pspnet.data: augmentations keep image and label aligned, list files and bad pairs give clear errors."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from pspcore.errors import InputError
from pspnet.data.dataset import SegmentationDataset, check_pair, make_loader
from pspnet.data.listfile import ListFileSource, read_list
from pspnet.data.transforms import (
    IGNORE,
    AugmentConfig,
    RandomCrop,
    RandomGaussianBlur,
    RandomHorizontalFlip,
    RandomRotate,
    RandomScale,
    train_transform,
)

MEAN = (123.675, 116.28, 103.53)
# Class c is painted in CODES[c]: every pixel's colour says which label it must carry.
CODES = np.array([(250, 20, 20), (20, 250, 20), (20, 20, 250), (250, 250, 20), (20, 250, 250)], np.float32)


def coded_pair(seed: int = 0, h: int = 48, w: int = 64, block: int = 8):
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, len(CODES), (h // block, w // block)).astype(np.uint8)
    label = np.kron(blocks, np.ones((block, block), np.uint8))
    return CODES[label].astype(np.float32), label


def decode(image: np.ndarray) -> np.ndarray:
    """Nearest code colour per pixel; the mean colour (padding) decodes to IGNORE."""
    codes = np.concatenate([CODES, np.float32(MEAN)[None]])
    nearest = np.linalg.norm(image[:, :, None, :] - codes[None, None], axis=-1).argmin(-1)
    return np.where(nearest == len(CODES), IGNORE, nearest).astype(np.uint8)


def interior(label: np.ndarray, radius: int = 1) -> np.ndarray:
    """Pixels whose neighbourhood has one label: interpolation cannot blend colours there. Pixels near the
    array's edge are excluded: a crop may have cut their neighbourhood off."""
    k = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    inside = cv2.erode(label, k) == cv2.dilate(label, k)
    inside[:radius], inside[-radius:], inside[:, :radius], inside[:, -radius:] = False, False, False, False
    return inside


@pytest.mark.parametrize("transform", [RandomHorizontalFlip(p=1.0), RandomCrop((40, 40), MEAN),
                                       RandomCrop((64, 80), MEAN)], ids=["flip", "crop", "crop-pad"])
def test_exact_transforms_keep_every_pixel_aligned(transform):
    for seed in range(5):
        image, label = coded_pair(seed)
        out_image, out_label = transform(image, label, np.random.default_rng(seed))
        assert out_image.shape[:2] == out_label.shape
        np.testing.assert_array_equal(decode(out_image), out_label)


@pytest.mark.parametrize("transform", [RandomScale(0.5, 2.0), RandomRotate(10, MEAN, p=1.0)],
                         ids=["scale", "rotate"])
def test_interpolating_transforms_keep_alignment_away_from_edges(transform):
    for seed in range(5):
        image, label = coded_pair(seed)
        out_image, out_label = transform(image, label, np.random.default_rng(seed))
        assert out_image.shape[:2] == out_label.shape
        inside = interior(out_label)
        assert inside.mean() > 0.4
        agree = (decode(out_image) == out_label)[inside].mean()
        assert agree > 0.99, f"seed {seed}: only {agree:.3f} of interior pixels aligned"


def test_rotate_pads_image_with_mean_and_label_with_ignore():
    image, label = coded_pair(1)
    out_image, out_label = RandomRotate(10, MEAN, p=1.0)(image, label, np.random.default_rng(3))
    corner = interior(out_label) & (out_label == IGNORE)
    assert corner.any()
    np.testing.assert_allclose(out_image[corner], np.broadcast_to(np.float32(MEAN), out_image[corner].shape),
                               atol=1e-3)


def test_blur_leaves_label_untouched():
    image, label = coded_pair(2)
    out_image, out_label = RandomGaussianBlur(p=1.0)(image, label, np.random.default_rng(0))
    np.testing.assert_array_equal(out_label, label)
    assert not np.array_equal(out_image, image)


def test_full_reference_pipeline_stays_aligned_and_reproducible():
    compose = train_transform(AugmentConfig(crop=(33, 33), blur=False), MEAN)
    for seed in range(8):
        # Scaling then rotating interpolates twice: colours blend two pixels deep at each edge.
        image, label = coded_pair(seed, 64, 64, block=16)
        out_image, out_label = compose(image, label, np.random.default_rng(seed))
        assert out_image.shape == (33, 33, 3) and out_label.shape == (33, 33)
        inside = interior(out_label, radius=2)
        assert (decode(out_image) == out_label)[inside].mean() > 0.99
        again, again_label = compose(image, label, np.random.default_rng(seed))
        np.testing.assert_array_equal(again, out_image)
        np.testing.assert_array_equal(again_label, out_label)


def write_pair(root, name, size=(20, 30), label_size=None, value=1):
    image = np.full((*size, 3), 100, np.uint8)
    label = np.full(label_size or size, value, np.uint8)
    cv2.imwrite(str(root / f"{name}.png"), image)
    cv2.imwrite(str(root / f"{name}_gt.png"), label)
    return f"{name}.png {name}_gt.png\n"


def test_list_file_reads_pairs_relative_to_root(tmp_path):
    lines = "# comment\n" + write_pair(tmp_path, "a") + "\n" + write_pair(tmp_path, "b")
    (tmp_path / "train.txt").write_text(lines)
    source = ListFileSource(tmp_path / "train.txt")
    assert len(source) == 2
    image, label = source[1]
    assert image.shape == (20, 30, 3) and label.shape == (20, 30) and label.dtype == np.uint8


@pytest.mark.parametrize("content, message", [
    (None, "list file not found"),
    ("", "empty dataset"),
    ("a.png\n", "expected 'image label'"),
    ("a.png missing.png\n", "file not found"),
])
def test_bad_list_files_give_one_line_errors(tmp_path, content, message):
    write_pair(tmp_path, "a")
    if content is not None:
        (tmp_path / "list.txt").write_text(content)
    with pytest.raises(InputError, match=message) as info:
        read_list(tmp_path / "list.txt")
    assert "\n" not in str(info.value)


def test_size_mismatch_and_out_of_range_labels_are_named(tmp_path):
    (tmp_path / "l.txt").write_text(write_pair(tmp_path, "a", label_size=(20, 31)))
    with pytest.raises(InputError, match="a.png.*30x20 but its label is 31x20"):
        SegmentationDataset(ListFileSource(tmp_path / "l.txt"), 3, MEAN, (1, 1, 1))[0]
    (tmp_path / "v.txt").write_text(write_pair(tmp_path, "b", value=7))
    with pytest.raises(InputError, match=r"label values 7 are outside \[0, 3\)"):
        SegmentationDataset(ListFileSource(tmp_path / "v.txt"), 3, MEAN, (1, 1, 1))[0]
    check_pair(np.zeros((4, 4, 3)), np.full((4, 4), IGNORE, np.uint8), 3, "ignore is fine")


def test_colour_label_images_are_refused(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "a_gt.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "l.txt").write_text("a.png a_gt.png\n")
    with pytest.raises(InputError, match="single-channel"):
        ListFileSource(tmp_path / "l.txt")[0]


def test_dataset_normalises_with_model_mean_std_and_loader_batches():
    image, label = coded_pair(0, 32, 32)
    source = [(image.astype(np.uint8), label)] * 4
    ds = SegmentationDataset(source, 5, MEAN, (2.0, 2.0, 2.0))
    x, y = ds[0]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32) and y.dtype == torch.int64
    np.testing.assert_allclose(x[:, 0, 0].numpy(), (image[0, 0] - np.float32(MEAN)) / 2, rtol=1e-6)
    loader = make_loader(ds, 2, shuffle=True, workers=0)
    loader.sampler.set_epoch(0, start=2)  # resuming mid-epoch skips the batches already seen
    assert [b[0].shape[0] for b in loader] == [2]
    with pytest.raises(InputError, match="fewer than one batch"):
        make_loader(ds, 8, shuffle=True, workers=0)
    with pytest.raises(InputError, match="empty dataset"):
        SegmentationDataset([], 5, MEAN, (1, 1, 1))
