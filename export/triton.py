"""A Triton Inference Server model repository for an exported model: config.pbtxt built from Triton's own
protobuf schema (tritonclient's model_config_pb2), the model in version folder 1, class names as labels."""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pspcore.errors import BackendUnavailable, InputError
from pspcore.files import require_file
from pspcore.model_info import INPUT_NAME, ModelInfo
from pspnet.labels import label_set_for
from pspcore.engine_file import ENGINE_SUFFIXES, read_sidecar
from pspcore.model_info import fallback_info

PLATFORMS = {"onnx": "onnxruntime_onnx", "plan": "tensorrt_plan"}
LABELS_FILE = "labels.txt"
VERSION = "1"


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
    max_batch: int | None = None  # the most a TensorRT optimisation profile accepts, when known
    extra_files: tuple[Path, ...] = ()  # ONNX external data, copied beside the model


@dataclass(frozen=True)
class TritonOptions:
    """How Triton should serve the model. `max_batch` None: 8 for a batch-dynamic model, 0 for a fixed one."""

    name: str = "pspnet"
    max_batch: int | None = None
    preferred_batch: tuple[int, ...] | None = None  # None: half the max batch and the max batch
    queue_delay_us: int = 100
    instances: int = 1
    kind: str = "gpu"  # "gpu" | "cpu"
    force: bool = False


@dataclass
class TritonExport:
    model_dir: Path
    config_path: Path
    platform: str
    max_batch_size: int
    config_text: str
    notes: list[str] = field(default_factory=list)


