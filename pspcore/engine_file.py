"""The TensorRT engine file format: `<engine>` beside its JSON sidecar `<engine>.json`, which records the GPU and
TensorRT release that built it, the optimisation profiles, hashes and the model's ModelInfo. An engine only runs
where it was built, so reading one checks this machine against the sidecar first."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pspcore.errors import InputError, first_line, notice_once
from pspcore.files import atomic_output, require_file
from pspcore.model_info import ModelInfo, default_info
from pspcore.nvidia import cuda_check, import_cudart, import_tensorrt

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
SIDECAR_FORMAT = 1


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """`model.engine` -> `model.engine.json`."""
    return Path(str(engine_path) + ".json")

@dataclass(frozen=True)
class Platform:
    """What an engine is tied to: the TensorRT version and the GPU model that built it."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.9"


def current_platform(device: int = 0) -> Platform:
    """This machine's TensorRT version and the GPU `device` (name and compute capability, via cuda-python)."""
    trt = import_tensorrt()
    cudart = import_cudart()
    props = cuda_check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.split(b"\0")[0].decode() if isinstance(props.name, bytes) else str(props.name)
    return Platform(trt.__version__, name.strip(), f"{props.major}.{props.minor}")


def _release(version: str) -> str:
    # Engines are portable across TensorRT builds of one release (major.minor.patch), not across releases.
    return ".".join(version.split(".")[:3])


@dataclass
class EngineSidecar:
    """`<engine>.json`: how and where an engine was built, and the ModelInfo of the model inside it.
    `profiles` maps input name -> {"min": shape, "opt": shape, "max": shape}."""

    platform: Platform
    precision: str
    profiles: dict[str, dict[str, list[int]]]
    onnx_sha256: str
    engine_sha256: str
    info: ModelInfo
    created: str = ""
    build: dict = field(default_factory=dict)  # workspace, timing cache, conversion notes
    format: int = SIDECAR_FORMAT
    # The network's own I/O: {"inputs": [...], "outputs": [...]}, each {"name", "dtype" (TensorRT's DataType
    # name), "shape" (-1 = set at run time)}. Empty in sidecars written before it was recorded.
    tensors: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("platform")
        return {"format": self.format, **asdict(self.platform), **{k: v for k, v in data.items() if k != "format"},
                "info": self.info.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> "EngineSidecar":
        platform = Platform(str(data["tensorrt_version"]), str(data["gpu_name"]), str(data["compute_capability"]))
        return cls(platform=platform, precision=str(data["precision"]), profiles=dict(data["profiles"]),
                   onnx_sha256=str(data.get("onnx_sha256", "")), engine_sha256=str(data.get("engine_sha256", "")),
                   info=ModelInfo.from_dict(data["info"]), created=str(data.get("created", "")),
                   build=dict(data.get("build", {})), format=int(data.get("format", SIDECAR_FORMAT)),
                   tensors=dict(data.get("tensors", {})))


def write_sidecar(path: str | os.PathLike, sidecar: EngineSidecar) -> Path:
    """Write the sidecar JSON to `path` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(sidecar.to_dict(), indent=2) + "\n")
    return Path(path)


def read_sidecar(engine_path: str | os.PathLike) -> EngineSidecar:
    """The sidecar of an engine, or an InputError saying it is missing or malformed."""
    path = sidecar_path(engine_path)
    if not path.exists():
        raise InputError(f"{engine_path}: no sidecar {path.name} beside the engine; build engines with "
                         "psp-build-engine, which records the GPU, TensorRT version and model metadata there")
    try:
        return EngineSidecar.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a valid engine sidecar ({first_line(exc, with_type=True)})") from None


def check_compatible(built: Platform, running: Platform, engine_name: str = "engine") -> None:
    """Refuse (InputError) an engine built with another TensorRT release or for another GPU model."""
    problems = []
    if _release(built.tensorrt_version) != _release(running.tensorrt_version):
        problems.append(f"TensorRT {built.tensorrt_version}, this machine has {running.tensorrt_version}")
    if built.compute_capability != running.compute_capability or built.gpu_name != running.gpu_name:
        problems.append(f"GPU {built.gpu_name} (sm {built.compute_capability}), this machine has "
                        f"{running.gpu_name} (sm {running.compute_capability})")
    if problems:
        raise InputError(f"{engine_name} was built for {'; and for '.join(problems)}. TensorRT engines only run "
                         "where they were built: rebuild it here with psp-build-engine from the ONNX model")



def read_engine_info(path: str | os.PathLike) -> ModelInfo:
    """ModelInfo from an engine's sidecar; defaults and a notice when there is none."""
    p = require_file(path, "engine")
    if not sidecar_path(p).exists():
        notice_once(str(p), f"{p.name} has no sidecar {sidecar_path(p).name}; assuming generic classes, palette "
                    "and ImageNet mean/std")
        return default_info()
    return read_sidecar(p).info
