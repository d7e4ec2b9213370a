"""psp-export compare: where a converted model departs from its FP32 source, layer by layer (Polygraphy's
`debug precision` idea, on the CPU with ONNX Runtime)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from pspcore.cli import Command, echo_summary, json_destination, json_option, num_images_option
from pspcore.errors import notice


@click.command(cls=Command)
@click.argument("fp32_model", type=click.Path(dir_okay=False))
@click.argument("other_model", type=click.Path(dir_okay=False))
@click.option("--images", required=True, type=click.Path(file_okay=False), help="Folder of images to run (recursive).")
@num_images_option("Run", default=4)
@click.option("--threshold", type=click.FloatRange(min=0), default=0.1, show_default=True,
              help="Relative error marking the first layer that departs.")
@json_option("Write the comparison as JSON")
def compare_command(fp32_model, other_model, images, num_images, threshold, json_path):
    """Run FP32_MODEL and OTHER_MODEL (its FP16/INT8 conversion) on images with every compute node's output
    exposed, and print per layer, in graph order, the relative error and cosine similarity of OTHER_MODEL's
    output against FP32, marking the first layer past --threshold."""
    from export.precision.calibration import load_calibration_set
    from export.precision.equalize import equalize
    from export.evaluation import logits, open_runner
    from export.precision.layerwise import compare_layers, first_past
    from export.precision.graph import calibration_size, check_source
    from export.precision.verdict import judge
    from pspcore.errors import InputError
    from pspcore.files import atomic_output, list_images, require_file
    from pspcore.model_info import EXTRA_PRECISION_REPAIR

    require_file(other_model, "ONNX model")
    if not Path(images).is_dir():
        raise InputError(f"image folder not found: {images}")
    with open_runner(fp32_model) as fp32, open_runner(other_model) as other:
        info = check_source(fp32.info, fp32_model)
        other_info = other.info
        batch = load_calibration_set(list_images(images, recursive=True), info,
                                     calibration_size(fp32_model, info, None), num_images, progress=False).batch
        verdict = judge(logits(fp32, batch), logits(other, batch))
    with tempfile.TemporaryDirectory(prefix="psp-compare-") as work:
        reference = fp32_model
        if other_info.extra.get(EXTRA_PRECISION_REPAIR, {}).get("equalized"):
            # its layers were rescaled per channel by repair: compare with the same (deterministic) rescale
            reference = equalize(fp32_model, Path(work) / "equalized.onnx").path
            notice("OTHER_MODEL was cross-layer equalized; layers compared with the equalized FP32 model")
        rows = compare_layers(reference, other_model, batch)
    if not rows:
        raise InputError(f"{other_model} shares no compute node names with {fp32_model}: not its conversion")
    first = first_past(rows, threshold)

    def say(text: str) -> None:
        echo_summary(text, json_path)

    say(f"{'#':>3s}  {'layer':56s} {'op':6s} {'rel. error':>10s} {'cosine':>8s}")
    for i, row in enumerate(rows):
        mark = "  <- first past threshold" if row is first else ""
        say(f"{i:3d}  {row.node[-56:]:56s} {row.op:6s} {row.rel_error:10.4f} {row.cosine:8.4f}{mark}")
    say(f"{other_info.precision} output {verdict.describe()}")
    say(f"first layer past relative error {threshold:g}: " + (first.node if first else "none"))
    if json_path:
        data = {"schema": "psp-export-compare/1", "fp32": str(fp32_model), "other": str(other_model),
                "images": len(batch), "threshold": threshold, "first_past": first.node if first else None,
                "agreement": verdict.agreement, "layers": [r.to_dict() for r in rows]}
        with json_destination(json_path) as path, atomic_output(path, suffix=".json") as tmp:
            tmp.write_text(json.dumps(data, indent=2) + "\n")