def model_config_pb2():
    """Triton's model configuration schema as shipped with tritonclient (the `triton` extra)."""
    try:
        from tritonclient.grpc import model_config_pb2 as pb2
    except ImportError as exc:
        raise BackendUnavailable(f"tritonclient is not installed ({exc.name}); "
                                 "pip install 'pspnet-deploy[triton]'") from None
    return pb2


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
        raise InputError(f"{p}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    weights = {t.name for t in model.graph.initializer}
    inputs = tuple(_onnx_tensor(v) for v in model.graph.input if v.name not in weights)
    outputs = tuple(_onnx_tensor(v) for v in model.graph.output)
    if not inputs or not outputs:
        raise InputError(f"{p}: the graph has no inputs or no outputs")
    info = ModelInfo.from_props({m.key: m.value for m in model.metadata_props})
    if info is None:
        info = fallback_info(str(p), inputs[0].shape, outputs[0].name, outputs[0].shape)
    return ServedModel(p, "onnx", info, inputs, outputs, extra_files=_external_data(model, p.parent))


def _engine_tensors(info: ModelInfo, low: list[int], high: list[int]) -> tuple[TensorSpec, TensorSpec]:
    """An engine's I/O as our exporter names them, with the dimensions its build profile leaves open as -1
    (TensorRT is not needed to read them back: the sidecar has the profile and the ModelInfo)."""
    n, h, w = (lo if lo == hi else -1 for lo, hi in zip((low[0], *low[2:]), (high[0], *high[2:])))
    image = TensorSpec(INPUT_NAME, "FP32", (n, 3, h, w))
    if info.output == "labels":
        return image, TensorSpec("labels", "UINT8" if 0 < info.num_classes <= 256 else "INT32", (n, h, w))
    return image, TensorSpec("logits", "FP32", (n, info.num_classes or -1, h, w))


def read_engine_model(path: str | os.PathLike) -> ServedModel:
    """A TensorRT engine and its `<engine>.json` sidecar (ModelInfo under "info", the build profile)."""
    p = require_file(path, "engine")
    sidecar = read_sidecar(p)
    profile = sidecar.profiles.get(INPUT_NAME)
    if profile:
        low, high = list(profile["min"]), list(profile["max"])
    else:  # an engine built without a profile: its shape is what the model was exported at
        h, w = sidecar.info.input_size or (-1, -1)
        low = high = [1, 3, h, w]
    if low[0] != high[0] and low[0] > 1:
        raise InputError(f"{p.name}: its profile's smallest batch is {low[0]}, but Triton's batcher may send "
                         "a single image; build the engine with a minimum batch of 1")
    image, output = _engine_tensors(sidecar.info, low, high)
    max_batch = high[0] if low[0] != high[0] else None
    return ServedModel(p, "plan", sidecar.info, (image,), (output,), max_batch=max_batch)


def read_served_model(path: str | os.PathLike) -> ServedModel:
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return read_onnx_model(path)
    if suffix in ENGINE_SUFFIXES:
        return read_engine_model(path)
    raise InputError(f"{path}: Triton export takes an .onnx model or a TensorRT engine "
                     f"({', '.join(ENGINE_SUFFIXES)})")


def _batching(model: ServedModel, options: TritonOptions) -> tuple[int, tuple[int, ...]]:
    """(max_batch_size, preferred batch sizes), checked against what the model accepts."""
    batch_dims = {t.shape[0] if t.shape else None for t in (*model.inputs, *model.outputs)}
    batchable = batch_dims == {-1}
    max_batch = options.max_batch
    if max_batch is None:
        max_batch = min(8, model.max_batch or 8) if batchable else 0
    if max_batch < 0:
        raise InputError(f"--max-batch must be >= 0, got {max_batch}")
    if max_batch > 0 and not batchable:
        raise InputError(f"{model.path.name} has a fixed batch size; serve it with --max-batch 0 or export "
                         "it with a dynamic batch")
    if model.max_batch and max_batch > model.max_batch:
        raise InputError(f"--max-batch {max_batch} exceeds the engine's profile maximum {model.max_batch}")
    preferred = options.preferred_batch
    if preferred is None:
        preferred = tuple(sorted({max_batch // 2, max_batch} - {0}))
    bad = [b for b in preferred if not 0 < b <= max_batch]
    if bad:
        raise InputError(f"preferred batch sizes must lie in 1..{max_batch} (the max batch), got "
                         f"{', '.join(map(str, bad))}")
    return max_batch, tuple(sorted(set(preferred)))


def _tensor_message(message, spec: TensorSpec, batched: bool) -> None:
    message.name = spec.name
    # The wire protocol says BYTES where the config schema says STRING; every other name is shared.
    name = "STRING" if spec.data_type == "BYTES" else spec.data_type
    message.data_type = model_config_pb2().DataType.Value(f"TYPE_{name}")
    message.dims.extend(spec.shape[1:] if batched else spec.shape)


def build_config(model: ServedModel, options: TritonOptions):
    """The model's Triton configuration as a model_config_pb2.ModelConfig message."""
    pb2 = model_config_pb2()
    if options.kind not in ("gpu", "cpu"):
        raise InputError(f"--kind must be gpu or cpu, got {options.kind!r}")
    if model.kind == "plan" and options.kind == "cpu":
        raise InputError("a TensorRT engine runs on a GPU only; use --kind gpu")
    if options.instances < 1:
        raise InputError(f"--instances must be >= 1, got {options.instances}")
    max_batch, preferred = _batching(model, options)
    config = pb2.ModelConfig(name=options.name, platform=PLATFORMS[model.kind], max_batch_size=max_batch)
    for spec in model.inputs:
        _tensor_message(config.input.add(), spec, max_batch > 0)
    for spec in model.outputs:
        _tensor_message(config.output.add(), spec, max_batch > 0)
    # Triton's classification extension reads class names from here; our client reads the parameters.
    config.output[0].label_filename = LABELS_FILE
    if max_batch > 0:
        config.dynamic_batching.preferred_batch_size.extend(preferred)
        config.dynamic_batching.max_queue_delay_microseconds = options.queue_delay_us
    kind = pb2.ModelInstanceGroup.Kind.Value(f"KIND_{options.kind.upper()}")
    config.instance_group.add(count=options.instances, kind=kind)
    for key, value in model.info.to_props().items():
        config.parameters[key].string_value = value
    return config


def config_text(config) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def class_names(info: ModelInfo) -> tuple[str, ...]:
    return info.class_names or label_set_for(info.num_classes, info.dataset).class_names


def _fill_model_dir(model_dir: Path, model: ServedModel, config) -> None:
    version_dir = model_dir / VERSION
    version_dir.mkdir(parents=True)
    shutil.copyfile(model.path, version_dir / f"model.{model.kind}")
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


def _move_into_place(built: Path, final: Path, staging: Path) -> None:
    """Rename the finished folder to `final`; an existing one (force) is swapped into `staging` first."""
    if final.exists():
        os.rename(final, staging / "replaced")
    os.rename(built, final)


def write_model(model: ServedModel, repository: str | os.PathLike, options: TritonOptions) -> TritonExport:
    """Write `repository/<name>/` (config.pbtxt, labels.txt, 1/model.onnx|plan) atomically."""
    if not options.name or "/" in options.name or options.name.startswith("."):
        raise InputError(f"invalid model name {options.name!r}: use a plain folder name")
    config = build_config(model, options)
    final = Path(repository) / options.name
    if final.exists() and not options.force:
        raise InputError(f"{final} already exists; pass --force to replace it")
    staging = _staging_dir(Path(repository), options.name)
    try:
        _fill_model_dir(staging / options.name, model, config)
        _move_into_place(staging / options.name, final, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    notes = [] if config.max_batch_size else ["the model has a fixed batch: Triton serves it without batching"]
    return TritonExport(final, final / "config.pbtxt", config.platform, config.max_batch_size,
                        config_text(config), notes)


def export_triton(model_path: str | os.PathLike, repository: str | os.PathLike, **options) -> TritonExport:
    """Add an ONNX model or TensorRT engine to a Triton model repository. Options: see TritonOptions."""
    return write_model(read_served_model(model_path), repository, TritonOptions(**options))
