"""PSPNet -> ONNX, exact at any input size: adaptive pooling becomes averaging-matrix products (export/onnx/pooling.py),
the graph is slimmed and checked, the model's metadata goes into metadata_props, and the file is checked
against PyTorch in ONNX Runtime before it appears at its final path."""
from __future__ import annotations

import contextlib
import io
import os
import time
import warnings
from dataclasses import dataclass, replace
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from export.onnx import MAX_OPSET, MIN_OPSET, OPSET
from export.parity import FP32_MAX_REL, FP32_MIN_AGREEMENT, ParityReport, compare_outputs, worst
from export.onnx.pooling import with_exact_pooling
from export.scenes import sample_batch
from pspcore.errors import InputError, PSPError, first_line
from pspcore.files import atomic_output, check_writable, file_sha256
from pspcore.label_maps import graph_label_dtype
from pspcore.model_info import INPUT_NAME, ModelInfo

OUTPUTS = ("logits", "labels")
OUTPUT_STRIDE = 8


@dataclass
class ExportResult:
    path: Path
    node_count: int
    file_size: int
    seconds: float
    info: ModelInfo
    parity: ParityReport | None  # the worst figures over all checks; None when not verified
    checks: tuple[tuple[str, ParityReport], ...] = ()  # (what was run, its report)


def exporter_name() -> str:
    try:
        return f"pspnet-deploy {package_metadata.version('pspnet-deploy')}"
    except package_metadata.PackageNotFoundError:
        return "pspnet-deploy"


def feature_size(size: tuple[int, int]) -> tuple[int, int]:
    """The 1/8 feature map the pyramid sees: three stride-2, kernel-3, padding-1 stages (stem conv, max pool,
    layer2), each giving ceil(n / 2)."""
    def down(n: int) -> int:
        for _ in range(3):
            n = (n - 1) // 2 + 1
        return n
    return down(size[0]), down(size[1])


