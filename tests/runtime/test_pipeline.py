"""The threaded segmentation pipeline: every frame out, in order, at the input's fps; failures and Ctrl-C in
any stage stop it cleanly and leave no corrupt file at the final name."""
from __future__ import annotations

import json
import threading
import time

import cv2
import numpy as np
import pytest

from pspcore.errors import InputError
from pspcore.preprocess import prepare_batch
from pspcore.registry import create_runner
from runtime.outputs import OutputPaths
from runtime.pipeline import SegmentOptions, segment, segment_images, segment_video
from runtime.postprocess import labels_to_frame, to_labels
from runtime.video import VideoReader
from tests.runtime.conftest import make_onnx, write_video
from tests.runtime.test_video import corrupt_frame, count_frames

QUIET = dict(progress=False)


@pytest.fixture
def runner(tiny_model):
    return create_runner("onnxruntime", tiny_model, threads=1)


def expected_labels(runner, frame):
    batch, boxes = prepare_batch([frame], runner.info, (32, 32))
    return labels_to_frame(to_labels(runner.infer(batch))[0], boxes[0])


@pytest.mark.parametrize("batch", [1, 4, 7])
def test_every_frame_in_order_at_the_input_fps(runner, tiny_video, tmp_path, batch):
    paths = OutputPaths(tmp_path / "out.avi", masks_dir=tmp_path / "masks", json=tmp_path / "f.json")
    result = segment_video(runner, tiny_video, paths, SegmentOptions(batch=batch, codec="MJPG", **QUIET))
    assert (result.frames_in, result.frames_out, result.skipped) == (30, 30, 0)
    out = VideoReader(paths.overlay)
    assert len(list(out)) == 30 and out.fps == pytest.approx(10.0) and out.size == (64, 48)
    masks = sorted(paths.masks_dir.iterdir())
    assert len(masks) == 30 and len({m.read_bytes() for m in masks}) > 10  # frames differ, so order shows
    for i, frame in enumerate(VideoReader(tiny_video)):  # exact labels: a reordered frame would differ
        np.testing.assert_array_equal(cv2.imread(str(masks[i]), cv2.IMREAD_UNCHANGED),
                                      expected_labels(runner, frame))
    doc = json.loads(paths.json.read_text())
    assert len(doc["frames"]) == 30 and doc["frames"][29]["name"] == "frame_000029"
    assert all(sum(f["fractions"].values()) == pytest.approx(1, abs=1e-4) for f in doc["frames"])


def test_corrupt_frame_is_reported_and_the_rest_segmented(runner, tiny_video, tmp_path):
    bad = corrupt_frame(tiny_video, tmp_path / "bad.avi", 12)
    result = segment(runner, bad, tmp_path / "out.mp4", SegmentOptions(batch=4, **QUIET))
    assert (result.frames_in, result.frames_out, result.skipped) == (29, 29, 1)
    assert count_frames(tmp_path / "out.mp4") == 29
    assert "1 corrupt frame skipped" in result.notes[-1] and "1 skipped" in result.summary()


def test_mask_video_and_labels_model(onnx_dir, tiny_video, tmp_path):
    runner = create_runner("onnxruntime", make_onnx(onnx_dir / "argmax.onnx", output="labels"))
    paths = OutputPaths(tmp_path / "out.mp4", mask_video=tmp_path / "mask.avi")
    result = segment(runner, tiny_video, paths, SegmentOptions(batch=3, **QUIET))
    assert result.frames_out == 30 and count_frames(paths.mask_video) == 30
    with pytest.raises(InputError, match="need a logits output"):
        segment(runner, tiny_video, tmp_path / "tiled.mp4", SegmentOptions(tile=True, **QUIET))


class FailingRunner:
    """Wraps a runner and raises on the n-th batch: an inference failure mid-video."""

    def __init__(self, runner, fail_at: int):
        self._runner, self.fail_at, self.calls = runner, fail_at, 0

    def __getattr__(self, name):
        return getattr(self._runner, name)

    def infer(self, batch):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("device lost")
        return self._runner.infer(batch)


def test_inference_error_propagates_and_leaves_nothing(runner, tiny_video, tmp_path):
    with pytest.raises(RuntimeError, match="device lost"):
        segment(FailingRunner(runner, 3), tiny_video, tmp_path / "out.mp4", SegmentOptions(batch=2, **QUIET))
    assert list(tmp_path.iterdir()) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("psp-")]


def test_error_in_the_writer_stage_propagates(runner, tiny_video, tmp_path):
    def boom(count):
        if count == 5:
            raise ValueError("disk full")

    with pytest.raises(ValueError, match="disk full"):
        segment_video(runner, tiny_video, tmp_path / "out.mp4", SegmentOptions(**QUIET), on_frame=boom)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("keep", [True, False])
def test_ctrl_c_mid_video(runner, tiny_video, tmp_path, keep):
    def interrupt(count):
        if count == 8:
            raise KeyboardInterrupt

    out = tmp_path / "out.mp4"
    with pytest.raises(KeyboardInterrupt):
        segment_video(runner, tiny_video, out, SegmentOptions(batch=2, keep_partial=keep, **QUIET),
                      on_frame=interrupt)
    assert not out.exists()
    partial = tmp_path / "out.partial.mp4"
    assert [p.name for p in tmp_path.iterdir()] == (["out.partial.mp4"] if keep else [])
    if keep:
        assert count_frames(partial) == 8  # finalised: playable up to the interruption


