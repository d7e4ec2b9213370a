"""Pre/post-processing round trips: letterbox and back, sliding windows, palette, overlay, fractions."""
from __future__ import annotations

import numpy as np
import pytest

from pspcore.colours import colorize
from pspcore.preprocess import letterbox, prepare_batch, tile_frame
from pspcore.registry import create_runner
from pspcore.sliding import SlidingWindows
from runtime.postprocess import class_fractions, labels_to_frame, merge_tiles, overlay, palette_lut, to_labels
from tests.runtime.conftest import make_onnx, tiny_info


def test_to_labels_argmax_and_passthrough():
    logits = np.zeros((2, 3, 4, 5), np.float32)
    logits[0, 2] = 1
    logits[1, 1, :2] = 1
    labels = to_labels(logits)
    assert labels.dtype == np.uint8 and labels.shape == (2, 4, 5)
    assert (labels[0] == 2).all() and (labels[1, :2] == 1).all() and (labels[1, 2:] == 0).all()
    assert to_labels(labels, 3) is labels
    assert to_labels(np.zeros((1, 300, 2, 2), np.float32)).dtype == np.uint16


def test_labels_map_back_through_the_letterbox():
    frame = np.zeros((40, 100, 3), np.uint8)
    _, box = letterbox(frame, (32, 32), (0, 0, 0))
    assert box.resized == (13, 32)
    net = np.full((32, 32), 9, np.uint8)
    net[:13, :16], net[:13, 16:] = 1, 2  # left half class 1, right half class 2; padding class 9
    labels = labels_to_frame(net, box)
    assert labels.shape == (40, 100) and set(np.unique(labels)) == {1, 2}
    assert (labels[:, :45] == 1).all() and (labels[:, 55:] == 2).all()


def test_wide_labels_resize_exactly():
    frame = np.zeros((8, 8, 3), np.uint8)
    _, box = letterbox(frame, (4, 4), (0, 0, 0))
    net = np.array([[300, 301], [302, 303]], np.int32).repeat(2, 0).repeat(2, 1)
    out = labels_to_frame(net, box)
    assert out.dtype == np.int32 and set(np.unique(out)) == {300, 301, 302, 303}


def test_sliding_windows_match_the_whole_frame_on_a_per_pixel_model(tmp_path):
    # A 1x1 conv is per-pixel, so averaging overlapping windows must reproduce the full-frame result.
    runner = create_runner("onnxruntime", make_onnx(tmp_path / "dyn.onnx", dynamic_shape=True))
    runner.activate()
    frame = np.random.default_rng(0).integers(0, 255, (70, 90, 3), np.uint8)
    crops, tiling = tile_frame(frame, runner.info, (32, 32))
    # stride 22: rows at 0, 22, 38 and columns at 0, 22, 44, 58 (the last window flush with the edge)
    assert crops.shape[1:] == (3, 32, 32) and len(crops) == len(tiling.origins) == 3 * 4
    tiled = merge_tiles(runner.infer(crops), tiling)
    whole, _ = prepare_batch([frame], runner.info, (70, 90))
    np.testing.assert_array_equal(tiled, to_labels(runner.infer(whole))[0])


def test_small_frame_gets_one_padded_window():
    crops, tiling = tile_frame(np.zeros((20, 10, 3), np.uint8), tiny_info(), (32, 32))
    assert crops.shape == (1, 3, 32, 32) and tiling.origins == ((0, 0),) and tiling.pad == (6, 11)
    assert merge_tiles(np.zeros((1, 4, 32, 32), np.float32), tiling).shape == (20, 10)


def test_palette_lut_is_bgr_and_covers_all_uint8_labels():
    lut = palette_lut(tiny_info())
    assert lut.shape == (256, 3) and tuple(lut[1]) == (0, 0, 255)  # RGB red -> BGR
    colours = colorize(np.array([[0, 1], [3, 200]], np.uint8), lut)
    assert colours.shape == (2, 2, 3) and tuple(colours[1, 0]) == (255, 0, 0)


@pytest.mark.parametrize("opacity", [0.0, 0.5, 1.0])
def test_overlay_opacity(opacity):
    frame = np.full((4, 4, 3), 100, np.uint8)
    colour = np.full((4, 4, 3), 200, np.uint8)
    assert overlay(frame, colour, opacity)[0, 0, 0] == round(100 + 100 * opacity)


def test_class_fractions():
    labels = np.array([[0, 0], [2, 2]], np.uint8)
    np.testing.assert_allclose(class_fractions(labels, 4), [0.5, 0, 0.5, 0])


def test_overlapping_tiles_are_averaged_before_the_argmax():
    """Tiles over a 1x5 frame overlap at x=2, where only averaging (or summing) picks class 1: first-wins
    says 0, last-wins 2, max a tie resolved to 0. A per-pixel model cannot tell these rules apart."""
    tiling = SlidingWindows.over((1, 5), (1, 3))
    assert tiling.origins == ((0, 0), (0, 2))
    first = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.9], [0.0, 0.0, 0.0]])
    second = np.array([[0.0, 0.0, 0.0], [0.9, 0.0, 0.0], [1.0, 1.0, 1.0]])
    logits = np.stack([first, second])[:, :, None, :].astype(np.float32)
    assert merge_tiles(logits, tiling)[0].tolist() == [0, 0, 1, 2, 2]
