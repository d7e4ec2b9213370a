"""context-scenes: deterministic per seed, boat/car decided by the scene only, exportable, video."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pspcore.errors import InputError
from pspnet.data.context_scenes import BOAT, CAR, ROAD, SKY, WATER, ContextScenes, export_split, write_video
from pspnet.data.listfile import ListFileSource
from pspnet.labels import get_label_set


def test_label_set_is_registered_once_with_a_colour_per_class():
    labels = get_label_set("context-scenes")
    assert labels.class_names == ("sky", "water", "road", "boat", "car", "bird")
    assert len(set(labels.palette)) == labels.num_classes


def test_same_seed_same_scene_other_seed_or_split_differs():
    a, b = ContextScenes("train", 4, 65, seed=3), ContextScenes("train", 4, 65, seed=3)
    np.testing.assert_array_equal(a[2][0], b[2][0])
    np.testing.assert_array_equal(a[2][1], b[2][1])
    assert not np.array_equal(a[2][0], ContextScenes("train", 4, 65, seed=4)[2][0])
    assert not np.array_equal(a[2][0], ContextScenes("val", 4, 65, seed=3)[2][0])


def test_object_class_follows_the_scene_and_never_touches_it():
    scenes = ContextScenes("val", 40, 97)
    kinds = set()
    for i in range(len(scenes)):
        image, label = scenes[i]
        assert image.shape == (97, 97, 3) and label.shape == (97, 97)
        obj = np.isin(label, (BOAT, CAR))
        assert obj.any()
        surface = WATER if (label == BOAT).any() else ROAD
        kinds.add(surface)
        assert not (label == (ROAD if surface == WATER else WATER)).any()  # one scene type per image
        assert not ((label == BOAT).any() and (label == CAR).any())
        # The object's surroundings (a few px) are its neutral patch, labelled as the surface, never sky.
        ring = cv2.dilate(obj.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~obj
        assert set(np.unique(label[ring])) <= {surface, 5}  # 5 = bird, which may fly anywhere above
        assert SKY not in np.unique(label[ring])
    assert kinds == {WATER, ROAD}


def test_boat_and_car_look_the_same_up_close():
    """Colour statistics of the object and of everything within a fifth of the image around it do not depend
    on the scene type: the deciding cues are farther away than that."""
    scenes = ContextScenes("train", 200, 97)
    stats = {BOAT: [], CAR: []}
    for i in range(len(scenes)):
        image, label = scenes[i]
        cls = BOAT if (label == BOAT).any() else CAR
        obj = label == cls
        ring = cv2.dilate(obj.astype(np.uint8), np.ones((39, 39), np.uint8)).astype(bool) & ~obj
        assert set(np.unique(label[ring])) == {WATER if cls == BOAT else ROAD}  # no sky, no bird
        stats[cls].append(np.concatenate([image[ring], image[obj]]).mean(0))
    boat, car = np.mean(stats[BOAT], 0), np.mean(stats[CAR], 0)
    assert np.abs(boat - car).max() < 6, (boat, car)


def test_panorama_shows_the_scene_type_only_at_one_end():
    """2:1 and wider scenes: the telltale sky and far ground fill one square end; the rest looks the same in
    sea and street scenes, and the object sits in the rest, most of an image height or more from the end."""
    h, w = 49, 245
    scenes = ContextScenes("val", 40, (h, w))
    rest_colours = {BOAT: [], CAR: []}
    sides = set()
    for i in range(len(scenes)):
        image, label = scenes[i]
        right = scenes.layout(i).cue_right
        sides.add(right)
        rest = np.ones(w, bool)
        rest[slice(w - h, w) if right else slice(0, h)] = False
        columns = np.nonzero(np.isin(label, (BOAT, CAR)).any(0))[0]
        gap = (w - h) - columns.max() if right else columns.min() - h
        assert gap >= 0.8 * h, (i, gap)
        cls = BOAT if (label == BOAT).any() else CAR
        scenery = ~np.isin(label[:, rest], (BOAT, CAR))  # sky and ground outside the telltale end
        rest_colours[cls].append(image[:, rest][scenery].mean(0))
    assert sides == {True, False}
    boat, car = np.mean(rest_colours[BOAT], 0), np.mean(rest_colours[CAR], 0)
    assert np.abs(boat - car).max() < 6, (boat, car)


def test_square_and_moderately_wide_scenes_show_the_type_across_the_width():
    image, label = ContextScenes("val", 1, (60, 100))[0]
    sky_rows = (label == SKY).all(1)
    assert sky_rows.any()
    row = image[np.nonzero(sky_rows)[0][-1]].astype(float)  # the sky's colour varies little along a row
    assert np.abs(row[:20].mean(0) - row[-20:].mean(0)).max() < 6


def test_export_split_writes_a_list_every_tool_reads(tmp_path):
    list_path = export_split(tmp_path, "val", n=3, seed=1, size=49)
    source = ListFileSource(list_path)
    assert len(source) == 3
    image, label = source[1]
    expected_image, expected_label = ContextScenes("val", 3, 49, seed=1)[1]
    np.testing.assert_array_equal(image, expected_image)
    np.testing.assert_array_equal(label, expected_label)


def test_write_video_is_readable(tmp_path):
    path = write_video(tmp_path / "scenes.mp4", num_frames=6, size=(48, 64), seed=0, fps=5)
    cap = cv2.VideoCapture(str(path))
    frames = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (48, 64, 3)
        frames += 1
    assert frames == 6


@pytest.mark.parametrize("kwargs, message", [({"split": "dev"}, "unknown context-scenes split"),
                                             ({"length": 0}, "at least one image"),
                                             ({"size": 8}, "at least 17 px")])
def test_bad_arguments_are_input_errors(kwargs, message):
    with pytest.raises(InputError, match=message):
        ContextScenes(**kwargs)
