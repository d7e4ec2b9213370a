"""Why ONNX Runtime's QLinearConv runs below ONNX Runtime's own integer GEMM rate on our INT8 PSPNet, measured
rather than guessed: the INT8 model is rebuilt in variants (per-channel or per-tensor weights, S8 or U8 weights,
QDQ or QOperator, 7-bit weights, the logit Resize in uint8, a labels output) from one calibration, each variant is
opened with several session options (optimization level, U8U8 precision mode, spinning, threads), and all of them
run interleaved under ORT's profiler. Every QLinearConv's rate comes from its shapes and kernel time and is set
against a MatMulInteger of the same M x K x N and against the machine's 2048^3 GEMM rates; the labels output is
measured end to end with psp-bench and psp-infer.

    python -m experiments.ort_int8_report runs/ort-int8 --markdown runs/ort-int8/ort-int8.md   # ~20 min, 2 cores

The tables and the reasons in words are written by experiments.ort_int8_report, which runs this from the command
line.

Models are cached in the work folder (a PSPNet-50 export and its calibration take minutes); the measurements
always run again."""
from __future__ import annotations

import json
import math
import os
import pickle
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import click
import numpy as np

from benchmarks.machine import load_average, measure_gemm_limits
from experiments.demo import run_tool
from export.precision.targets.int8_onnxruntime import (
    ORT_QUANT_DEFAULTS,
    OrtQuantOptions,
    prepare_for_onnxruntime,
    quantize_prepared,
)
from runtime.backends.openvino import cpu_flags

CALIBRATION_IMAGES = 2  # ranges only set the scales; the kernels, and so the speed, do not depend on them
GEMM_SECONDS = 0.3


# ------------------------------------------------------------------------------------------- the models

EIGHT_BIT = replace(ORT_QUANT_DEFAULTS, reduce_range=False)  # the onnxruntime target before 7-bit weights


@dataclass(frozen=True)
class ModelVariant:
    """One INT8 file: the quantizer's options, what it keeps FP32 ('pooling+output' = the onnxruntime target's
    choice, 'pooling+argmax' lets the logit Resize run on uint8), and whether an ArgMax -> uint8 labels output
    is appended (as `psp-export onnx --emit labels` would have it)."""

    name: str
    options: OrtQuantOptions = EIGHT_BIT
    resize_in_int8: bool = False
    labels: bool = False
    about: str = ""


MODEL_VARIANTS = (
    ModelVariant("default", EIGHT_BIT,
                 about="QDQ, per-channel 8-bit S8 weights, U8 activations (ORT's quantize_static on x86)"),
    ModelVariant("per-tensor", replace(EIGHT_BIT, per_channel=False), about="one scale per weight tensor"),
    ModelVariant("u8 weights", replace(EIGHT_BIT, weight_type="u8"), about="U8 activations, U8 weights"),
    ModelVariant("qoperator", replace(EIGHT_BIT, quant_format="qoperator"),
                 about="QLinearConv written in the file instead of Q/DQ pairs"),
    ModelVariant("reduce-range", replace(EIGHT_BIT, reduce_range=True),
                 about="7-bit weights (no U8S8 saturation on AVX2): what the onnxruntime target writes"),
    ModelVariant("resize uint8", resize_in_int8=True, about="Q/DQ around the logit Resize: it runs on uint8"),
    ModelVariant("labels", labels=True, about="default + ArgMax -> uint8 labels in the graph"),
)


@dataclass(frozen=True)
class SessionVariant:
    """One measured session: a model variant (or 'fp32') opened with these session options."""

    name: str
    model: str  # a ModelVariant name, or "fp32"
    level: str = "ORT_ENABLE_ALL"
    config: tuple[tuple[str, str], ...] = ()
    threads_scale: float = 1.0  # fraction of --threads (1 thread to see the scaling)
    about: str = ""


