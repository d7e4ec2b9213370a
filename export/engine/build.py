"""TensorRT engines from ONNX models: a strongly typed build (the precision is the ONNX model's own, made by
export.precision.graph when asked for FP16/INT8), optimisation profiles, a timing cache, and the engine written
atomically beside its JSON sidecar (GPU, TensorRT version, profiles, hashes, ModelInfo)."""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from export.precision.calibration import DEFAULT_NUM_IMAGES
from pspcore.cli import parse_size
from pspcore.errors import InputError, PSPError
from pspcore.files import atomic_output, check_writable, file_sha256, require_file
from pspcore.engine_file import EngineSidecar, current_platform, sidecar_path, write_sidecar
from pspcore.model_info import EXTRA_INT8_TARGET, ModelInfo, read_onnx_info
from pspcore.geometry import resolve_input_size
from pspcore.runner import InputSpec
from pspcore.nvidia import collecting_logger, import_tensorrt, select_device
from pspcore.precisions import ENGINE_PRECISIONS, converted

DEFAULT_WORKSPACE_GIB = 4.0

Shape = tuple[int, ...]


class EngineBuildError(PSPError):
    """TensorRT could not parse or build the model; the message carries TensorRT's own log."""


@dataclass(frozen=True)
class Profile:
    """min/opt/max batch and (H, W) for the image input's optimisation profile."""

    batch: tuple[int, int, int] = (1, 1, 1)
    sizes: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None = None  # None: the model's own

    def shapes(self, channels: int = 3) -> tuple[Shape, Shape, Shape]:
        if self.sizes is None:
            raise InputError("the input size is not known: pass --size")
        return tuple((b, channels, *hw) for b, hw in zip(self.batch, self.sizes))


@dataclass
class EngineResult:
    engine_path: Path
    sidecar_path: Path
    precision: str
    profiles: dict[str, dict[str, list[int]]]
    seconds: float
    sidecar: EngineSidecar
    warnings: list[str] = field(default_factory=list)  # TensorRT's build warnings
    notes: list[str] = field(default_factory=list)  # conversions and defaults this build took


def _ordered(values: tuple, what: str) -> tuple:
    if not all(a <= b for a, b in zip(values, values[1:])):
        raise InputError(f"{what} must be ordered MIN <= OPT <= MAX, got {values}")
    return values


def parse_batch(text: str | int | tuple) -> tuple[int, int, int]:
    """'4' -> (4, 4, 4); '1:4:8' -> (1, 4, 8) (MIN:OPT:MAX)."""
    if isinstance(text, tuple):
        parts = list(text)
    else:
        parts = str(text).split(":")
    if len(parts) not in (1, 3) or not all(str(p).strip().isdigit() and int(p) > 0 for p in parts):
        raise InputError(f"batch must be N or MIN:OPT:MAX with positive integers, got {text!r}")
    values = tuple(int(p) for p in parts) * (3 if len(parts) == 1 else 1)
    return _ordered(values, "batch")


def parse_size_profile(text: str | tuple | None):
    """None; '473' or '512x1024' -> one size for min/opt/max; 'HxW:HxW:HxW' -> MIN:OPT:MAX sizes."""
    if text is None:
        return None
    if isinstance(text, tuple):
        return text if isinstance(text[0], tuple) else (text, text, text)
    parts = str(text).split(":")
    if len(parts) not in (1, 3):
        raise InputError(f"size must be HxW or MIN:OPT:MAX sizes (e.g. 257x257:513x513:1025x1025), got {text!r}")
    try:
        sizes = tuple(parse_size(p) for p in parts)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    sizes = sizes * (3 if len(sizes) == 1 else 1)
    _ordered(tuple(h for h, _ in sizes), "heights")
    _ordered(tuple(w for _, w in sizes), "widths")
    return sizes


def input_profile(dims: Shape, profile: Profile, info: ModelInfo) -> tuple[tuple[Shape, Shape, Shape], list[str]]:
    """min/opt/max shapes for an input with ONNX dims (-1 = dynamic), checked against what the model allows."""
    notes = []
    if len(dims) != 4:
        raise InputError(f"expected an image input [N, 3, H, W], the model has {list(dims)}")
    if dims[0] > 0 and profile.batch != (dims[0],) * 3:
        raise InputError(f"the model was exported for batch {dims[0]} only; --batch {':'.join(map(str, profile.batch))} "
                         f"needs a dynamic-batch export")
    fixed = InputSpec(size=(dims[2], dims[3]) if dims[2] > 0 and dims[3] > 0 else None)
    if profile.sizes is None:
        sizes = (resolve_input_size(fixed, info, None),) * 3
        if not fixed.size:
            notes.append(f"dynamic-shape model built for its recorded input size {sizes[0][0]}x{sizes[0][1]} "
                         "only (--size MIN:OPT:MAX widens it)")
    else:  # each of min/opt/max is a requested size under the same rule
        sizes = tuple(resolve_input_size(fixed, info, size) for size in profile.sizes)
    return Profile(profile.batch, sizes).shapes(dims[1] if dims[1] > 0 else 3), notes


