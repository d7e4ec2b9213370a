"""ONNX Runtime backend: the CPU everywhere; CUDA and TensorRT execution providers with onnxruntime-gpu."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pspcore import onnx_session
from pspcore.device import cuda_index
from pspcore.errors import BackendUnavailable, InputError, PSPError, first_line
from pspcore.files import require_file, suffix_of
from pspcore.model_info import ModelInfo, info_from_session
from pspcore.options import BackendOptions, option, threads_option
from pspcore.registry import CATCH_ALL
from pspcore.runner import InputSpec, Runner
from pspcore.triton_protocol import url_scheme

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


PROFILE_KEYS = ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")


def tensorrt_profile(input_name: str, shape, info: ModelInfo, max_batch: int) -> tuple[dict, list[str]]:
    """trt_profile_* options for a model with dynamic dimensions: without them the TensorRT provider builds
    an engine (minutes) on the first run and again for every new shape. Batch 1..max_batch, tuned (opt) for
    batch 1, what psp-infer sends by default; a dynamic H x W is built for the size the model records (a note
    says so). The runner accepts only what this covers (profile_input_spec). -> (options, notes)."""
    n, c, h, w = (_dim(d) for d in shape)
    if n and h and w:
        return {}, []
    notes = []
    if not (h and w):
        if info.input_size is None:
            return {}, ["the TensorRT provider builds this dynamic-shape model for each new input size it sees "
                        "(it records no input size to build one profile for)"]
        h, w = info.input_size
        notes.append(f"TensorRT provider profile built for the recorded input size {h}x{w} only")
    dims = [(n or 1, c or 3, h, w), (n or 1, c or 3, h, w), (n or max_batch, c or 3, h, w)]
    return {k: f"{input_name}:{'x'.join(map(str, d))}" for k, d in zip(PROFILE_KEYS, dims)}, notes


def _profile_shape(option: str) -> tuple[int, ...]:
    """'image:1x3x65x97' -> (1, 3, 65, 97)."""
    return tuple(int(d) for d in option.rpartition(":")[2].split("x"))


def profile_input_spec(spec: InputSpec, profile: dict) -> InputSpec:
    """`spec` narrowed to what the TensorRT provider's profile covers: batches min..max (the base runner splits
    larger ones) at the H x W it was built for, so another size is one InputError before the provider fails at
    setInputShape (or builds a new engine for minutes). No profile: `spec` as it is."""
    if not profile:
        return spec
    low, high = (_profile_shape(profile[key]) for key in (PROFILE_KEYS[0], PROFILE_KEYS[2]))
    one_size = low[2:] == high[2:]
    return replace(spec, size=tuple(low[2:]) if one_size else spec.size, min_batch=low[0], max_batch=high[0],
                   min_size=None if one_size else tuple(low[2:]), max_size=None if one_size else tuple(high[2:]))


# Which TensorRT builder flag a model's precision needs in ONNX Runtime's TensorRT provider. Decided from the
# shipped onnxruntime-gpu 1.31.1 wheel (its source could not be read here): libonnxruntime_providers_tensorrt.so
# links libnvinfer.so.10 and has no strongly typed path (no "strongly typed" string at all; its precision messages
# are "[TensorRT EP] FP16 mode is enabled" / "INT8 mode is enabled" behind trt_fp16_enable / trt_int8_enable, off by
# default). So it builds weakly typed TensorRT 10 networks, where FP16 or Q/DQ layers without the builder flag are
# refused ("fp16/Int8 precision has been set for a layer or layer output, but fp16/int8 is not configured in the
# builder": NVIDIA/TensorRT#3277 through this provider, microsoft/onnxruntime#13381). A Q/DQ model carries its
# scales; the provider sets dynamic ranges only from a calibration table, and none is given. psp-build-engine
# needs none of this: it builds strongly typed. (bf16 is left out: trt_bf16_enable is recent, an older
# onnxruntime-gpu refuses the unknown option, and the bf16 file is OpenVINO's.)
TENSORRT_PRECISION_FLAGS = {"fp16": "trt_fp16_enable", "int8": "trt_int8_enable"}


def tensorrt_precision_options(precision: str) -> dict:
    """The TensorRT provider's builder flag for a model of `precision` (ModelInfo.precision), else nothing."""
    flag = TENSORRT_PRECISION_FLAGS.get(precision.lower().split("-")[0])
    return {flag: True} if flag else {}


