"""psp-infer: segment a video, images, a camera, a stream or raw frames with an exported model (no torch
needed)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from pspcore.cli import (Command, SizeType, backend_flag_options, backend_option, batch_option, device_option,
                         echo_summary, json_destination, json_option, option_group, output_option, size_option)
from pspcore.errors import InputError, PSPError, notice


def _quiet_opencv() -> None:
    # FFmpeg and OpenCV log every corrupt packet and failed codec probe; we report those ourselves, once.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    import cv2

    # OpenCV builds differ: cv2.utils.logging (5.x) or cv2.setLogLevel (4.x, which numpy<2 installs get,
    # e.g. next to nvidia-pytriton); 0 is LOG_LEVEL_SILENT in both.
    logging = getattr(cv2.utils, "logging", None)
    if logging is not None:
        logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    elif hasattr(cv2, "setLogLevel"):
        cv2.setLogLevel(0)


def labels_in_graph(backend: str, model: str, tile: bool) -> dict:
    """{"output": "labels"} for a runner that can end its graph with the argmax (openvino), unless --tile needs
    logits: a frame's class scores (C x H x W float32, 134 MB at 473x473 for 150 classes) then never leave the
    runtime to be argmaxed in numpy. {} for the others, which run the model as exported."""
    from pspcore.registry import resolve_backend, takes_option

    if tile:
        return {}
    try:
        name = resolve_backend(backend, model)[0]
    except PSPError:
        return {}  # create_runner says what is wrong, in its own words
    return {"output": "labels"} if takes_option(name, "output") else {}


class FrameSizeType(SizeType):
    """--frame-size 640x480: width x height, the way video tools (FFmpeg, v4l2) write a frame size; parsed like
    --size, the first number read as the width."""

    name = "WxH"


# psp-infer's options in groups, shown in this order: what it writes, which backend runs the model and how
# (the backends' own flags come from their declarations), how frames are segmented.
OUTPUT_OPTIONS = option_group(
    output_option("Overlay video (.mp4/.avi) for a video, camera, stream or stdin; image file or folder for "
                  "images.", required=True, path_type=Path),
    click.option("--mask-video", type=click.Path(path_type=Path), help="Also write the colour mask as a video."),
    click.option("--masks-dir", type=click.Path(path_type=Path), help="Also write per-frame label PNGs here."),
    json_option("Also write per-frame class pixel fractions as JSON"),
    click.option("--codec", default="mp4v", show_default=True,
                 help="FourCC of the output video; falls back to mp4v/MJPG with a notice if unavailable."),
    click.option("--discard-partial", is_flag=True,
                 help="On Ctrl-C remove the unfinished video instead of keeping <name>.partial.<ext>."),
)
BACKEND_OPTIONS = option_group(
    backend_option("auto: tensorrt for engines, torch for checkpoints, triton for server URLs, else onnxruntime "
                   "on its best provider."),
    device_option(),
    backend_flag_options(),
)
SEGMENT_OPTIONS = option_group(
    batch_option("Frames per inference.", default=1),
    size_option("Network input HxW for dynamic-shape models (default: the size stored with the model)."),
    click.option("--tile", is_flag=True, help="Sliding windows of the input size over full-resolution frames."),
    click.option("--opacity", type=click.FloatRange(0, 1), default=0.5, show_default=True,
                 help="Mask opacity in the overlay (0 frame only, 1 mask only)."),
    click.option("-q", "--quiet", is_flag=True, help="No progress bar."),
)
# Live sources and analytics sinks (issue 29).
LIVE_OPTIONS = option_group(
    click.option("--realtime/--no-realtime", default=None,
                 help="Keep only the newest frame while the model is busy, dropping (and counting) stale ones, so "
                      "latency stays bounded [default: on for cameras and streams, off for files and stdin]."),
    click.option("--frame-size", type=FrameSizeType(), default=None,
                 help="Raw BGR24 frames on standard input (INPUT '-'): their width x height."),
    click.option("--reconnect-tries", type=click.IntRange(min=0), default=5, show_default=True,
                 help="Streams/cameras: reopen attempts after the source drops or stalls, before ending the run."),
    click.option("--reconnect-wait", type=click.FloatRange(min=0), default=0.5, show_default=True,
                 help="Seconds before the first reopen attempt; doubled each attempt, at most 8 s."),
    click.option("--stall-timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
                 help="Seconds without a frame after which a stream counts as dropped (also the open timeout)."),
    click.option("--jsonl", "jsonl_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                 help="Write one JSON line per frame as it finishes (index, source timestamp, latency, per-class "
                      "pixel share), flushed so another process can tail it."),
    click.option("--jsonl-labels", is_flag=True,
                 help="--jsonl lines also carry the label map, run-length encoded (see README)."),
)


@click.command(cls=Command)
@click.argument("model")
@click.argument("source", metavar="INPUT")
@OUTPUT_OPTIONS
@BACKEND_OPTIONS
@SEGMENT_OPTIONS
@LIVE_OPTIONS
def main(model, source, output, mask_video, masks_dir, json_path, codec, discard_partial, backend, device, batch,
         size, tile, opacity, quiet, realtime, frame_size, reconnect_tries, reconnect_wait, stall_timeout, jsonl_path,
         jsonl_labels, **backend_flags):
    """Segment INPUT with MODEL (.onnx, .engine, a .pth checkpoint or a Triton URL) and write the overlay to
    OUTPUT. INPUT is a video file, an image, a folder, a glob ('frames/*.jpg'), a list file (.txt, one image
    a line), a camera (0, /dev/video0), a stream (rtsp://, rtmp://, http(s)://: whatever OpenCV's FFmpeg opens)
    or '-' (raw BGR24 frames on standard input, with --frame-size). A Triton image -> labels ensemble
    (psp-export triton --ensemble) gets the raw frames and does its own pre- and post-processing.

    \b
    Example:
      psp-infer pspnet50.onnx street.mp4 -o street-seg.mp4 --batch 4 --json street.json
      psp-infer grpc://127.0.0.1:8001/pspnet street.mp4 -o street-seg.mp4
      psp-infer pspnet18-int8.onnx 0 -o webcam-seg.mp4 --jsonl webcam.jsonl
      psp-infer pspnet18-int8.onnx rtsp://camera.local:8554/live -o cam.mp4 --reconnect-tries 10
    """
    if jsonl_labels and not jsonl_path:
        raise InputError("--jsonl-labels adds label maps to the --jsonl lines: give --jsonl PATH too")
    _quiet_opencv()
    from pspcore.cli import runner_options
    from pspcore.registry import create_runner
    from runtime.outputs import OutputPaths
    from runtime.pipeline import SegmentOptions, segment
    from runtime.sources import Reconnect
    from runtime.video import partial_name

    runner = create_runner(backend, model, **runner_options(backend, model, device=device, **backend_flags),
                           **labels_in_graph(backend, model, tile))
    for note in runner.notes:
        notice(note)
    shown = len(runner.notes)
    options = SegmentOptions(batch=batch, size=size, opacity=opacity, tile=tile, codec=codec,
                             keep_partial=not discard_partial, progress=not quiet, realtime=realtime,
                             jsonl_rle=jsonl_labels)
    reconnect = Reconnect(tries=reconnect_tries, wait=reconnect_wait, stall=stall_timeout)
    try:
        with runner, json_destination(json_path) as json_file:
            paths = OutputPaths(output, mask_video, masks_dir, json_file and Path(json_file), jsonl_path)
            result = segment(runner, source, paths, options, frame_size=frame_size, reconnect=reconnect)
    except KeyboardInterrupt:
        kept = [p for p in (partial_name(output), mask_video and partial_name(mask_video)) if p and p.exists()]
        click.echo("interrupted: " + (f"kept the frames so far in {', '.join(map(str, kept))}" if kept
                                      else "no output written"), err=True)
        sys.exit(130)
    for note in result.notes[shown:]:
        notice(note)
    echo_summary(result.summary(), json_path)


if __name__ == "__main__":
    main()
