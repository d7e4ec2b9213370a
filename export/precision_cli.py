"""psp-export fp16 / int8: reduced-precision ONNX models from an FP32 export, verified against it (and
repaired) before anything is written."""
from __future__ import annotations

import time

import click

from export.calibration import DEFAULT_NUM_IMAGES
from pspcore.cli import SIZE, Command, option_group

HELP = {"help_option_names": ["-h", "--help"]}


# The INT8 calibration sources, exactly one of them (export.calibration.find_calibration_images); shared with
# psp-build-engine --int8 (the command takes calib_images, calib_list, calib_dataset, data_root, calib_split).
calibration_options = option_group(
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
)


def calibration_images(calib_images, calib_list, calib_dataset, data_root, calib_split) -> list:
    """The calibration image paths the options of calibration_options name."""
    from export.calibration import find_calibration_images

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
        click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write the report as JSON."),
    )


def _convert(onnx_model, output, options, images=(), report_path=None) -> None:
    from export.precision_report import format_report
    from export.verified import convert_verified
    from pspcore.errors import InputError
    from pspcore.model_info import read_onnx_info

    if options.max_miou_drop is not None and options.eval_list is None:
        raise InputError("--max-miou-drop needs --eval-list FILE (labelled images)")
    start = time.perf_counter()
    report = convert_verified(onnx_model, output, options, images, report_path,
                              log=lambda line: click.echo(f"  {line}", err=True))
    click.echo(format_report(report))
    if str(output).lower().endswith(".xml"):  # the openvino target's IR
        from export.openvino_target import read_ir_info

        info = read_ir_info(output)
    else:
        info = read_onnx_info(output)
    click.echo(f"wrote {output} ({info.precision}, agreement {100 * report.after['agreement']:.2f}%) in "
               f"{time.perf_counter() - start:.1f} s" + (f"; report {report_path}" if report_path else ""))


@click.command(cls=Command, context_settings=HELP)
@click.argument("onnx_model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="FP16 ONNX file to write.")
@click.option("--size", type=SIZE, default=None, help="Input size HxW to check at [default: the model's own size].")
@_gate_options(99.5)
def fp16_command(onnx_model, output, size, verify_images, min_agreement, eval_list, max_miou_drop, fallback,
                 report_path):
    """FP16 copy of an FP32 ONNX_MODEL, inputs and outputs kept FP32 (ModelOpt AutoCast), verified.

    The exact pyramid pooling and the final upsampling/argmax stay FP32, where rounding would move class
    boundaries. The FP32 and FP16 models run on held-out images; below the gate the most sensitive nodes are
    kept FP32 (--fallback auto) or nothing is written (exit 1).
    """
    from export.verified import Conversion

    _convert(onnx_model, output, Conversion("fp16", size=size, verify_images=verify_images,
                                            min_agreement=min_agreement / 100, eval_list=eval_list,
                                            max_miou_drop=max_miou_drop, fallback=fallback), (), report_path)


@click.command(cls=Command, context_settings=HELP)
@click.argument("onnx_model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="INT8 ONNX file to write.")
@calibration_options
@click.option("--target", type=click.Choice(["tensorrt", "onnxruntime", "openvino"]), default="tensorrt",
              show_default=True,
              help="tensorrt: ModelOpt Q/DQ for TensorRT engines; onnxruntime: Q/DQ that ONNX Runtime runs fast on "
                   "CPUs (the two need different placements); openvino: OpenVINO IR (-o NAME.xml), verified on "
                   "OpenVINO.")
@click.option("--method", type=click.Choice(["entropy", "max", "percentile", "nncf"]), default="entropy",
              show_default=True,
              help="Calibration method for activation ranges (repair may try the others); nncf: NNCF's quantizer "
                   "(openvino target).")
@click.option("--num-images", type=click.IntRange(min=1), default=DEFAULT_NUM_IMAGES, show_default=True,
              help="Calibrate on at most this many images, spread evenly over the set.")
@click.option("--size", type=SIZE, default=None,
              help="Input size HxW to prepare images at [default: the model's own size].")
@_gate_options(98.0)
def int8_command(onnx_model, output, calib_images, calib_list, calib_dataset, data_root, calib_split, target, method,
                 num_images, size, verify_images, min_agreement, eval_list, max_miou_drop, fallback, report_path):
    """INT8 copy of an FP32 ONNX_MODEL with explicit Q/DQ nodes, calibrated on real images, verified.

    Images are letterboxed and normalised exactly like the runtime prepares frames. The FP32 and INT8 models
    run on held-out images; below the gate the model is repaired (--fallback auto: cross-layer equalization,
    other calibration methods, FP32 fallback of the most sensitive nodes) or nothing is written (exit 1).
    The metadata records the precision, the target and what repair did.
    """
    from export.verified import Conversion

    images = calibration_images(calib_images, calib_list, calib_dataset, data_root, calib_split)
    _convert(onnx_model, output, Conversion("int8", target=target, method=method, num_images=num_images, size=size,
                                            verify_images=verify_images, min_agreement=min_agreement / 100,
                                            eval_list=eval_list, max_miou_drop=max_miou_drop, fallback=fallback),
             images, report_path)
