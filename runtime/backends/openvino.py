"""OpenVINO backend (CPU): runs our .onnx files (FP32, FP16, INT8 Q/DQ) and OpenVINO IR (.xml + .bin).

Precision is what the model says, never what the CPU prefers: on a CPU with AMX or AVX512-BF16 OpenVINO runs an
FP32 model in bf16 unless INFERENCE_PRECISION_HINT is "f32", a silent change the parity promise does not allow. So
the hint is f32 unless the caller asks for bf16, or the model asks for it (an IR recording INFERENCE_PRECISION_HINT in
its rt_info "runtime_options", as psp-export bf16 writes, or a model whose description says bf16), and
`describe()` shows the precision the compiled model actually reports and who asked for another one."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pspcore.errors import BackendUnavailable, InputError, PSPError
from pspcore.files import require_file, suffix_of
from pspcore.label_maps import graph_label_dtype
from pspcore.model_info import ModelInfo, fallback_info
from pspcore.options import BackendOptions, option, threads_option
from pspcore.runner import InputSpec, Runner
from pspcore.threads import cpu_threads

IR_SUFFIX = ".xml"
WEIGHTS_SUFFIX = ".bin"  # an IR's weights, in the file beside its .xml
# Where an exported IR keeps our ModelInfo: rt_info[INFO_KEY][field] = the field's JSON text. A model read
# from ONNX carries the same fields under rt_info["framework"] as "pspnet.<field>" (its metadata_props).
INFO_KEY = "pspnet_model_info"
PRECISION_HINTS = {"fp32": "f32", "f32": "f32", "bf16": "bf16"}
# OpenVINO's rt_info section for the compile properties a model is meant to run with. OpenVINO 2026.4's CPU
# plugin applies only its KV-cache and dynamic-quantization keys from it by itself, so the hint is read here.
RUNTIME_OPTIONS = "runtime_options"
PRECISION_HINT_KEY = "INFERENCE_PRECISION_HINT"
# CPU flags that make OpenVINO's INT8 kernels clearly faster than ONNX Runtime's (AMX-INT8, AVX512-VNNI):
# measured on such a Xeon 2.4x on the same Q/DQ file; on an AVX2-only EPYC both ran within 5%.
FAST_INT8_FLAGS = ("amx_int8", "avx512_vnni")
INSTALL_HINT = "pip install 'pspnet-deploy[openvino]'"


def import_openvino():
    try:
        import openvino
    except ImportError:
        raise BackendUnavailable(f"the openvino backend needs the openvino package ({INSTALL_HINT})") from None
    return openvino


def _first_line(exc: BaseException) -> str:
    """OpenVINO's messages start with a stack of 'Exception from src/...' lines; keep the first real one."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith("Exception from src/")]
    return (useful or lines or [type(exc).__name__])[0]


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            line = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        return set()
    return set(line.split(":", 1)[-1].split())


