"""psp-export fp16 / bf16 / int8: reduced-precision models from an FP32 export (ONNX; OpenVINO IR for bf16 and
the openvino INT8 target), verified against it (and repaired) before anything is written."""
from __future__ import annotations

import time

import click

from export.precision.calibration import DEFAULT_NUM_IMAGES
from pspcore.cli import (Command, dataset_options, echo_summary, json_destination, json_option, num_images_option,
                         option_group, output_option, size_option)
from export.precision.int8 import INT8_TARGETS, all_methods
from pspnet.data import dataset_names


# The INT8 calibration sources, exactly one of them (export.precision.calibration.find_calibration_images); shared with
# psp-build-engine --int8 (the command takes calib_images, calib_list, calib_dataset, data_root, calib_split).
calibration_options = option_group(
    click.option("--calib-images", type=click.Path(file_okay=False),
                 help="Folder of calibration images (searched recursively)."),
    click.option("--calib-list", type=click.Path(dir_okay=False),
                 help="List file of calibration images: `image [label]` a line, relative to the list's folder "
                      "or --data-root."),
    dataset_options(dataset_names, files=False, prefix="calib-", split_default="train",
                    dataset_help="Calibrate on a dataset as downloaded, in the folder --data-root.",
                    data_root_help="--calib-dataset: its folder; --calib-list: the root its paths are relative to.",
                    split_help="Split of --calib-dataset."),
)


def calibration_images(calib_images, calib_list, calib_dataset, data_root, calib_split) -> list:
    """The calibration image paths the options of calibration_options name."""
    from export.precision.calibration import find_calibration_images

    return find_calibration_images(calib_images, calib_list, data_root, dataset=calib_dataset, split=calib_split)


def _gate_options(default_gate: float):
    """The verification options both conversions share."""
    return option_group(
        click.option("--verify-images", type=click.Path(file_okay=False),
                     help="Folder of held-out images to verify on [default: INT8 holds out every 4th calibration "
                          "image; FP16 uses drawn street scenes]."),
        click.option("--min-agreement", type=click.FloatRange(0, 100), default=default_gate, show_default=True,
                     help="Gate: the share (%) of FP32 pixel labels the converted model must keep."),
        click.option("--eval-list", type=click.Path(dir_okay=False),
                     help="Labelled list (`image label` a line): adds the mIoU drop against FP32."),
        click.option("--max-miou-drop", type=click.FloatRange(min=0), default=None,
                     help="Gate on the mIoU drop in points (needs --eval-list)."),
        click.option("--fallback", type=click.Choice(["auto", "none"]), default="auto", show_default=True,
                     help="auto: below the gate, repair (equalization, calibration methods, FP32 fallback of the "
                          "most sensitive nodes); none: refuse."),
        json_option("Write the report as JSON", dest="report_path"),
    )


def _convert(onnx_model, output, options, images=(), report_path=None) -> None:
    from export.precision.report import format_report
    from export.precision.verified import convert_verified
    from pspcore.errors import InputError

    if options.max_miou_drop is not None and options.eval_list is None:
        raise InputError("--max-miou-drop needs --eval-list FILE (labelled images)")
    start = time.perf_counter()
    with json_destination(report_path) as json_path:
        report = convert_verified(onnx_model, output, options, images, json_path,
                                  log=lambda line: click.echo(f"  {line}", err=True))
        echo_summary(format_report(report), report_path)
    report_note = f"; report {report_path}" if report_path not in (None, "-") else ""
    echo_summary(f"wrote {output} ({report.precision}, agreement {100 * report.after['agreement']:.2f}%) in "
                 f"{time.perf_counter() - start:.1f} s{report_note}", report_path)


def _float_options(written: str):
    """The options of the conversions that need no calibration (FP16, BF16); `written`: the -o help."""
    return option_group(
        click.argument("onnx_model", type=click.Path(dir_okay=False)),
        output_option(written, required=True, dir_okay=False),
        size_option("Input size HxW to check at [default: the model's own size]."),
        _gate_options(99.5),
    )