SESSION_VARIANTS = (
    SessionVariant("fp32", "fp32", about="the FP32 export"),
    SessionVariant("default", "default", about="8-bit weights (the target before 7-bit), psp-infer's session options"),
    SessionVariant("default again", "default", about="a second identical session: the run-to-run spread"),
    SessionVariant("default, EXTENDED", "default", level="ORT_ENABLE_EXTENDED",
                   about="QDQ fusion, no layout (NHWC) transformer"),
    SessionVariant("default, LAYOUT", "default", level="ORT_ENABLE_LAYOUT", about="up to the layout level"),
    SessionVariant("default, BASIC", "default", level="ORT_ENABLE_BASIC", about="no QDQ fusion: DQ -> FP32 Conv"),
    SessionVariant("default, x64quantprecision", "default", config=(("session.x64quantprecision", "1"),),
                   about="ORT's exact mode: S8 weights turned into U8 (U8U8 GEMM, no saturation)"),
    SessionVariant("default, no spinning", "default", config=(("session.intra_op.allow_spinning", "0"),),
                   about="pool threads sleep instead of spinning"),
    SessionVariant("default, dynamic blocks", "default", config=(("session.dynamic_block_base", "4"),),
                   about="smaller parallel blocks as the work runs down"),
    SessionVariant("default, 1 thread", "default", threads_scale=0.5, about="half the threads"),
    *(SessionVariant(v.name, v.name, about=v.about) for v in MODEL_VARIANTS if v.name != "default"),
)


ABOUT = {v.name: v.about for v in SESSION_VARIANTS}  # a saved run is described as the code describes it now


def ensure_fp32(work: Path, arch: str, classes: int, size: int) -> Path:
    from experiments.cpu_speed import write_checkpoint

    fp32 = work / f"{arch}.onnx"
    if not fp32.is_file():
        checkpoint = work / f"{arch}.pth"
        if not checkpoint.is_file():
            write_checkpoint(checkpoint, arch, classes)
        run_tool("psp-export", "onnx", checkpoint, "-o", fp32, "--size", f"{size}x{size}")
    return fp32


def calibration_batch(fp32: Path, size: int) -> np.ndarray:
    from export.scenes import draw_scene
    from pspcore.model_reader import read_model_info
    from pspcore.preprocess import prepare_frame

    info = read_model_info(str(fp32))
    return np.stack([prepare_frame(draw_scene(size, size, seed=i), info, (size, size))[0]
                     for i in range(CALIBRATION_IMAGES)])


def keep_for(variant: ModelVariant):
    """The keep_fp32 rule of a variant: None (the target's own) or pooling + the argmax only."""
    if not variant.resize_in_int8:
        return None
    from export.precision.graph import pooling_nodes

    return lambda model: pooling_nodes(model) + [n.name for n in model.graph.node if n.op_type == "ArgMax"]