def largest_bin(model: nn.Module) -> int:
    sizes = [m.output_size for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    return max((max((b, b) if isinstance(b, int) else b) for b in sizes), default=1)


def minimum_size(model: nn.Module) -> int:
    """Smallest height/width whose feature map is at least as large as the largest pyramid bin; below it the
    'pooling' would spread each feature over several bins instead of averaging."""
    return OUTPUT_STRIDE * (largest_bin(model) - 1) + 1


def check_options(model: nn.Module, size, batch, opset: int, output: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise InputError(f"size must be (height, width), got {size!r}") from None
    smallest = minimum_size(model)
    if h < smallest or w < smallest:
        raise InputError(f"input size {h}x{w} is too small: the pyramid pools the 1/{OUTPUT_STRIDE} feature map "
                         f"into bins up to {largest_bin(model)}x{largest_bin(model)}, so height and width must be at "
                         f"least {smallest}")
    if batch is not None and int(batch) < 1:
        raise InputError(f"batch must be at least 1 (or dynamic), got {batch}")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise InputError(f"opset {opset} is not supported; use {MIN_OPSET}..{MAX_OPSET}")
    if output not in OUTPUTS:
        raise InputError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    return h, w


class _Deployable(nn.Module):
    """The graph that gets exported: the network in eval mode, optionally followed by ArgMax -> class ids."""

    def __init__(self, network: nn.Module, output: str, num_classes: int):
        super().__init__()
        self.network = network
        self.output = output
        self.label_dtype = getattr(torch, graph_label_dtype(num_classes).name)  # what the runtime expects

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.network(image)
        if self.output == "labels":
            return logits.argmax(1).to(self.label_dtype)
        return logits


def deployable_network(model: nn.Module, size: tuple[int, int] | None) -> nn.Module:
    """An eval-mode deep copy with exact pooling (static for `size`, dynamic for None) and no aux head."""
    network = with_exact_pooling(model, None if size is None else feature_size(size)).eval()
    config = getattr(network, "config", None)
    if getattr(config, "aux", False):
        network.config = replace(config, aux=False)
    if hasattr(network, "aux"):
        del network.aux  # training-only head: never part of a deployed graph
    return network


def _trace_to_onnx(module: nn.Module, example: torch.Tensor, *, output: str, dynamic_batch: bool,
                   dynamic_shape: bool, opset: int):
    import onnx

    axes = {0: "batch"} if dynamic_batch else {}
    if dynamic_shape:
        axes |= {2: "height", 3: "width"}
    out_axes = {k if k < 2 else k - (output == "labels"): v for k, v in axes.items()}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic: it is meant to be traced
        try:
            torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[output], do_constant_folding=True,
                              dynamic_axes={INPUT_NAME: axes, output: out_axes} if axes else None)
        except Exception as exc:  # the exporter raises many types; the user needs the first line only
            raise PSPError(f"torch.onnx.export failed (opset {opset}): {first_line(exc)}") from exc
    return onnx.load_from_string(buffer.getvalue())


def _name_output_dims(proto, info: ModelInfo, batch: int | None) -> None:
    """Spell out the output shape (shape inference leaves names like 'Resizelogits_dim_1' for the classes)."""
    h, w = ("height", "width") if info.dynamic_shape else info.input_size
    dims = [batch or "batch", *([info.num_classes] if info.output == "logits" else []), h, w]
    shape = proto.graph.output[0].type.tensor_type.shape
    del shape.dim[:]
    for value in dims:
        dim = shape.dim.add()
        if isinstance(value, str):
            dim.dim_param = value
        else:
            dim.dim_value = value


def _finish_graph(proto, info: ModelInfo, batch: int | None):
    """onnxslim, then named output dims and our metadata, then onnx.checker (with shape inference)."""
    import onnx
    import onnxslim

    with contextlib.redirect_stdout(io.StringIO()):
        slimmed = onnxslim.slim(proto)
    if slimmed is None:
        raise PSPError("onnxslim failed to optimise the exported graph")
    _name_output_dims(slimmed, info, batch)
    del slimmed.metadata_props[:]
    for key, value in info.to_props().items():
        slimmed.metadata_props.add(key=key, value=value)
    slimmed.producer_name, slimmed.producer_version = "pspnet-deploy", info.exporter.rpartition(" ")[2]
    slimmed.doc_string = f"PSPNet {info.arch}, {info.num_classes} classes, output {info.output}"
    try:
        onnx.checker.check_model(slimmed, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise PSPError(f"exported graph failed onnx.checker: {first_line(exc)}") from None
    return slimmed


def verification_sizes(size: tuple[int, int], dynamic_shape: bool, smallest: int) -> list[tuple[int, int]]:
    """The export size, plus for a dynamic-shape model a second size of another aspect ratio whose feature
    map does not divide by the bins (65x65 -> 49x81, feature 7x11)."""
    if not dynamic_shape:
        return [size]
    h, w = size
    other = (max(smallest, (3 * h) // 4), max(smallest, (5 * w) // 4))
    return [size, other] if other != size else [size]


def verify_onnx(path: str | os.PathLike, reference: nn.Module, info: ModelInfo, sizes: list[tuple[int, int]],
                batch: int | None, *, max_rel: float = FP32_MAX_REL, min_agreement: float = FP32_MIN_AGREEMENT
                ) -> list[tuple[str, ParityReport]]:
    """Run the ONNX file in ONNX Runtime (CPU) and `reference` in PyTorch on the same batches (a drawn scene
    and noise); raise PSPError if any check is outside the limits. ONNX Runtime runs through the Runner
    psp-infer uses (export.evaluation)."""
    from export.evaluation import open_runner

    chunk = batch or 2
    count = chunk * -(-2 // chunk)  # at least one scene and one noise image, in whole batches
    checks = []
    with open_runner(path) as runner:
        for i, size in enumerate(sizes):
            inputs = sample_batch(info, size, count, seed=i)
            expected, got = [], []
            for start in range(0, count, chunk):
                part = inputs[start:start + chunk]
                with torch.no_grad():
                    expected.append(reference(torch.from_numpy(part)).numpy())
                got.append(runner.infer(part))
            report = compare_outputs(np.concatenate(expected), np.concatenate(got))
            checks.append((f"{count}x3x{size[0]}x{size[1]}", report))
            if not report.ok(max_rel, min_agreement):
                raise PSPError(f"ONNX Runtime output differs from PyTorch at {size[0]}x{size[1]}: "
                               f"{report.failure(max_rel, min_agreement)}")
    return checks


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _export_info(model: nn.Module, info: ModelInfo, **exported) -> ModelInfo:
    """`info` with what the export decides; arch and classes from the network itself where it says."""
    config = getattr(model, "config", None)
    return info.with_(arch=getattr(config, "arch", info.arch),
                      num_classes=int(getattr(config, "num_classes", 0) or info.num_classes),
                      input_size=exported.pop("size"), precision="fp32", layout="NCHW",
                      exporter=exporter_name(), **exported)


def export_onnx(model: nn.Module, info: ModelInfo, path: str | os.PathLike, *, size: tuple[int, int],
                batch: int | None = None, dynamic_shape: bool = False, opset: int = OPSET, output: str = "logits",
                verify: bool = True, on_step: Callable[[str], None] | None = None) -> ExportResult:
    """Export `model` (a PSPNet) to `path`. `batch=None` makes the batch dimension dynamic; `dynamic_shape`
    makes height and width dynamic too (`size` is then the size it is traced and verified at). The file only
    appears at `path` once it has passed onnx.checker and, with `verify`, the ONNX Runtime parity check.
    `on_step(name)` is called before each stage (for progress bars)."""
    step = on_step or (lambda name: None)
    size = check_options(model, size, batch, opset, output)
    check_writable(path)
    started = time.perf_counter()
    info = _export_info(model, info, size=size, output=output, dynamic_batch=batch is None,
                        dynamic_shape=dynamic_shape)
    step("trace")
    network = deployable_network(model, None if dynamic_shape else size)
    example = torch.from_numpy(sample_batch(info, size, batch or 1))
    proto = _trace_to_onnx(_Deployable(network, output, info.num_classes), example, output=output,
                           dynamic_batch=batch is None, dynamic_shape=dynamic_shape, opset=opset)
    step("slim and check")
    proto = _finish_graph(proto, info, batch)
    checks: list[tuple[str, ParityReport]] = []
    with atomic_output(path, suffix=".onnx") as tmp:
        import onnx

        onnx.save(proto, tmp)  # one file: ModelProto stays below protobuf's 2 GB limit for every PSPNet
        if verify:
            step("verify")
            with _eval_mode(model):
                checks = verify_onnx(tmp, model, info, verification_sizes(size, dynamic_shape,
                                                                          minimum_size(model)), batch)
    path = Path(path)
    return ExportResult(path=path, node_count=len(proto.graph.node), file_size=path.stat().st_size,
                        seconds=time.perf_counter() - started, info=info,
                        parity=worst([r for _, r in checks]) if checks else None, checks=tuple(checks))


def export_checkpoint(checkpoint_path: str | os.PathLike, path: str | os.PathLike, *, arch: str | None = None,
                      num_classes: int | None = None, size: tuple[int, int] | None = None, **options
                      ) -> ExportResult:
    """Load a checkpoint (ours or hszhao/semseg's) and export it; `size` defaults to the input size the
    checkpoint records. `options` are export_onnx's."""
    from pspnet.checkpoint import load_model
    from pspnet.factory import VARIANTS

    check_writable(path)
    model, info = load_model(checkpoint_path, arch=arch, num_classes=num_classes, aux=False)
    size = size or info.input_size or VARIANTS[model.config.arch].input_size
    info = info.with_(source_sha256=file_sha256(checkpoint_path))
    return export_onnx(model, info, path, size=size, **options)
