"""A Triton Inference Server model repository for an exported model: config.pbtxt built from Triton's own
protobuf schema (tritonclient's model_config_pb2), the model in version folder 1, class names as labels."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from pspcore.engine_file import ENGINE_SUFFIXES, read_sidecar
from pspcore.errors import InputError, load_error, notice_once
from pspcore.files import by_suffix, require_file
from pspcore.label_maps import graph_label_dtype
from pspcore.model_info import INPUT_NAME, ModelInfo, fallback_info
from pspcore.tensor_types import TENSORRT_TO_TRITON, numpy_to_triton
from pspnet.labels import label_set_for
from export.triton.config import PYTHON, VERSION, config_text, model_config_pb2, tensor_message
from export.triton.ensemble import MODEL_SUFFIX, ensemble_folders
from runtime.triton_steps import model_py

PLATFORMS = {"onnx": "onnxruntime_onnx", "plan": "tensorrt_plan"}
KINDS = ("auto", "cpu", "gpu")
LABELS_FILE = "labels.txt"


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as Triton sees it: Triton type name ("FP32") and the full shape, batch
    dimension included; -1 marks a dimension the model leaves open."""

    name: str
    data_type: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ServedModel:
    """What a repository entry is made from: the file, its format ("onnx" / "plan"), metadata and I/O."""

    path: Path
    kind: str
    info: ModelInfo
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    profile_batch: tuple[int, int] | None = None  # a TensorRT optimisation profile's (min, max) batch
    extra_files: tuple[Path, ...] = ()  # ONNX external data, copied beside the model


@dataclass(frozen=True)
class TritonOptions:
    """How Triton should serve the model. `max_batch` None: 8 for a batch-dynamic model, 0 for a fixed one."""

    name: str = "pspnet"
    max_batch: int | None = None
    preferred_batch: tuple[int, ...] | None = None  # None: half the max batch and the max batch
    queue_delay_us: int = 100
    instances: int = 1
    kind: str = "auto"  # "gpu" | "cpu" | "auto" (engines: gpu; python: cpu; onnxruntime_onnx: Triton's KIND_AUTO)
    force: bool = False
    platform: str | None = None  # None: onnxruntime_onnx for .onnx, tensorrt_plan for engines; or "python"
    ensemble: bool = False  # also write preprocess/postprocess steps and an image -> labels ensemble
    intra_op_threads: int = 0  # ONNX Runtime threads of the python platform (0: pspcore.threads' rule)


@dataclass
class TritonExport:
    model_dir: Path
    config_path: Path
    platform: str
    max_batch_size: int
    config_text: str
    notes: list[str] = field(default_factory=list)
    instance_kind: str = "gpu"


def _onnx_tensor(value_info) -> TensorSpec:
    import onnx
    from tritonclient.utils import np_to_triton_dtype

    tensor_type = value_info.type.tensor_type
    dtype = np_to_triton_dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
    shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
                  for d in tensor_type.shape.dim)
    return TensorSpec(value_info.name, dtype, shape)


def _external_data(model, model_dir: Path) -> tuple[Path, ...]:
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    locations = {ExternalDataInfo(t).location for t in model.graph.initializer if uses_external_data(t)}
    return tuple(sorted(model_dir / loc for loc in locations))


def read_onnx_model(path: str | os.PathLike) -> ServedModel:
    """Names, shapes and types of an ONNX model's graph inputs/outputs, and its ModelInfo."""
    import onnx

    p = require_file(path, "model")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends from protobuf
        raise load_error(p, "ONNX model", exc) from None
    weights = {t.name for t in model.graph.initializer}
    inputs = tuple(_onnx_tensor(v) for v in model.graph.input if v.name not in weights)
    outputs = tuple(_onnx_tensor(v) for v in model.graph.output)
    if not inputs or not outputs:
        raise InputError(f"{p}: the graph has no inputs or no outputs")
    info = ModelInfo.from_props({m.key: m.value for m in model.metadata_props})
    if info is None:
        info = fallback_info(str(p), inputs[0].shape, outputs[0].name, outputs[0].shape)
    return ServedModel(p, "onnx", info, inputs, outputs, extra_files=_external_data(model, p.parent))