def _float_conversion(precision: str, onnx_model, output, size, verify_images, min_agreement, eval_list,
                      max_miou_drop, fallback, report_path) -> None:
    from export.precision.verified import Conversion

    _convert(onnx_model, output, Conversion(precision, size=size, verify_images=verify_images,
                                            min_agreement=min_agreement / 100, eval_list=eval_list,
                                            max_miou_drop=max_miou_drop, fallback=fallback), (), report_path)


@click.command(cls=Command)
@_float_options("FP16 ONNX file to write.")
def fp16_command(**options):
    """FP16 copy of an FP32 ONNX_MODEL, inputs and outputs kept FP32 (ModelOpt AutoCast), verified.

    The exact pyramid pooling and the final upsampling/argmax stay FP32, where rounding would move class
    boundaries. The FP32 and FP16 models run on held-out images; below the gate the most sensitive nodes are
    kept FP32 (--fallback auto) or nothing is written (exit 1).
    """
    _float_conversion("fp16", **options)


@click.command(cls=Command)
@_float_options("OpenVINO IR to write (.xml, its weights in the .bin beside it).")
def bf16_command(**options):
    """BF16 for OpenVINO: an FP32 ONNX_MODEL written as IR that OpenVINO runs in bf16, verified on OpenVINO.

    The IR keeps the FP32 weights and records bf16 as its inference precision (rt_info runtime_options), which
    the openvino backend honours; OpenVINO's CPU plugin lowers the graph to bf16 where the CPU has AMX or
    AVX512-BF16. The exact pyramid pooling, the output region and the nodes repair keeps stay FP32 inside
    OpenVINO (its 'precise' mark). On a CPU without bf16 OpenVINO runs the file in f32: the conversion says so,
    and its gate then measured f32.
    """
    _float_conversion("bf16", **options)


@click.command(cls=Command)
@click.argument("onnx_model", type=click.Path(dir_okay=False))
@output_option("INT8 ONNX file to write.", required=True, dir_okay=False)
@calibration_options
@click.option("--target", type=click.Choice(list(INT8_TARGETS)), default="tensorrt", show_default=True,
              help="; ".join(f"{t.name}: {t.help}" for t in INT8_TARGETS.values())
                   + " (each needs its own placement).")
@click.option("--method", type=click.Choice(all_methods()), default="entropy", show_default=True,
              help="Calibration method for activation ranges (repair may try the others); "
                   + "; ".join(f"{t.name}: {', '.join(t.methods)}" for t in INT8_TARGETS.values()) + ".")
@num_images_option("Calibrate on", default=DEFAULT_NUM_IMAGES)
@size_option("Input size HxW to prepare images at [default: the model's own size].")
@_gate_options(98.0)
def int8_command(onnx_model, output, calib_images, calib_list, calib_dataset, data_root, calib_split, target, method,
                 num_images, size, verify_images, min_agreement, eval_list, max_miou_drop, fallback, report_path):
    """INT8 copy of an FP32 ONNX_MODEL with explicit Q/DQ nodes, calibrated on real images, verified.

    Images are letterboxed and normalised exactly like the runtime prepares frames. The FP32 and INT8 models
    run on held-out images; below the gate the model is repaired (--fallback auto: cross-layer equalization,
    other calibration methods, FP32 fallback of the most sensitive nodes) or nothing is written (exit 1).
    The metadata records the precision, the target and what repair did.
    """
    from export.precision.verified import Conversion

    images = calibration_images(calib_images, calib_list, calib_dataset, data_root, calib_split)
    _convert(onnx_model, output, Conversion("int8", target=target, method=method, num_images=num_images, size=size,
                                            verify_images=verify_images, min_agreement=min_agreement / 100,
                                            eval_list=eval_list, max_miou_drop=max_miou_drop, fallback=fallback),
             images, report_path)