def _network_flags(trt) -> int:
    # TensorRT 11 networks are strongly typed by default (the flag's weakly typed alternative is gone);
    # TensorRT 10 needs the flag so the ONNX model's own FP16 casts / Q/DQ nodes decide the precision.
    if int(trt.__version__.split(".")[0]) >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def _use_timing_cache(config, path: Path | None, notes: list[str]) -> None:
    data = path.read_bytes() if path is not None and path.exists() else b""
    try:
        cache = config.create_timing_cache(data)
    except Exception:  # a truncated or foreign file: TensorRT raises its own error types
        cache = None
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        notes.append(f"timing cache {path} is unreadable or from another GPU/TensorRT version; starting a fresh one")
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def timing_cache_lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive advisory lock (flock) on `<path>.lock` while the block runs. The lock file stays: removing
    it would let a waiting process lock a file no newcomer sees."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks; the atomic write still leaves a whole file
        yield
        return
    with open(timing_cache_lock_path(path), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _save_timing_cache(config, path: Path) -> None:
    """Merge this build's timings with the file's current ones and replace it atomically, under a lock: builds
    sharing a cache (a CI matrix, one script per precision) would otherwise each write their own snapshot and
    the last one would drop the others' timings. Polygraphy saves its timing cache the same way.
    ITimingCache.combine with ignore_mismatch False merges all or nothing: a file written on another GPU or by
    another TensorRT version is not merged at all (it returns False, NvInfer.h), and the file then holds this
    build's timings only."""
    cache = config.get_timing_cache()
    with _locked(path):
        if path.exists():
            try:
                cache.combine(config.create_timing_cache(path.read_bytes()), False)
            except Exception:  # unreadable (noted when the build read it): this build's timings replace it
                pass
        with atomic_output(path) as tmp:
            tmp.write_bytes(bytes(cache.serialize()))


def _parse(trt, builder, logger, onnx_file: Path):
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_file)):
        errors = "\n".join(f"  {parser.get_error(i)}" for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {onnx_file.name}:\n{errors}\n{logger.text()}")
    return network, parser  # the parser owns weights the network refers to: keep it alive through the build


def network_tensors(network) -> dict:
    """The parsed network's inputs and outputs as the sidecar records them (names, TensorRT types, shapes), so
    tools that cannot load the engine (psp-export triton) describe it by its real tensors."""
    def describe(tensor) -> dict:
        return {"name": tensor.name, "dtype": getattr(tensor.dtype, "name", str(tensor.dtype)),
                "shape": [int(d) for d in tensor.shape]}

    return {"inputs": [describe(network.get_input(i)) for i in range(network.num_inputs)],
            "outputs": [describe(network.get_output(i)) for i in range(network.num_outputs)]}


def build_serialized(trt, onnx_file: Path, profile: Profile, info: ModelInfo, *, workspace_gib: float,
                     timing_cache: Path | None, verbose: bool = False, device: int = 0):
    """Parse and build on GPU `device`; (serialized engine bytes, profiles by input name, notes, logger,
    the network's tensors). Raises EngineBuildError with TensorRT's log when parsing or building fails."""
    select_device(device)  # TensorRT builds for the current device, as trtexec does after choosing it
    logger = collecting_logger(trt, trt.ILogger.Severity.VERBOSE if verbose else None)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, logger, onnx_file)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default; FP32 layers must stay FP32 for parity
    notes: list[str] = []
    optimisation = builder.create_optimization_profile()
    profiles = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        (lo, mid, hi), more = input_profile(tuple(tensor.shape), profile, info)
        optimisation.set_shape(tensor.name, lo, mid, hi)
        profiles[tensor.name] = {"min": list(lo), "opt": list(mid), "max": list(hi)}
        notes += more
    config.add_optimization_profile(optimisation)
    if timing_cache is not None:
        _use_timing_cache(config, timing_cache, notes)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT could not build an engine from {onnx_file.name}:\n{logger.text()}")
    if timing_cache is not None:
        _save_timing_cache(config, timing_cache)
    return bytes(serialized), profiles, notes, logger, network_tensors(network)


