"""Which layers OpenVINO's CPU plugin runs in bf16 for a psp-export bf16 IR, read from the compiled model itself
(get_runtime_model(), as tests/export/test_openvino_bf16.py does). Run it on a bf16 CPU (AMX or AVX512-BF16):

    python -m experiments.bf16_layers                 # pspnet18-tiny (random weights) at 129x129
    python -m experiments.bf16_layers model.onnx      # an FP32 export of your own

It writes the IR the conversion writes (without its gate: precisions do not depend on the weights), compiles it
with the bf16 hint, prints every layer's type, runtime precision and source ops, and exits 1 when a layer made
from a node the IR keeps FP32 (the exact pooling, the output region, i.e. the logits' resize MatMuls) runs in
bf16. Shape-only layers (ShapeOf) are listed but not counted: they report the precision of the tensor they
measure. On a CPU without bf16 it says so and exits 0 (OpenVINO compiles the file in f32 there)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import click

from pspcore.cli import Command

SHAPE_ONLY = ("ShapeOf",)


def fp32_onnx(folder: Path) -> Path:
    from export.onnx.exporter import export_onnx
    from pspnet.checkpoint import info_for_config
    from pspnet.factory import create_model

    model = create_model("pspnet18-tiny", 5).eval()
    return export_onnx(model, info_for_config(model.config), folder / "fp32.onnx", size=(129, 129)).path


def layer_report(source: Path, folder: Path) -> tuple[list[str], list[str]]:
    """(lines to print, kept layers found in bf16)."""
    import onnx

    from export.precision.targets.bf16 import cpu_has_bf16, kept_nodes, ops_of, save_bf16_ir
    from pspcore.model_info import read_onnx_info
    from runtime.backends.openvino import OpenVINORunner, read_model

    model = onnx.load(str(source))
    out = save_bf16_ir(model, (), read_onnx_info(source).with_(precision="bf16"), folder / "bf16.xml")
    written = read_model(out)
    kept = {op.get_friendly_name() for node in model.graph.node if node.name in kept_nodes(model)
            for op in ops_of(written, node)}
    with OpenVINORunner(out) as runner:
        lines = [f"CPU has bf16: {cpu_has_bf16()}; compiled as {runner.describe()}"]
        wrong = []
        for kind, precision, names in runner.layer_precisions():
            mark = "kept" if kept & set(names) else ""
            lines.append(f"{kind:<18} {precision:<5} {mark:<5} {','.join(names)[:90]}")
            if mark and precision == "bf16" and kind not in SHAPE_ONLY:
                wrong.append(f"{kind} {','.join(names)}")
    return lines, wrong


@click.command(cls=Command)
@click.argument("onnx_model", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def main(onnx_model):
    """Print the runtime precision of every layer of a psp-export bf16 IR on this CPU; exit 1 when a layer
    the IR keeps FP32 runs in bf16."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        lines, wrong = layer_report(onnx_model or fp32_onnx(folder), folder)
    click.echo("\n".join(lines))
    from export.precision.targets.bf16 import NO_BF16, cpu_has_bf16

    if not cpu_has_bf16():
        click.echo(f"note: {NO_BF16}; run this on an AMX or AVX512-BF16 CPU")
        return
    if wrong:
        raise click.ClickException(f"{len(wrong)} kept layer(s) ran in bf16: " + "; ".join(wrong))
    click.echo("every kept layer (pooling, logits resize) ran in f32 or integer types")


if __name__ == "__main__":
    main()