def _triton_type(tensor: dict, engine_name: str) -> str:
    """The Triton type of an engine tensor (TENSORRT_TO_TRITON follows the tensorrt_backend's own
    ConvertTrtTypeToDataType); FP8, INT4, FP4, E8M0 have none and are refused, never written as FP32."""
    dtype = tensor["dtype"]
    if dtype not in TENSORRT_TO_TRITON:
        raise InputError(f"{engine_name}: tensor {tensor['name']!r} is TensorRT {dtype}, which Triton cannot carry "
                         f"(it has types for {', '.join(TENSORRT_TO_TRITON)}); build the engine with FP32/FP16 I/O")
    return TENSORRT_TO_TRITON[dtype]


def _engine_tensors(sidecar, low: list[int], high: list[int], engine_name: str) -> tuple[TensorSpec, TensorSpec]:
    """An engine's I/O by the names, types and shapes its sidecar recorded from the network (-1 where the
    network leaves a dimension open; TensorRT is not needed to read them back). Sidecars from before the
    tensors were recorded get our exporter's names and the profile's shapes, with a notice."""
    tensors = sidecar.tensors
    if tensors.get("inputs") and tensors.get("outputs"):
        return tuple(TensorSpec(t["name"], _triton_type(t, engine_name), tuple(t["shape"]))
                     for t in (tensors["inputs"][0], tensors["outputs"][0]))
    info = sidecar.info
    notice_once(f"tensors:{id(sidecar)}", "the engine's sidecar records no tensor names (built by an older "
                f"psp-build-engine); assuming {INPUT_NAME!r} and {info.output!r}: rebuild it to be sure")
    n, h, w = (lo if lo == hi else -1 for lo, hi in zip((low[0], *low[2:]), (high[0], *high[2:])))
    image = TensorSpec(INPUT_NAME, "FP32", (n, 3, h, w))
    if info.output == "labels":
        return image, TensorSpec("labels", numpy_to_triton(graph_label_dtype(info.num_classes)), (n, h, w))
    return image, TensorSpec("logits", "FP32", (n, info.num_classes or -1, h, w))


def read_engine_model(path: str | os.PathLike) -> ServedModel:
    """A TensorRT engine and its `<engine>.json` sidecar (ModelInfo under "info", the build profile)."""
    p = require_file(path, "engine")
    sidecar = read_sidecar(p)
    profile = sidecar.profiles.get(INPUT_NAME) or next(iter(sidecar.profiles.values()), None)
    if profile:
        low, high = list(profile["min"]), list(profile["max"])
    else:  # an engine built without a profile: its shape is what the model was exported at
        h, w = sidecar.info.input_size or (-1, -1)
        low = high = [1, 3, h, w]
    image, output = _engine_tensors(sidecar, low, high, p.name)
    return ServedModel(p, "plan", sidecar.info, (image,), (output,), profile_batch=(low[0], high[0]))


def read_served_model(path: str | os.PathLike) -> ServedModel:
    reader = by_suffix(path, {".onnx": read_onnx_model, ENGINE_SUFFIXES: read_engine_model})
    if reader is None:
        raise InputError(f"{path}: Triton export takes an .onnx model or a TensorRT engine "
                         f"({', '.join(ENGINE_SUFFIXES)})")
    return reader(path)


def _profile_batch_limit(model: ServedModel) -> int | None:
    """The largest batch a batch-dynamic engine's profile takes (Triton's TensorRT backend refuses a config whose
    max_batch_size exceeds it); None for ONNX models. A profile starting above batch 1 cannot serve Triton,
    whose batcher sends whatever number of requests arrived, one included."""
    if model.profile_batch is None:
        return None
    low, high = model.profile_batch
    if low > 1:
        raise InputError(f"{model.path.name}: its profile's smallest batch is {low}, but Triton sends batches from "
                         f"1; rebuild it with psp-build-engine --batch 1:OPT:{high}")
    return high


