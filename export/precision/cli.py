"""psp-export fp16 / bf16 / int8: reduced-precision models from an FP32 export (ONNX; OpenVINO IR for bf16 and
the openvino INT8 target), verified against it (and repaired) before anything is written. The INT8 targets,
their calibration methods and every default gate come from the registered precision targets
(export.precision.target), read when the options are parsed or shown."""
from __future__ import annotations

import time

import click

from export.precision.calibration import DEFAULT_NUM_IMAGES
from export.precision.target import all_methods, default_gate, targets
from pspcore.cli import (Command, dataset_options, echo_summary, json_destination, json_option, num_images_option,
                         option_group, output_option, size_option)
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


class TargetChoice(click.Choice):
    """The choices the registered targets offer when the command runs (`choices_of()`), so a target registered
    after this module was imported is offered too."""

    def __init__(self, choices_of):
        self.choices_of = choices_of
        super().__init__(choices_of())

    @property
    def choices(self):
        return tuple(self.choices_of())

    @choices.setter
    def choices(self, value):
        pass


class _TargetsHelp(click.Option):
    """An option whose help text is made from the registered targets when --help is shown."""

    def __init__(self, *args, help_of, **kwargs):
        self.help_of = help_of
        super().__init__(*args, help=help_of(), **kwargs)

    def get_help_record(self, ctx):
        self.help = self.help_of()
        return super().get_help_record(ctx)


def _int8_targets() -> list[str]:
    return [t.name for t in targets("int8")]


def _target_help() -> str:
    return "; ".join(f"{t.name}: {t.help}" for t in targets("int8")) + " (each needs its own placement)."


def _method_help() -> str:
    return ("Calibration method for activation ranges (repair may try the others); "
            + "; ".join(f"{t.name}: {', '.join(t.methods)}" for t in targets("int8")) + ".")


def _gate_options(precision: str):
    """The verification options every conversion shares, gated by default at its targets' default_gate."""
    return option_group(
        click.option("--verify-images", type=click.Path(file_okay=False),
                     help="Folder of held-out images to verify on [default: INT8 holds out every 4th calibration "
                          "image; FP16 uses drawn street scenes]."),
        click.option("--min-agreement", type=click.FloatRange(0, 100), default=round(100 * default_gate(precision), 6),
                     show_default=True,
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


def _float_options(precision: str, written: str):
    """The options of the conversions that need no calibration (FP16, BF16); `written`: the -o help."""
    return option_group(
        click.argument("onnx_model", type=click.Path(dir_okay=False)),
        output_option(written, required=True, dir_okay=False),
        size_option("Input size HxW to check at [default: the model's own size]."),
        _gate_options(precision),
    )


def _float_conversion(precision: str, onnx_model, output, size, verify_images, min_agreement, eval_list,
                      max_miou_drop, fallback, report_path) -> None:
    from export.precision.verified import Conversion

    _convert(onnx_model, output, Conversion(precision, size=size, verify_images=verify_images,
                                            min_agreement=min_agreement / 100, eval_list=eval_list,
                                            max_miou_drop=max_miou_drop, fallback=fallback), (), report_path)


@click.command(cls=Command)
@_float_options("fp16", "FP16 ONNX file to write.")
def fp16_command(**options):
    """FP16 copy of an FP32 ONNX_MODEL, inputs and outputs kept FP32 (ModelOpt AutoCast), verified.

    The exact pyramid pooling and the final upsampling/argmax stay FP32, where rounding would move class
    boundaries. The FP32 and FP16 models run on held-out images; below the gate the most sensitive nodes are
    kept FP32 (--fallback auto) or nothing is written (exit 1).
    """
    _float_conversion("fp16", **options)


@click.command(cls=Command)
@_float_options("bf16", "OpenVINO IR to write (.xml, its weights in the .bin beside it).")
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
@click.option("--target", cls=_TargetsHelp, type=TargetChoice(_int8_targets), default="tensorrt", show_default=True,
              help_of=_target_help)
@click.option("--method", cls=_TargetsHelp, type=TargetChoice(lambda: all_methods("int8")), default="entropy",
              show_default=True, help_of=_method_help)
@num_images_option("Calibrate on", default=DEFAULT_NUM_IMAGES)
@size_option("Input size HxW to prepare images at [default: the model's own size].")
@_gate_options("int8")
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