def append_labels(src: Path, dst: Path) -> None:
    """src's logits -> ArgMax over classes -> uint8 labels: the tail `--emit labels` exports."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(src))
    logits = model.graph.output[0]
    model.graph.node.extend([helper.make_node("ArgMax", [logits.name], ["labels_i64"], axis=1, keepdims=0),
                             helper.make_node("Cast", ["labels_i64"], ["labels"], to=TensorProto.UINT8)])
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("labels", TensorProto.UINT8, None))
    onnx.save(model, str(dst))


def build_models(work: Path, fp32: Path, size: int) -> dict[str, Path]:
    """Every ModelVariant's file (cached), calibrated once with MinMax (the cache of tensor ranges), written
    with the FP32 model's description as an int8 model (so psp-bench and psp-infer read it as the product's)."""
    import onnx

    from export.precision.graph import save_with_info
    from pspcore.model_reader import read_model_info

    models = work / "variants"
    models.mkdir(exist_ok=True)
    prepared, cache = models / "prepared.onnx", models / "ranges.json"
    if not prepared.is_file():
        prepare_for_onnxruntime(fp32, prepared)
    batch = calibration_batch(fp32, size)
    info = replace(read_model_info(str(fp32)), precision="int8")
    paths = {"fp32": fp32}
    for variant in MODEL_VARIANTS:
        path = models / f"{variant.name.replace(' ', '-')}.onnx"
        if not path.is_file():
            click.echo(f"quantizing {variant.name}", err=True)
            with tempfile.TemporaryDirectory(dir=models) as tmp:
                out = Path(tmp) / "model.onnx"
                if variant.labels:
                    append_labels(paths["default"], out)
                else:
                    quantize_prepared(prepared, out, batch, "max", (), variant.options, cache, keep_for(variant))
                save_with_info(onnx.load(str(out)), replace(info, output="labels" if variant.labels else "logits"),
                               path)
        paths[variant.name] = path
    return paths


# ------------------------------------------------------------------------------------------- measuring

@dataclass
class Kernel:
    name: str
    op: str
    inputs: list[list[int]]
    output: list[int]
    us: list[float] = field(default_factory=list)

    @property
    def ms(self) -> float:
        """The best of the profiled runs: on a shared machine other processes only ever add time."""
        return min(self.us) / 1e3 if self.us else 0.0


@dataclass
class Measured:
    variant: SessionVariant
    threads: int
    wall_ms: list[float] = field(default_factory=list)
    kernels: dict[str, Kernel] = field(default_factory=dict)
    output: np.ndarray | None = None  # dropped once the errors below are known (134 MB a session)
    error_vs_fp32: str = "-"
    error_vs_default: str = "-"
    attributes: dict[str, dict] = field(default_factory=dict)  # QLinearConv node -> conv attributes

    def by_op(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for k in self.kernels.values():
            out[k.op] += k.ms
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    @property
    def median_ms(self) -> float:
        return statistics.median(self.wall_ms)

    @property
    def best_ms(self) -> float:
        return min(self.wall_ms)


def _shape(entry) -> list[int]:
    """One 'input_type_shape' entry of ORT's profiler ({'float': [1, 3, 4, 4]}) -> [1, 3, 4, 4]."""
    return list(next(iter(entry.values()))) if isinstance(entry, dict) and entry else []


def open_session(variant: SessionVariant, path: Path, threads: int, tmp: Path, optimized: Path | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, variant.level)
    options.intra_op_num_threads = threads
    for key, value in variant.config:
        options.add_session_config_entry(key, value)
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp / variant.name.replace(" ", "_").replace(",", ""))
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def conv_attributes(optimized: Path) -> dict[str, dict]:
    """QLinearConv node name -> its attributes (kernel_shape, strides, dilations, group) and `weight_shape`
    (OIHW), read off the optimized graph ORT ran: the profiler shows no weight shape once it is pre-packed."""
    import onnx
    from onnx import helper

    model = onnx.load(str(optimized), load_external_data=False)
    dims = {i.name: list(i.dims) for i in model.graph.initializer}
    return {n.name: {**{a.name: helper.get_attribute_value(a) for a in n.attribute},
                     "weight_shape": dims.get(n.input[3], [])}
            for n in model.graph.node if n.op_type == "QLinearConv"}


def measure_sessions(paths: dict[str, Path], threads: int, runs: int, feed: np.ndarray) -> list[Measured]:
    """Open every SessionVariant, warm each up once, then `runs` rounds, one inference of each per round
    (interleaved, so a busy machine slows all alike); kernel times from ORT's profiler, warm-up dropped."""
    with tempfile.TemporaryDirectory(prefix="ort-int8-") as tmp_name:
        tmp = Path(tmp_name)
        results, sessions = [], []
        for variant in SESSION_VARIANTS:
            n = max(1, round(threads * variant.threads_scale))
            optimized = tmp / "optimized.onnx" if variant.name == "default" else None
            session = open_session(variant, paths[variant.model], n, tmp, optimized)
            measured = Measured(variant, n)
            if optimized is not None:
                measured.attributes = conv_attributes(optimized)
            name = session.get_inputs()[0].name
            measured.output = session.run(None, {name: feed})[0]  # warm-up, and the output for the accuracy
            sessions.append((session, name))
            results.append(measured)
        pairs = list(zip(sessions, results))
        order = list(range(len(pairs)))
        shuffle = np.random.default_rng(0)
        for _ in range(runs):
            shuffle.shuffle(order)  # a new order every round: load that drifts within a round favours no one
            for (session, name), measured in (pairs[i] for i in order):
                start = time.perf_counter()
                session.run(None, {name: feed})
                measured.wall_ms.append((time.perf_counter() - start) * 1e3)
        for (session, _), measured in zip(sessions, results):
            events = json.loads(Path(session.end_profiling()).read_text())
            _collect(measured, events, runs)
    return results