def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 on this machine (AMX or AVX512-BF16)."""
    return "BF16" in import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def read_model(path: str | Path):
    """The ov.Model of an .onnx or .xml file, or one clear InputError (missing .bin, unreadable file)."""
    ov = import_openvino()
    path = require_file(path, "model")
    if path.suffix.lower() == IR_SUFFIX and not path.with_suffix(WEIGHTS_SUFFIX).is_file():
        raise InputError(f"{path}: its weights file {path.with_suffix(WEIGHTS_SUFFIX).name} is missing (an OpenVINO IR "
                         "is the .xml and the .bin beside it)")
    try:
        return ov.Core().read_model(str(path))
    except Exception as exc:  # OpenVINO raises RuntimeError with its own text for every parse failure
        raise InputError(f"{path}: not a model OpenVINO can read: {_first_line(exc)}") from None


def _rt_section(model, key: str) -> dict[str, str]:
    if not model.has_rt_info([key]):
        return {}
    section = model.get_rt_info()[key]
    return {k: v.astype(str) for k, v in section.items()} if isinstance(section, dict) else {}


def model_info(model, source: str) -> ModelInfo:
    """Our ModelInfo from an IR's rt_info or an ONNX model's metadata; else the fallback from its shapes."""
    ours = _rt_section(model, INFO_KEY)
    props = {f"pspnet.{k}": v for k, v in ours.items()} if ours else _rt_section(model, "framework")
    info = ModelInfo.from_props(props)
    if info is not None:
        return info
    out = model.output(0)
    names = out.get_names()
    return fallback_info(source, _shape(model.input(0).get_partial_shape()),
                         "labels" if "labels" in names else next(iter(names), ""),
                         _shape(out.get_partial_shape()))


def recorded_precision(model) -> str | None:
    """The inference precision an ov.Model records in its runtime_options (an IR's rt_info), if any."""
    if not model.has_rt_info([RUNTIME_OPTIONS, PRECISION_HINT_KEY]):
        return None
    return model.get_rt_info([RUNTIME_OPTIONS, PRECISION_HINT_KEY]).astype(str).lower()


def write_model_info(model, info: ModelInfo) -> None:
    """Store `info` in the model's rt_info (saved into the IR by ov.save_model)."""
    for key, value in info.to_dict().items():
        model.set_rt_info(json.dumps(value), [INFO_KEY, key])


def _shape(partial) -> list[int | None]:
    return [d.get_length() if d.is_static else None for d in partial]


def append_labels(model) -> None:
    """Replace the logits output [N, C, H, W] by class ids [N, H, W] in the type an exported model's labels
    output has (pspcore.label_maps.graph_label_dtype): the argmax then runs inside OpenVINO and 4*C bytes per
    pixel are never copied out."""
    import openvino.opset13 as ops

    logits_result = model.get_results()[0]
    logits = logits_result.input_value(0)
    classes = logits.get_partial_shape()[1]
    dtype = graph_label_dtype(0 if classes.is_dynamic else classes.get_length())
    top = ops.topk(logits, ops.constant(np.int64(1)), 1, "max", "none", "i32")
    ids = ops.squeeze(top.output(1), ops.constant(np.array([1], np.int64)))
    labels = ops.result(ids if dtype == np.int32 else ops.convert(ids, dtype))
    labels.output(0).get_tensor().set_names({"labels"})
    model.add_results([labels])
    model.remove_result(logits_result)


@dataclass(frozen=True)
class OpenVINOOptions(BackendOptions):
    """What the openvino backend takes."""

    threads: int | None = threads_option()
    precision: str | None = option(None, "bf16 asks OpenVINO for bf16 inference on an FP32 model [default: the "
                                         "model's own]", cli=True, choices=("fp32", "bf16"))
    output: str | None = option(None, "'labels': append an ArgMax to a logits model")
    batch: int | None = option(None, "reshape the model to this fixed batch")
    size: tuple[int, int] | None = option(None, "(H, W): reshape a dynamic-shape model to this fixed size")
    device: str = option("cpu", "where the model runs: the cpu here")

    @classmethod
    def from_device(cls, device: str) -> dict:
        if device in ("auto", "cpu"):
            return {}
        raise InputError(f"backend openvino runs on the cpu here, not --device {device}")


class OpenVINORunner(Runner):
    """Runs an OpenVINO IR, or an ONNX model read by OpenVINO, on the CPU (options: OpenVINOOptions)."""

    name = "openvino"
    options_class = OpenVINOOptions
    requires = ("openvino",)

    def __init__(self, model_path, **options):
        super().__init__(str(model_path))
        o = self.options_class.parse(self.name, options)
        precision, output, device = o.precision, o.output, o.device
        if precision is not None and precision.lower() not in PRECISION_HINTS:
            raise InputError(f"openvino runs precision fp32 or bf16, not {precision!r}")
        if output not in (None, "logits", "labels"):
            raise InputError(f"output must be logits or labels, not {output!r}")
        if str(device).lower() != "cpu":
            raise InputError(f"the openvino backend runs on the cpu here, not {device!r}")
        self.threads, self.precision, self.output = o.threads, precision, output
        self.batch, self.size = o.batch, tuple(o.size) if o.size else None
        self.hint: str | None = None  # the inference precision the compiled model reports
        self.wanted: str = "f32"  # the precision hint passed to OpenVINO
        self.wanted_by: str | None = None  # who asked for it when not the f32 default
        self._compiled = self._request = None

    @classmethod
    def auto_priority(cls, model_path: str) -> int | None:
        """IR: only OpenVINO runs it. ONNX: above ONNX Runtime (10) only for an INT8 model on a CPU whose INT8
        instructions OpenVINO uses better (AMX, AVX512-VNNI); FP32 with the f32 hint is not faster."""
        suffix = suffix_of(model_path)
        if suffix == IR_SUFFIX:
            return 100
        if suffix != ".onnx":
            return None
        if not cpu_flags() & set(FAST_INT8_FLAGS):
            return 5
        try:
            precision = model_info(read_model(model_path), str(model_path)).precision
        except PSPError:
            return 5
        return 20 if precision.startswith("int8") else 5

    def release(self) -> None:
        self._request = self._compiled = None

    def load(self) -> None:
        import_openvino()  # one clear line when it is not installed
        import openvino.properties as props
        import openvino.properties.hint as hints

        model = read_model(self.model_path)
        info = model_info(model, self.model_path)
        self._reshape(model)
        if self.output == "labels" and info.output == "logits":
            append_labels(model)
            info = info.with_(output="labels")
        wanted, self.wanted_by = self._wanted_precision(model, info)
        config = {hints.inference_precision: wanted}
        threads = cpu_threads(self.threads)  # None: OpenVINO's default, a thread per core
        if threads:
            config[props.inference_num_threads] = threads
        try:
            compiled = import_openvino().Core().compile_model(model, "CPU", config)
        except Exception as exc:
            raise PSPError(f"{self.display_name}: OpenVINO cannot compile it for the CPU: {_first_line(exc)}") \
                from None
        self.hint = str(compiled.get_property(hints.inference_precision)).replace("<Type: '", "").strip("'>")
        self.hint = {"float32": "f32", "bfloat16": "bf16"}.get(self.hint, self.hint)
        if wanted == "bf16" and self.hint != "bf16":
            self.notes.append(f"this CPU has no bf16 support: OpenVINO runs {self.display_name} in {self.hint}")
        self.wanted = wanted
        self._compiled, self._request = compiled, compiled.create_infer_request()
        self.info = info
        self.input_spec = self._read_input_spec(model)

    def _wanted_precision(self, model, info: ModelInfo) -> tuple[str, str | None]:
        """(hint, who asked): the precision option, else the IR's runtime_options, else bf16 for a model
        described as bf16, else f32 (None: the default)."""
        if self.precision:
            return PRECISION_HINTS[self.precision.lower()], "the precision option"
        recorded = recorded_precision(model)
        if recorded:
            return PRECISION_HINTS.get(recorded, recorded), "the IR's runtime_options"
        if info.precision == "bf16":
            return "bf16", "the model's precision"
        return "f32", None

    def _reshape(self, model) -> None:
        if not (self.batch or self.size):
            return
        dims = _shape(model.input(0).get_partial_shape())
        if len(dims) != 4:
            raise InputError(f"{self.model_path}: expected an image input [N, 3, H, W], found {dims}")
        n, c, h, w = dims
        if self.size and (h, w) != (None, None) and (h, w) != self.size:
            raise InputError(f"{self.display_name} takes {h}x{w} inputs only; size {self.size[0]}x{self.size[1]} "
                             "needs a model exported with a dynamic shape")
        if self.batch and n is not None and n != self.batch:
            raise InputError(f"{self.display_name} takes batches of {n} only, not {self.batch}")
        target = [self.batch or n or -1, c or 3, *(self.size or (h or -1, w or -1))]
        try:
            model.reshape({model.input(0): import_openvino().PartialShape(target)})
        except Exception as exc:
            raise InputError(f"{self.display_name}: cannot reshape to {target}: {_first_line(exc)}") from None

    def _read_input_spec(self, model) -> InputSpec:
        dims = _shape(model.input(0).get_partial_shape())
        if len(dims) != 4 or dims[1] not in (None, 3):
            raise InputError(f"{self.model_path}: expected an image input [N, 3, H, W], found {dims}")
        n, _, h, w = dims
        return InputSpec(size=(h, w) if h and w else None, min_batch=n or 1, max_batch=n, fixed_batch=n)

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        try:
            # share_inputs: the base class already made the batch contiguous float32, no copy needed. The
            # outputs are copied: the caller keeps them while the next frame runs.
            return self._request.infer({0: batch}, share_inputs=True)[0]
        except Exception as exc:
            raise PSPError(f"{self.display_name}: OpenVINO failed on a batch of shape {list(batch.shape)}: "
                           f"{_first_line(exc)}") from None

    def layer_precisions(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(layer type, precision it runs in, names of the model's ops it was made from) for every layer of the
        compiled model: OpenVINO's own record (its runtime model) of what runs in f32, bf16 or u8/i8."""
        layers = []
        for op in self._compiled.get_runtime_model().get_ops():
            rt = op.get_rt_info()
            names = tuple(n for n in rt["originalLayersNames"].astype(str).split(",") if n)
            layers.append((rt["layerType"].astype(str), rt["runtimePrecision"].astype(str), names))
        return layers

    def describe(self) -> str:
        asked = f", {self.wanted} asked by {self.wanted_by}" if self.wanted_by else ""
        return f"{self.name}[cpu,{self.hint or 'f32'}{asked}] ({self.info.precision})"
