"""ONNX Runtime backend: the CPU everywhere; CUDA and TensorRT execution providers with onnxruntime-gpu."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pspcore.runner import InputSpec, Runner
from pspcore.errors import BackendUnavailable, InputError
from pspcore.files import require_file
from pspcore.model_info import info_from_session

# Best first. `auto` takes every one of these the installed wheel offers; ONNX Runtime assigns each node to
# the first provider that can run it, so the CPU stays the fallback.
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
SHORT_NAMES = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
               "cpu": "CPUExecutionProvider"}


def best_providers() -> list[str]:
    """The preferred providers this onnxruntime build offers, best first (CPU always last)."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    return [p for p in PROVIDER_PREFERENCE if p in available or p == "CPUExecutionProvider"]


def resolve_providers(providers) -> list[str]:
    """None/'auto' -> best_providers(); else names or short names ('cuda', 'cpu'), checked to exist."""
    import onnxruntime as ort

    if providers in (None, "auto"):
        return best_providers()
    if isinstance(providers, str):
        providers = providers.split(",")
    names = [SHORT_NAMES.get(p.strip().lower(), p.strip()) for p in providers]
    missing = [n for n in names if n not in ort.get_available_providers()]
    if missing:
        raise BackendUnavailable(f"onnxruntime here has no {', '.join(missing)} (available: "
                                 f"{', '.join(ort.get_available_providers())}); onnxruntime-gpu adds CUDA/TensorRT")
    return names


def session_options(threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = int(threads)
    return options


def _provider_options(name: str, model_path: Path, device_id: int) -> dict:
    if name == "TensorrtExecutionProvider":
        # Building a TensorRT engine takes minutes; cache it beside the model for the next run.
        cache = model_path.parent / f".{model_path.stem}.trt-cache"
        return {"device_id": device_id, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}
    if name == "CUDAExecutionProvider":
        return {"device_id": device_id}
    return {}


def _dim(value) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


class OnnxRuntimeRunner(Runner):
    """Options: providers ('auto', 'cpu', 'cuda', 'tensorrt' or a list), threads (intra-op), device_id."""

    name = "onnxruntime"

    def __init__(self, model_path, *, providers=None, threads: int | None = None, device_id: int = 0):
        super().__init__(str(require_file(model_path, "model")))
        self.providers = resolve_providers(providers)
        self.threads = threads
        self.device_id = device_id
        self._session = None
        self.activate()  # the session holds the metadata and shapes every caller needs right away
        self.info = info_from_session(self._session, self.model_path)
        self.input_spec = self._read_input_spec()

    def activate(self) -> None:
        if self._session is None:
            self._session = self._load()
        super().activate()

    def deactivate(self) -> None:
        self._session = None
        super().deactivate()

    def _load(self):
        import onnxruntime as ort

        path = Path(self.model_path)
        chosen = [(p, _provider_options(p, path, self.device_id)) for p in self.providers]
        try:
            session = ort.InferenceSession(str(path), session_options(self.threads), providers=chosen)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise InputError(f"{path}: not a loadable ONNX model: {str(exc).strip().splitlines()[0]}") from None
        used = session.get_providers()
        dropped = [p for p in self.providers if p not in used]
        if dropped:  # e.g. CUDA listed by the wheel but no driver/GPU on this machine
            self.notes.append(f"onnxruntime could not use {', '.join(dropped)}; running on {', '.join(used)}")
        self.providers = used
        self._input_name = session.get_inputs()[0].name
        self._output_name = session.get_outputs()[0].name
        return session

    def _read_input_spec(self) -> InputSpec:
        shape = self._session.get_inputs()[0].shape
        if len(shape) != 4 or _dim(shape[1]) not in (None, 3):
            raise InputError(f"{self.model_path}: expected an image input [N, 3, H, W], found {shape}")
        h, w = _dim(shape[2]), _dim(shape[3])
        batch = _dim(shape[0])
        return InputSpec(size=(h, w) if h and w else None, min_batch=batch or 1, max_batch=batch,
                         fixed_batch=batch)

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run([self._output_name], {self._input_name: batch})[0]

    def describe(self) -> str:
        short = {v: k for k, v in SHORT_NAMES.items()}
        return f"{self.name}[{','.join(short.get(p, p) for p in self.providers)}] ({self.info.precision})"