def _collect(measured: Measured, events: list[dict], runs: int) -> None:
    seen: dict[str, int] = defaultdict(int)
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        name = e["name"][: -len("_kernel_time")]
        seen[name] += 1
        if seen[name] == 1:  # the warm-up run
            continue
        args = e.get("args", {})
        kernel = measured.kernels.get(name)
        if kernel is None:
            kernel = measured.kernels[name] = Kernel(
                name, args.get("op_name", "?"), [_shape(s) for s in args.get("input_type_shape", [])],
                _shape((args.get("output_type_shape") or [{}])[0]))
        kernel.us.append(float(e["dur"]))


def conv_gemm_shape(kernel: Kernel, attributes: dict) -> tuple[int, int, int] | None:
    """(M output pixels, K = C/group x kh x kw, N output channels) of a QLinearConv, from its output shape
    (NCHW or NHWC) and its weight (OIHW)."""
    weight = attributes.get(kernel.name, {}).get("weight_shape")
    if kernel.op != "QLinearConv" or not weight or not kernel.output:
        return None
    n = weight[0]
    return math.prod(kernel.output) // n, math.prod(weight[1:]), n


def conv_class(kernel: Kernel, attributes: dict) -> str:
    weight = attributes["weight_shape"]
    kh, kw = weight[2:4]
    stride = max(attributes.get("strides", [1]))
    dilation = max(attributes.get("dilations", [1]))
    words = [f"{kh}x{kw}"] + ([f"stride {stride}"] if stride > 1 else []) + \
        ([f"dilation {dilation}"] if dilation > 1 else []) + (["3 input channels"] if weight[1] == 3 else [])
    return " ".join(words)


# ------------------------------------------------------------------------------------------- GEMM references

def matmul_integer_model(m: int, k: int, n: int, weight_type: str) -> bytes:
    """A [M, K] uint8 x [K, N] (int8 or uint8 constant) MatMulInteger: the GEMM a QLinearConv of that shape
    does, without im2col, requantization or layout work."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if weight_type == "s8":
        w = rng.integers(-127, 128, (k, n), dtype=np.int8)
    else:
        w = rng.integers(0, 256, (k, n), dtype=np.uint8)
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "gemm",
                              [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])],
                              initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def gemm_ms(m: int, k: int, n: int, weight_type: str, threads: int, seconds: float = GEMM_SECONDS) -> float:
    """Best time of one MatMulInteger of that shape (ms)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(matmul_integer_model(m, k, n, weight_type), options,
                                   providers=["CPUExecutionProvider"])
    feed = {"a": np.random.default_rng(1).integers(0, 256, (m, k), dtype=np.uint8)}
    session.run(None, feed)
    best, start, done = float("inf"), time.perf_counter(), 0
    while done < 3 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        session.run(None, feed)
        best = min(best, time.perf_counter() - t0)
        done += 1
    return best * 1e3


# ------------------------------------------------------------------------------------------- the labels output