def provider_options(name: str, model_path: Path, device_id: int, profile: dict | None = None) -> dict:
    if name == "TensorrtExecutionProvider":
        # Building a TensorRT engine takes minutes; cache it (and the tactic timings) beside the model.
        cache = str(model_path.parent / f".{model_path.stem}.trt-cache")
        return {"device_id": device_id, "trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                "trt_timing_cache_enable": True, "trt_timing_cache_path": cache, **(profile or {})}
    if name == "CUDAExecutionProvider":
        return {"device_id": device_id}
    return {}


def _preload_gpu_libraries(ort) -> None:
    """Load the CUDA/cuDNN libraries of pip's nvidia-* wheels before a GPU session is created (onnxruntime-gpu
    1.21+); without it such installs fall back to the CPU for want of libcudnn."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception:  # nothing to preload (a system CUDA install): the session finds its libraries itself
            pass


def _dim(value) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


class SessionFromOnnx(onnx_session.SessionFromOnnx):
    """pspcore's session loader with the runtime's choice of providers: psp-infer's runner and export's checks
    alike. Providers by name or short name (None: the best the wheel offers), each given its options (device,
    the TensorRT provider's engine cache and profile). `notes` collects what the user should hear (providers
    dropped, a TensorRT profile assumed)."""

    def __init__(self, model_path, providers=None, threads: int | None = None, device_id: int = 0,
                 trt_max_batch: int = 8):
        self.model_path = Path(require_file(model_path, "model"))
        super().__init__(self.model_path, resolve_providers(providers), threads=threads)
        self.device_id, self.trt_max_batch = device_id, int(trt_max_batch)
        self.notes: list[str] = []
        self.profile: dict = {}  # the TensorRT provider's trt_profile_* options of the last session

    def __call__(self):
        import onnxruntime as ort

        profile, precision = {}, {}
        if "TensorrtExecutionProvider" in self.providers:
            profile, precision, notes = self._tensorrt_options()
            self.notes += notes
        if set(self.providers) - {onnx_session.CPU}:
            _preload_gpu_libraries(ort)
        self.profile = profile
        session = self.open([(p, provider_options(p, self.model_path, self.device_id, {**profile, **precision}))
                             for p in self.providers])
        used = session.get_providers()
        dropped = [p for p in self.providers if p not in used]
        if dropped:  # e.g. CUDA listed by the wheel but no driver/GPU on this machine: say so, once
            self.notes.append(f"onnxruntime could not use {', '.join(dropped)}; running on {', '.join(used)}")
        return session

    def _tensorrt_options(self) -> tuple[dict, dict, list[str]]:
        """The TensorRT provider's profile and precision flag, read off a metadata-only CPU session of the same
        file: (trt_profile_* options, trt_*_enable options, notes)."""
        try:
            peek = onnx_session.SessionFromOnnx(self.model_path, optimize=False)()
        except InputError:  # not a loadable model: the real session says so in one line
            return {}, {}, []
        first, info = peek.get_inputs()[0], info_from_session(peek, str(self.model_path))
        profile, notes = tensorrt_profile(first.name, first.shape, info, self.trt_max_batch)
        return profile, tensorrt_precision_options(info.precision), notes


@dataclass(frozen=True)
class OnnxRuntimeOptions(BackendOptions):
    """What the onnxruntime backend takes; they make its loader, a SessionFromOnnx."""

    providers: str | list | None = option(None, "'auto', 'cpu', 'cuda', 'tensorrt' or a list, best first (set "
                                                "by --device)")
    threads: int | None = threads_option()
    device_id: int = option(0, "the GPU of the CUDA and TensorRT providers (set by --device cuda:N)")
    trt_max_batch: int = option(8, "the largest batch the TensorRT provider's profile covers for a dynamic-batch "
                                   "model")

    @classmethod
    def from_device(cls, device: str) -> dict:
        """cpu: the CPU provider only; cuda[:N]: the CUDA provider on that GPU (CPU for what it cannot run);
        auto: every provider the installed wheel offers, best first."""
        if device == "auto":
            return {}
        if device == "cpu":
            return {"providers": "cpu"}
        return {"providers": "cuda,cpu", "device_id": cuda_index(device)}


class OnnxRuntimeRunner(Runner):
    """Runs an ONNX model in an ONNX Runtime session (options: OnnxRuntimeOptions), which its loader, a
    SessionFromOnnx, opens on activate()."""

    name = "onnxruntime"
    options_class = OnnxRuntimeOptions
    requires = ("onnxruntime",)

    def __init__(self, model_path, **options):
        super().__init__(str(model_path))
        o = self.options_class.parse(self.name, options)
        self.loader = SessionFromOnnx(model_path, o.providers, o.threads, o.device_id, o.trt_max_batch)
        self.providers = list(self.loader.providers)
        self._session = None

    @classmethod
    def auto_priority(cls, model_path: str) -> int | None:
        if url_scheme(model_path) is not None:
            return None
        # Another file (no backend claims it): the session says in one line why it cannot read it.
        return 10 if suffix_of(model_path) == ".onnx" else CATCH_ALL

    @property
    def threads(self) -> int | None:
        return self.loader.threads

    def load(self) -> None:
        self._session = self.loader()
        self.notes += [n for n in self.loader.notes if n not in self.notes]
        self.providers = self._session.get_providers()
        self._input_name = self._session.get_inputs()[0].name
        self._output_name = self._session.get_outputs()[0].name
        self.info = info_from_session(self._session, self.model_path)
        self.input_spec = self._read_input_spec()

    def release(self) -> None:
        self._session = None

    @property
    def session(self):
        """The open ONNX Runtime session (activate first)."""
        if self._session is None:
            raise PSPError(f"{self.display_name}: the runner is not active (use `with runner:`)")
        return self._session

    def _read_input_spec(self) -> InputSpec:
        shape = self._session.get_inputs()[0].shape
        if len(shape) != 4 or _dim(shape[1]) not in (None, 3):
            raise InputError(f"{self.model_path}: expected an image input [N, 3, H, W], found {shape}")
        h, w = _dim(shape[2]), _dim(shape[3])
        batch = _dim(shape[0])
        spec = InputSpec(size=(h, w) if h and w else None, min_batch=batch or 1, max_batch=batch, fixed_batch=batch)
        if "TensorrtExecutionProvider" in self.providers:  # as the session kept it: not dropped for want of a GPU
            spec = profile_input_spec(spec, self.loader.profile)
        return spec

    @property
    def processor(self) -> str:
        # The session's first provider takes the nodes it supports (the heavy ones); the CPU only its leftovers.
        return "cpu" if not self.providers or self.providers[0] == "CPUExecutionProvider" else "gpu"

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self._session.run([self._output_name], {self._input_name: batch})[0]
        except Exception as exc:  # onnxruntime's own RuntimeException / Fail types
            raise PSPError(f"{self.display_name}: ONNX Runtime failed on a batch of shape {list(batch.shape)}: "
                           f"{first_line(exc)}") from None

    def describe(self) -> str:
        short = {v: k for k, v in SHORT_NAMES.items()}
        return f"{self.name}[{','.join(short.get(p, p) for p in self.providers)}] ({self.info.precision})"
