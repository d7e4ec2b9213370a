"""psp-export: turn a checkpoint into deployable model files."""
from __future__ import annotations

import click

from pspcore.cli import LazyGroup


@click.group(cls=LazyGroup, lazy={
    "onnx": "export.onnx.cli:onnx_command",
    "fp16": "export.precision.cli:fp16_command",
    "bf16": "export.precision.cli:bf16_command",
    "int8": "export.precision.cli:int8_command",
    "compare": "export.precision.compare_cli:compare_command",
    "triton": "export.triton.cli:triton_command",
})
def main():
    """Export PSPNet models: `onnx` from a checkpoint, then `fp16` / `bf16` (OpenVINO IR) / `int8` from the ONNX
    model (verified against it), `compare` to see layer by layer where a conversion departs,
    and `triton` for a Triton Inference Server model repository."""