def openvino_outputs(pairs: dict[str, tuple[Path, Path]], threads: int, runs: int) -> dict[str, dict[str, float]]:
    """OpenVINO on each logits model as it is and with the runner's `output="labels"` (the ArgMax it appends,
    what psp-infer asks for): best and median ms of `runs` interleaved inferences. {} without openvino."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return {}
    from export.scenes import sample_batch
    from pspcore.registry import create_runner

    runners = {}
    for precision, (logits, _) in pairs.items():
        for output in ("logits", "labels"):
            runner = create_runner("openvino", logits, threads=threads,
                                   **({"output": "labels"} if output == "labels" else {}))
            runner.activate()
            runners[f"{precision} {output}"] = runner
    times: dict[str, list[float]] = defaultdict(list)
    try:
        first = next(iter(runners.values()))
        batch = sample_batch(first.info, first.input_spec.size, 1)
        for runner in runners.values():
            runner.infer(batch)  # warm-up
        for _ in range(runs):
            for name, runner in runners.items():
                start = time.perf_counter()
                runner.infer(batch)
                times[name].append((time.perf_counter() - start) * 1e3)
    finally:
        for runner in runners.values():
            runner.deactivate()
    return {name: {"best": min(t), "median": statistics.median(t)} for name, t in times.items()}


def labels_end_to_end(work: Path, paths: dict[str, Path], fp32_labels: Path, threads: int, images: int,
                      rounds: int) -> dict:
    """psp-bench (interleaved) and psp-infer (wall time over `images` drawn scenes, rounds alternated) on the
    same network with a logits and with a labels output, FP32 and INT8, on ONNX Runtime; and OpenVINO's runner
    with and without its appended ArgMax."""
    from export.scenes import write_scenes

    pairs = {"fp32": (paths["fp32"], fp32_labels), "int8": (paths["default"], paths["labels"])}
    bench_json = work / "labels-bench.json"
    run_tool("psp-bench", "latency", *[p for pair in pairs.values() for p in pair], "--backend", "onnxruntime",
             "--threads", threads, "--no-limit", "--json", bench_json, "--min-iters", 6, "--duration-s", 2)
    bench = json.loads(bench_json.read_text())
    folder = work / "infer-images"
    if not folder.is_dir():
        write_scenes(folder, [(480, 640)] * images)
    infer: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):
        for pair in pairs.values():
            for model in pair:
                out = work / "infer-out" / model.stem
                start = time.perf_counter()
                run_tool("psp-infer", model, folder, "-o", out, "--backend", "onnxruntime", "--threads", threads,
                         "-q")
                infer[str(model)].append(time.perf_counter() - start)
    return {"bench": bench, "infer": dict(infer), "pairs": {k: [str(p) for p in v] for k, v in pairs.items()},
            "images": images, "openvino": openvino_outputs(pairs, threads, runs=4)}


# ------------------------------------------------------------------------------------------- saturation, trained model

SATURATION_CALIB = 16


def _images(folder: Path, info, count: int | None = None) -> np.ndarray:
    import cv2

    from pspcore.files import list_images
    from pspcore.preprocess import prepare_frame

    paths = list_images(folder)[:count]
    return np.stack([prepare_frame(cv2.imread(str(p), cv2.IMREAD_COLOR), info, info.input_size)[0] for p in paths])


def saturation_check(model: Path, data: Path, work: Path, threads: int) -> dict:
    """On a trained model (the demo's trained model and its context-scenes split): the onnxruntime target's INT8
    (entropy, calibrated on train images) in the default session (U8S8, which saturates in vpmaddubsw on AVX2
    without VNNI) and in ORT's exact session (`session.x64quantprecision`: U8U8), and the 7-bit-weight file:
    strict argmax agreement with FP32 on the val images."""
    import onnxruntime as ort

    from pspcore.model_reader import read_model_info

    info = read_model_info(str(model))
    calib, val = _images(data / "train" / "images", info, SATURATION_CALIB), _images(data / "val" / "images", info)
    folder = work / "saturation"
    folder.mkdir(exist_ok=True)
    prepared = folder / "prepared.onnx"
    if not prepared.is_file():
        prepare_for_onnxruntime(model, prepared)
    files = {"fp32": model}
    for name, options in (("s8 weights", EIGHT_BIT), ("7-bit weights", replace(EIGHT_BIT, reduce_range=True))):
        files[name] = folder / f"{name.replace(' ', '-')}.onnx"
        if not files[name].is_file():
            quantize_prepared(prepared, files[name], calib, "entropy", (), options, folder / "ranges.json")
    outputs = {}
    for label, name, exact in (("FP32", "fp32", False), ("S8 weights, default session (U8S8)", "s8 weights", False),
                               ("S8 weights, x64quantprecision (U8U8, exact)", "s8 weights", True),
                               ("7-bit weights (reduce_range), default session", "7-bit weights", False)):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        if exact:
            options.add_session_config_entry("session.x64quantprecision", "1")
        session = ort.InferenceSession(str(files[name]), options, providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0].name
        outputs[label] = np.concatenate([session.run(None, {feed: val[i:i + 1]})[0] for i in range(len(val))])
    reference = outputs.pop("FP32")
    labels = reference.argmax(1)
    return {"model": str(model), "images": len(val), "calibration": len(calib),
            "rows": [{"session": label, "agreement": float((out.argmax(1) == labels).mean()),
                      "error": logit_error(out, reference)} for label, out in outputs.items()]}


# ------------------------------------------------------------------------------------------- the report

def logit_error(m: np.ndarray, reference: np.ndarray) -> str:
    """Mean |difference| of two logit tensors over the reference's standard deviation ('-' for labels)."""
    if m.ndim != 4 or reference.ndim != 4:
        return "-"
    return f"{float(np.abs(m - reference).mean() / reference.std()):.4f}"


@dataclass
class Analysis:
    machine: dict
    limits: list
    extra_limits: dict
    measured: list[Measured]
    gemm: dict[tuple[int, int, int], float]
    gemm_u8: dict[tuple[int, int, int], float]
    size: int
    runs: int
    labels: dict | None = None
    saturation: dict | None = None


def run_analysis(work: Path, arch: str, classes: int, size: int, threads: int, runs: int, labels: bool | str,
                 infer_images: int, trained: Path | None = None,
                 show: Callable[[Analysis], None] = lambda analysis: None) -> Analysis:
    import onnxruntime

    work.mkdir(parents=True, exist_ok=True)
    fp32 = ensure_fp32(work, arch, classes, size)
    paths = build_models(work, fp32, size)
    machine = {"cpu": _cpu_name(), "cores": os.cpu_count(), "threads": threads, "arch": arch,
               "classes": classes,
               "onnxruntime": onnxruntime.__version__, "load_start": load_average(),
               "isa": ", ".join(sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma"))
                                       or "vnni" in f)) or "unknown",
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    from export.scenes import draw_scene
    from pspcore.model_reader import read_model_info
    from pspcore.preprocess import prepare_frame

    feed = prepare_frame(draw_scene(size, size, seed=99), read_model_info(str(fp32)), (size, size))[0][None]
    click.echo("measuring sessions", err=True)
    measured = measure_sessions(paths, threads, runs, feed)
    fp32_out = next(m for m in measured if m.variant.model == "fp32").output
    default_out = next(m for m in measured if m.variant.name == "default").output
    for m in measured:
        m.error_vs_fp32, m.error_vs_default = logit_error(m.output, fp32_out), logit_error(m.output, default_out)
    for m in measured:
        m.output = None
    click.echo("measuring GEMM rates", err=True)
    limits = measure_gemm_limits(threads)
    extra = {"MatMulInteger u8u8": 2.0 * 2048 ** 3 / gemm_ms(2048, 2048, 2048, "u8", threads, 0.5) / 1e9}
    base = next(m for m in measured if m.variant.name == "default")
    shapes = {s for s in (conv_gemm_shape(k, base.attributes) for k in base.kernels.values()) if s}
    gemm = {s: gemm_ms(*s, "s8", threads) for s in sorted(shapes)}
    gemm_u8 = {s: gemm_ms(*s, "u8", threads) for s in sorted(shapes)}
    machine["load_end"] = load_average()
    analysis = Analysis(machine, limits, extra, measured, gemm, gemm_u8, size, runs)
    show(analysis)  # the variant table, seen before the long labels part
    if trained is not None:
        click.echo("U8S8 saturation on the trained model", err=True)
        from experiments.demo import Paths

        analysis.saturation = saturation_check(Paths.found_model(trained, "fp32"), trained / "data", work, threads)
    if labels == "reuse":
        analysis.labels = pickle.loads((work / "analysis.pkl").read_bytes()).labels
    elif labels:
        fp32_labels = work / f"{arch}-labels.onnx"
        if not fp32_labels.is_file():
            run_tool("psp-export", "onnx", work / f"{arch}.pth", "-o", fp32_labels, "--emit", "labels",
                     "--size", f"{size}x{size}")
        analysis.labels = labels_end_to_end(work, paths, fp32_labels, threads, infer_images, rounds=3)
    return analysis


def _cpu_name() -> str:
    from benchmarks.machine import machine_info

    return machine_info(None)["cpu"]