def _batching(model: ServedModel, options: TritonOptions) -> tuple[int, tuple[int, ...]]:
    """(max_batch_size, preferred batch sizes), checked against what the model accepts."""
    batch_dims = {t.shape[0] if t.shape else None for t in (*model.inputs, *model.outputs)}
    batchable = batch_dims == {-1}
    limit = _profile_batch_limit(model) if batchable else None
    max_batch = options.max_batch
    if max_batch is None:
        max_batch = min(8, limit or 8) if batchable else 0
    if max_batch < 0:
        raise InputError(f"--max-batch must be >= 0, got {max_batch}")
    if max_batch > 0 and not batchable:
        raise InputError(f"{model.path.name} has a fixed batch size; serve it with --max-batch 0 or export "
                         "it with a dynamic batch")
    if limit and max_batch > limit:
        raise InputError(f"--max-batch {max_batch} exceeds the engine's profile maximum {limit}")
    preferred = options.preferred_batch
    if preferred is None:
        preferred = tuple(sorted({max_batch // 2, max_batch} - {0}))
    bad = [b for b in preferred if not 0 < b <= max_batch]
    if bad:
        raise InputError(f"preferred batch sizes must lie in 1..{max_batch} (the max batch), got "
                         f"{', '.join(map(str, bad))}")
    return max_batch, tuple(sorted(set(preferred)))


def _tensor_message(message, spec: TensorSpec, batched: bool) -> None:
    tensor_message(message, spec.name, spec.data_type, spec.shape[1:] if batched else spec.shape)


def platform_of(model: ServedModel, options: TritonOptions) -> str:
    """The Triton platform serving the model: its format's own, or the python backend for ONNX."""
    platform = options.platform or PLATFORMS[model.kind]
    if platform == PYTHON and model.kind != "onnx":
        raise InputError("--platform python runs ONNX models (ONNX Runtime in the python backend); "
                         "a TensorRT engine needs --platform tensorrt_plan")
    if platform not in (PLATFORMS[model.kind], PYTHON):
        raise InputError(f"a .{model.kind} model is served by {PLATFORMS[model.kind]}"
                         f"{' or python' if model.kind == 'onnx' else ''}, not {platform}")
    return platform


def instance_kind(kind: str, platform: str) -> str:
    """gpu/cpu as asked. auto is what the platform runs on: a TensorRT engine a GPU, our python backend model
    (ONNX Runtime on CPU) a CPU, and onnxruntime_onnx Triton's KIND_AUTO (GPUs where the server has them, else
    CPU), so one repository loads on CPU-only servers too."""
    if kind not in KINDS:
        raise InputError(f"--instance-kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "auto":
        return {PLATFORMS["plan"]: "gpu", PYTHON: "cpu"}.get(platform, "auto")
    if platform == PLATFORMS["plan"] and kind == "cpu":
        raise InputError("a TensorRT engine runs on a GPU only; use --instance-kind gpu")
    return kind


def build_config(model: ServedModel, options: TritonOptions):
    """The model's Triton configuration as a model_config_pb2.ModelConfig message."""
    pb2 = model_config_pb2()
    platform = platform_of(model, options)
    kind = instance_kind(options.kind, platform)
    if options.instances < 1:
        raise InputError(f"--instances must be >= 1, got {options.instances}")
    max_batch, preferred = _batching(model, options)
    config = pb2.ModelConfig(name=options.name, max_batch_size=max_batch)
    if platform == PYTHON:
        config.backend = PYTHON
        config.parameters["onnx_file"].string_value = "model.onnx"
        config.parameters["intra_op_threads"].string_value = str(options.intra_op_threads)
    else:
        config.platform = platform
    for spec in model.inputs:
        _tensor_message(config.input.add(), spec, max_batch > 0)
    for spec in model.outputs:
        _tensor_message(config.output.add(), spec, max_batch > 0)
    # Triton's classification extension reads class names from here; our client reads the parameters.
    config.output[0].label_filename = LABELS_FILE
    if max_batch > 0:
        config.dynamic_batching.preferred_batch_size.extend(preferred)
        config.dynamic_batching.max_queue_delay_microseconds = options.queue_delay_us
    config.instance_group.add(count=options.instances, kind=pb2.ModelInstanceGroup.Kind.Value(f"KIND_{kind.upper()}"))
    for key, value in model.info.to_props().items():
        config.parameters[key].string_value = value
    return config


def class_names(info: ModelInfo) -> tuple[str, ...]:
    return info.class_names or label_set_for(info.num_classes, info.dataset).class_names


def _fill_model_dir(model_dir: Path, model: ServedModel, config) -> None:
    version_dir = model_dir / VERSION
    version_dir.mkdir(parents=True)
    shutil.copyfile(model.path, version_dir / f"model.{model.kind}")
    if config.backend == PYTHON:
        (version_dir / "model.py").write_text(model_py("OnnxStep", "ONNX Runtime on model.onnx"))
    for data in model.extra_files:
        target = version_dir / data.relative_to(model.path.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(require_file(data, "external data file"), target)
    (model_dir / LABELS_FILE).write_text("".join(f"{n}\n" for n in class_names(model.info)))
    (model_dir / "config.pbtxt").write_text(config_text(config))


def _staging_dir(repo: Path, name: str) -> Path:
    """A temporary folder on the repository's file system (so the final move is a rename). Beside the
    repository when possible: a server polling the repository then never sees a half-written model."""
    try:
        repo.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot write {repo}: {exc.strerror or exc}") from None
    for where in (repo.resolve().parent, repo):
        try:
            return Path(tempfile.mkdtemp(prefix=f".{repo.resolve().name}-{name}.partial-", dir=where))
        except OSError as exc:
            error = exc
    raise InputError(f"cannot write {repo}: {error.strerror or error}")


def _move_into_place(built: Path, final: Path, replaced: Path) -> None:
    """Rename the finished folder to `final`; an existing one (force) is moved to `replaced` first."""
    if final.exists():
        replaced.parent.mkdir(parents=True, exist_ok=True)
        os.rename(final, replaced)
    os.rename(built, final)


def write_folders(repository: Path, folders: dict[str, Callable[[Path], None]], force: bool) -> None:
    """Fill each `repository/<name>/` with its writer in one staging folder, then rename them all into place,
    so a server polling the repository never sees a half-written model (or half an ensemble)."""
    finals = [repository / name for name in folders]
    existing = [str(f) for f in finals if f.exists()]
    if existing and not force:
        raise InputError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
                         "pass --force to replace")
    staging = _staging_dir(repository, next(iter(folders)))
    try:
        for name, fill in folders.items():
            fill(staging / name)
        for name, final in zip(folders, finals):
            _move_into_place(staging / name, final, staging / ".replaced" / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_model(model: ServedModel, repository: str | os.PathLike, options: TritonOptions) -> TritonExport:
    """Write `repository/<name>/` (config.pbtxt, labels.txt, 1/model.onnx|plan) atomically; with
    `options.ensemble` the model goes to `<name>_model` beside its pre/post steps and the ensemble `<name>`."""
    if not options.name or "/" in options.name or options.name.startswith("."):
        raise InputError(f"invalid model name {options.name!r}: use a plain folder name")
    step_name = f"{options.name}{MODEL_SUFFIX}" if options.ensemble else options.name
    config = build_config(model, replace(options, name=step_name))
    folders = {step_name: lambda folder: _fill_model_dir(folder, model, config)}
    if options.ensemble:
        folders = {**ensemble_folders(model, config, options), **folders}
    write_folders(Path(repository), folders, options.force)
    final = Path(repository) / options.name
    notes = [] if config.max_batch_size else ["the model has a fixed batch: Triton serves it without batching"]
    kind = config.instance_group[0].kind
    return TritonExport(final, final / "config.pbtxt", config.platform or config.backend, config.max_batch_size,
                        (final / "config.pbtxt").read_text(), notes,
                        model_config_pb2().ModelInstanceGroup.Kind.Name(kind)[len("KIND_"):].lower())


def export_triton(model_path: str | os.PathLike, repository: str | os.PathLike, **options) -> TritonExport:
    """Add an ONNX model or TensorRT engine to a Triton model repository. Options: see TritonOptions."""
    return write_model(read_served_model(model_path), repository, TritonOptions(**options))