def test_size_option_against_fixed_and_dynamic_models(runner, onnx_dir, tiny_video, tmp_path):
    with pytest.raises(InputError, match="takes 32x32 inputs only"):
        segment(runner, tiny_video, tmp_path / "a.mp4", SegmentOptions(size=(48, 48), **QUIET))
    dynamic = create_runner("onnxruntime", make_onnx(onnx_dir / "dyn-noinfo.onnx", dynamic_shape=True, info=None))
    with pytest.raises(InputError, match="pass --size"):
        segment(dynamic, tiny_video, tmp_path / "b.mp4", SegmentOptions(**QUIET))
    result = segment(dynamic, tiny_video, tmp_path / "c.mp4", SegmentOptions(size=(24, 40), **QUIET))
    assert result.input_size == (24, 40) and result.frames_out == 30
    assert list(tmp_path.iterdir()) == [tmp_path / "c.mp4"]


def test_sliding_windows_on_video(onnx_dir, tiny_video, tmp_path):
    runner = create_runner("onnxruntime", make_onnx(onnx_dir / "dyn16.onnx", dynamic_shape=True))
    result = segment(runner, tiny_video, tmp_path / "out.mp4", SegmentOptions(size=(16, 16), tile=True, batch=2,
                                                                               **QUIET))
    assert result.frames_out == 30 and count_frames(tmp_path / "out.mp4") == 30


def test_images_single_and_folder(runner, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate([(40, 60), (33, 33), (80, 20)]):
        cv2.imwrite(str(folder / f"img{i}.png"), rng.integers(0, 255, (*size, 3), np.uint8))
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    result = segment(runner, folder, tmp_path / "out", SegmentOptions(batch=2, **QUIET))
    assert (result.frames_in, result.frames_out, result.skipped) == (3, 3, 1)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img0.png", "img1.png", "img2.png"]
    assert cv2.imread(str(tmp_path / "out" / "img2.png")).shape == (80, 20, 3)
    assert "broken.jpg" in result.notes[-1]
    single = segment_images(runner, folder / "img0.png", tmp_path / "one.jpg", SegmentOptions(**QUIET))
    assert single.outputs == [tmp_path / "one.jpg"] and cv2.imread(str(tmp_path / "one.jpg")).shape == (40, 60, 3)
    with pytest.raises(InputError, match="not an image"):
        segment(runner, folder / "broken.jpg", tmp_path / "x.png", SegmentOptions(**QUIET))


def test_long_video_with_small_queues(runner, tmp_path):
    video = write_video(tmp_path / "long.avi", frames=120)
    result = segment(runner, video, tmp_path / "out.avi", SegmentOptions(batch=3, queue_batches=1, codec="MJPG",
                                                                         **QUIET))
    assert result.frames_out == 120 == count_frames(tmp_path / "out.avi")


def test_every_frame_is_written_when_the_writer_is_the_slowest_stage(runner, tmp_path):
    """The writer is held at the first frame until the model has run every batch (and the pipeline has had
    its chance to stop): made to happen on purpose, so a pipeline that stops before draining its writer loses
    frames at any batch size, not only where the thread timing happens to show it."""
    video = write_video(tmp_path / "three.avi", frames=3)
    counting = FailingRunner(runner, fail_at=0)  # fails never; counts the batches
    all_inferred = threading.Event()

    def infer(batch):
        output = runner.infer(batch)
        counting.calls += 1
        if counting.calls == 3:
            all_inferred.set()
        return output

    counting.infer = infer

    def hold(count):
        if count == 1:
            assert all_inferred.wait(timeout=30)
            time.sleep(0.3)  # the window in which a pipeline that does not drain would stop the writer

    result = segment_video(counting, video, tmp_path / "out.avi",
                           SegmentOptions(batch=1, codec="MJPG", queue_batches=4, **QUIET), on_frame=hold)
    assert (result.frames_in, result.frames_out) == (3, 3)
    assert count_frames(tmp_path / "out.avi") == 3


@pytest.mark.parametrize("keep", [True, False])
def test_ctrl_c_before_the_first_frame_leaves_nothing(runner, tiny_video, tmp_path, keep, monkeypatch):
    """Interrupted while the source opens its first frame: no partial video (it would hold no frame), no JSON."""
    import runtime.pipeline as pipeline

    real = pipeline.run_pipeline

    def interrupted(frames, *args, **kwargs):
        def first_read_interrupted():
            raise KeyboardInterrupt
            yield  # a generator: the interrupt comes when the first frame is asked for

        return real(first_read_interrupted(), *args, **kwargs)

    monkeypatch.setattr(pipeline, "run_pipeline", interrupted)
    paths = OutputPaths(tmp_path / "out.mp4", json=tmp_path / "f.json", jsonl=tmp_path / "f.jsonl",
                        mask_video=tmp_path / "mask.avi", masks_dir=tmp_path / "masks")
    with pytest.raises(KeyboardInterrupt):
        segment_video(runner, tiny_video, paths, SegmentOptions(keep_partial=keep, **QUIET))
    assert list(tmp_path.iterdir()) == []


def test_opencv_runs_serially_beside_the_model_and_is_restored(runner, tiny_video, tmp_path):
    """The pipeline's stages are threads beside the model: OpenCV's own pool is off while they run (it would take
    the model's cores) and back as it was afterwards."""
    original = cv2.getNumThreads()
    cv2.setNumThreads(3)  # a pool of its own whatever this machine's core count
    try:
        seen = []
        segment_video(runner, tiny_video, tmp_path / "out.avi", SegmentOptions(codec="MJPG", **QUIET),
                      on_frame=lambda count: seen.append(cv2.getNumThreads()))
        assert seen and set(seen) == {1}
        assert cv2.getNumThreads() == 3
    finally:
        cv2.setNumThreads(original)
