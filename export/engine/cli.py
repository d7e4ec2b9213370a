"""psp-build-engine: a TensorRT engine (and its JSON sidecar) from an ONNX model."""
from __future__ import annotations

import click

from export.engine.build import DEFAULT_WORKSPACE_GIB
from export.precision.calibration import DEFAULT_NUM_IMAGES
from export.precision.cli import TargetChoice, calibration_images, calibration_options
from export.precision.target import engine_calibrated, engine_precisions, engine_target
from pspcore.cli import Command, batch_option, device_option, num_images_option, output_option, size_option
from pspcore.device import cuda_index
from pspcore.errors import InputError, notice
from pspcore.precisions import INT8


@click.command(cls=Command)
@click.argument("onnx_model", type=click.Path(dir_okay=False))
@output_option("Engine file to write (its sidecar goes to OUTPUT.json).", required=True, dir_okay=False,
               dest="engine")
@click.option("--fp16", "precision", flag_value="fp16", help="Convert an FP32 model to FP16 first (ModelOpt AutoCast).")
@click.option("--int8", "precision", flag_value="int8",
              help="Quantize an FP32 model to INT8 first (explicit Q/DQ; needs --calib-images, --calib-list or "
                   "--calib-dataset).")
@calibration_options
@num_images_option("Calibrate on", default=DEFAULT_NUM_IMAGES, when="--int8")
@click.option("--method", "calib_method", type=TargetChoice(lambda: list(engine_target(INT8).methods)), default="entropy",
              show_default=True, help="INT8 calibration method.")
@batch_option("Batch size N or MIN:OPT:MAX (dynamic-batch models).", kind=click.STRING)
@size_option(kind=click.STRING,
             help="Input HxW, or MIN:OPT:MAX sizes like 257x257:513x513:1025x1025 (dynamic-shape models) "
                  "[default: the model's own size].")
@click.option("--workspace", "workspace_gib", type=click.FloatRange(min=0, min_open=True),
              default=DEFAULT_WORKSPACE_GIB, show_default=True, help="Builder workspace limit in GiB.")
@click.option("--timing-cache", type=click.Path(dir_okay=False),
              help="Timing cache file: read if present, updated after the build (makes rebuilds fast).")
@device_option("The GPU to build for: cuda or cuda:N (an engine runs on the GPU model that built it).",
               default="cuda")
@click.option("--verbose", is_flag=True, help="Keep TensorRT's verbose log (shown if the build fails).")
def main(onnx_model, engine, precision, calib_images, calib_list, calib_dataset, data_root, calib_split, num_images,
         calib_method, batch, size, workspace_gib, timing_cache, device, verbose):
    """Build a TensorRT engine for this machine's GPU from ONNX_MODEL.

    The engine is strongly typed: its precision is the ONNX model's own (TensorRT 11 has no FP16/INT8 builder
    flags). With --fp16/--int8 an FP32 model is converted first, exactly like `psp-export fp16/int8`.
    Needs TensorRT (`pip install tensorrt`) and an NVIDIA GPU; an engine only runs on the GPU model and
    TensorRT version that built it, which the sidecar records.
    """
    from export.engine.build import build_engine

    if device == "cpu":
        raise InputError("--device cpu: TensorRT builds for a GPU; give cuda or cuda:N")

    calibrated = engine_calibrated(precision)
    if (calib_images or calib_list or calib_dataset) and not calibrated:
        flags = ", ".join(f"--{p}" for p in engine_precisions() if engine_calibrated(p))
        raise InputError(f"--calib-images/--calib-list/--calib-dataset are for {flags}")
    images = calibration_images(calib_images, calib_list, calib_dataset, data_root, calib_split) if calibrated else []
    result = build_engine(onnx_model, engine, precision=precision, batch=batch, size=size,
                          workspace_gib=workspace_gib, timing_cache=timing_cache, calib_images=images,
                          calib_method=calib_method, num_images=num_images, device=cuda_index(device) or 0, verbose=verbose)
    for note in result.notes:
        notice(note)
    for name, shapes in result.profiles.items():
        click.echo(f"profile {name}: min {shapes['min']} opt {shapes['opt']} max {shapes['max']}")
    click.echo(f"wrote {result.engine_path} ({result.precision}, TensorRT {result.sidecar.platform.tensorrt_version}, "
               f"{result.sidecar.platform.gpu_name}) and {result.sidecar_path.name} in {result.seconds:.1f} s")