def prepare_onnx(src: Path, precision: str | None, info: ModelInfo, workdir: Path, *, calib_images=(),
                 calib_method: str = "entropy", num_images: int | None = DEFAULT_NUM_IMAGES
                 ) -> tuple[Path, ModelInfo, list[str]]:
    """The ONNX model to build: `src` itself when it already has the requested precision, else its FP16 or
    INT8 (TensorRT Q/DQ) conversion written into `workdir`."""
    have = info.precision
    if have == "int8" and info.extra.get(EXTRA_INT8_TARGET) == "onnxruntime":
        raise InputError(f"{src.name} was quantized for ONNX Runtime (asymmetric U8 activations), which TensorRT "
                         "cannot build; make a TensorRT INT8 model with `psp-export int8 --target tensorrt` or "
                         "pass the FP32 model with --int8")
    wanted = precision or have
    if wanted == have:
        return src, info, []
    if wanted not in ENGINE_PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(ENGINE_PRECISIONS)}, got {wanted!r}")
    if converted(have):
        raise InputError(f"{src.name} is already an {have} model; build it without --fp16/--int8, or pass its "
                         f"FP32 model to convert to {wanted}")
    from export.precision.target import engine_target
    from export.precision.verified import Conversion, convert_verified  # needs modelopt: only when converting

    target = engine_target(precision)  # the conversion made for TensorRT
    dst = workdir / f"{src.stem}.{precision}{target.suffix}"
    if target.calibrated and not calib_images:
        raise InputError(f"--{precision} needs calibration images: --calib-images DIR or --calib-list FILE")
    # The same verified conversion as psp-export fp16/int8: gated on held-out images, repaired if needed; the
    # strongly typed build then keeps the precision the model carries (FP32 nodes included).
    options = Conversion(precision, target=target.name, method=calib_method, num_images=num_images)
    report = convert_verified(src, dst, options, list(calib_images))
    kept = f", {len(report.kept_fp32)} node(s) kept FP32 by repair" if report.kept_fp32 else ""
    note = (f"converted {src.name} to {precision} before building (verified: agreement "
            f"{100 * report.after['agreement']:.2f}% on {report.verification_images} images{kept})")
    return dst, read_onnx_info(dst), [note]


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, *, precision: str | None = None,
                 batch: str | tuple = (1, 1, 1), size=None, workspace_gib: float = DEFAULT_WORKSPACE_GIB,
                 timing_cache: str | os.PathLike | None = None, calib_images=(), calib_method: str = "entropy",
                 num_images: int | None = DEFAULT_NUM_IMAGES, device: int = 0, verbose: bool = False) -> EngineResult:
    """Build a TensorRT engine for the GPU `device` from an ONNX model and write it with its sidecar.
    precision None builds the model as it is; 'fp16'/'int8' convert an FP32 model first (INT8 needs
    calib_images). batch 'N' or 'MIN:OPT:MAX'; size 'HxW' or 'HxW:HxW:HxW' for dynamic-shape models."""
    start = time.perf_counter()
    src = require_file(onnx_path, "ONNX model")
    check_writable(engine_path)  # before the conversion and the build, which take minutes
    if timing_cache:
        check_writable(timing_cache)
    if workspace_gib <= 0:
        raise InputError(f"workspace must be positive (GiB), got {workspace_gib}")
    profile = Profile(parse_batch(batch), parse_size_profile(size))
    trt = import_tensorrt()  # before a long conversion: fail fast on a machine without TensorRT
    platform = current_platform(device)
    info = read_onnx_info(src)
    cache = Path(timing_cache) if timing_cache else None
    with tempfile.TemporaryDirectory(prefix="psp-engine-") as work:
        model, info, notes = prepare_onnx(src, precision, info, Path(work), calib_images=calib_images,
                                          calib_method=calib_method, num_images=num_images)
        serialized, profiles, more, logger, tensors = build_serialized(trt, model, profile, info, workspace_gib=workspace_gib,
                                                              timing_cache=cache, verbose=verbose, device=device)
        build = {"workspace_gib": workspace_gib, "timing_cache": str(cache) if cache else None,
                 "built_from": str(src), "built_onnx_sha256": file_sha256(model), "notes": notes + more}
    sidecar = EngineSidecar(platform=platform, precision=info.precision, profiles=profiles,
                            onnx_sha256=file_sha256(src), engine_sha256=hashlib.sha256(serialized).hexdigest(),
                            info=info, created=datetime.now(timezone.utc).isoformat(timespec="seconds"), build=build,
                            tensors=tensors)
    engine_path = Path(engine_path)
    with atomic_output(engine_path) as tmp:
        tmp.write_bytes(serialized)
        write_sidecar(sidecar_path(engine_path), sidecar)
    warnings = [msg for severity, msg in logger.messages if severity in ("WARNING", "ERROR", "INTERNAL_ERROR")]
    return EngineResult(engine_path, sidecar_path(engine_path), info.precision, profiles,
                        time.perf_counter() - start, sidecar, warnings, notes + more)
