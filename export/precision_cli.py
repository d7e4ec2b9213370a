"""psp-export fp16 / int8: reduced-precision ONNX models from an FP32 export."""
from __future__ import annotations

import time

import click

from export.calibration import DEFAULT_NUM_IMAGES
from pspcore.cli import SIZE, Command

HELP = {"help_option_names": ["-h", "--help"]}


def calibration_options(command):
    """The INT8 calibration sources, exactly one of them (export.calibration.find_calibration_images); shared
    with psp-build-engine --int8. The command receives them as `calibration`, a dict of its keywords."""
    options = [
        click.option("--calib-images", type=click.Path(file_okay=False),
                     help="Folder of calibration images (searched recursively)."),
        click.option("--calib-list", type=click.Path(dir_okay=False),
                     help="List file of calibration images: `image [label]` a line, relative to the list's folder "
                          "or --data-root."),
        click.option("--calib-dataset", type=click.Choice(["voc", "ade20k", "cityscapes"]),
                     help="Calibrate on a dataset as downloaded, in the folder --data-root."),
        click.option("--data-root", type=click.Path(file_okay=False),
                     help="--calib-dataset: its folder; --calib-list: the root its paths are relative to."),
        click.option("--calib-split", default="train", show_default=True, help="Split of --calib-dataset."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def calibration_images(calib_images, calib_list, calib_dataset, data_root, calib_split) -> list:
    """The calibration image paths the options of calibration_options name."""
    from export.calibration import find_calibration_images

    return find_calibration_images(calib_images, calib_list, data_root, dataset=calib_dataset, split=calib_split)


def _report(path, seconds: float) -> None:
    from pspcore.model_info import read_onnx_info

    info = read_onnx_info(path)
    size_mb = path.stat().st_size / 1e6
    click.echo(f"wrote {path} ({info.precision}, {size_mb:.1f} MB) in {seconds:.1f} s")


@click.command(cls=Command, context_settings=HELP)
@click.argument("onnx_model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="FP16 ONNX file to write.")
def fp16_command(onnx_model, output):
    """FP16 copy of an FP32 ONNX_MODEL, inputs and outputs kept FP32 (ModelOpt AutoCast).

    The exact pyramid pooling and the final upsampling/argmax stay FP32, where rounding would move class
    boundaries. The result runs in ONNX Runtime and builds into a strongly typed TensorRT engine.
    """
    from export.precision import convert_fp16

    start = time.perf_counter()
    _report(convert_fp16(onnx_model, output), time.perf_counter() - start)


@click.command(cls=Command, context_settings=HELP)
@click.argument("onnx_model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="INT8 ONNX file to write.")
@calibration_options
@click.option("--target", type=click.Choice(["tensorrt", "onnxruntime"]), default="tensorrt", show_default=True,
              help="tensorrt: ModelOpt Q/DQ for TensorRT engines; onnxruntime: Q/DQ that ONNX Runtime runs fast on "
                   "CPUs (the two need different placements).")
@click.option("--method", type=click.Choice(["entropy", "max"]), default="entropy", show_default=True,
              help="Calibration method for activation ranges.")
@click.option("--num-images", type=click.IntRange(min=1), default=DEFAULT_NUM_IMAGES, show_default=True,
              help="Calibrate on at most this many images, spread evenly over the set.")
@click.option("--size", type=SIZE, default=None,
              help="Input size HxW to prepare images at [default: the model's own size].")
def int8_command(onnx_model, output, calib_images, calib_list, calib_dataset, data_root, calib_split, target, method,
                 num_images, size):
    """INT8 copy of an FP32 ONNX_MODEL with explicit Q/DQ nodes, calibrated on real images.

    Images are letterboxed and normalised exactly like the runtime prepares frames. The model's metadata is
    kept, with precision int8 and the target recorded.
    """
    from export.precision import quantize_int8

    images = calibration_images(calib_images, calib_list, calib_dataset, data_root, calib_split)
    start = time.perf_counter()
    path = quantize_int8(onnx_model, output, images, target=target, method=method, num_images=num_images, size=size)
    _report(path, time.perf_counter() - start)
