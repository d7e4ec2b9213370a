"""A precision target: one way of making, writing and judging a reduced-precision model (FP16, BF16 for OpenVINO,
INT8 for a runtime). Each target is a class in its own module under export.precision.targets, registered there
with @register_target; the verified conversion and its repair ask the target and never name one. Lookups load
that package (its import list) first, so a target is found wherever it is asked for."""
from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np

from export.precision.graph import ONNX_SUFFIX, check_output_suffix, save_with_info
from pspcore.errors import InputError
from pspcore.model_info import ModelInfo

TARGET_PACKAGE = "export.precision.targets"  # its __init__ imports every target module, which registers itself
_TARGETS: dict[tuple[str, str | None], type["PrecisionTarget"]] = {}


class PrecisionTarget(ABC):
    """One target. Its class attributes are what it declares about itself; an instance is one conversion to it
    (the calibration method chosen, and what the target learns on the way: what the runtime compiled the written
    file in, the nodes it was told to keep). Subclasses implement `convert` and override what differs."""

    precision: ClassVar[str]  # what the written model's metadata records (ModelInfo.precision)
    name: ClassVar[str | None] = None  # among the targets of one precision (psp-export int8 --target); the report's
    help: ClassVar[str] = ""  # one line for --help
    default_gate: ClassVar[float]  # strict argmax agreement with FP32 that --min-agreement defaults to
    methods: ClassVar[tuple[str, ...]] = ()  # calibration methods, the default first (repair tries the others)
    # Calibrated on images: verification holds out every 4th calibration image, and repair may equalize and
    # change the method before it keeps nodes in higher precision.
    calibrated: ClassVar[bool] = False
    suffix: ClassVar[str] = ONNX_SUFFIX  # of the file written
    backend: ClassVar[str] = "onnxruntime"  # the runtime backend that judges candidates and the written file
    # Its converter puts a node's Q/DQ at the producer of the node's input, so keeping a node in higher precision
    # takes that producer too.
    fallback_takes_producer: ClassVar[bool] = False
    runs_here: ClassVar[bool] = False  # fast on this machine's CPU: the report measures latency
    builds_engine: ClassVar[bool] = False  # TensorRT builds its file as it is (psp-build-engine --fp16/--int8)
    latency_where: ClassVar[str] = "ONNX Runtime"  # where the report's latency was measured
    ranking_note: ClassVar[str] = ""  # how the report's per-layer ranking relates to the target's arithmetic
    advice: ClassVar[str] = ""  # added to repair's failure: what else to try

    def __init__(self, method: str | None = None):
        if method is not None and self.methods and method not in self.methods:
            raise InputError(f"calibration method for {self.name} must be one of {', '.join(self.methods)}, "
                             f"got {method!r}")
        self.method = (method or self.methods[0]) if self.methods else None
        self.runtime_precision: str | None = None  # what the runtime compiled the written file in, when it says
        self.kept_by_runtime: list[str] = []  # nodes the written file tells its runtime to keep in higher precision

    @property
    def label(self) -> str:
        """The target in messages: "INT8 model"."""
        return f"{self.precision.upper()} model"

    def check_output(self, dst: str | os.PathLike) -> None:
        """Refuse an output name this target does not write (before any model is opened)."""
        writer = f"the {self.name} target" if self.name else f"the {self.precision} conversion"
        check_output_suffix(dst, self.suffix, writer)

    def check_available(self) -> None:
        """Fail in one line when a runtime this target needs is missing, before any model is opened."""

    def begin(self) -> list[str]:
        """Warnings about this machine, said once when the conversion starts (and kept in the report)."""
        return []

    @abstractmethod
    def convert(self, source: Path, source_model, exclude: tuple[str, ...], calib: np.ndarray, method: str | None):
        """The converted onnx.ModelProto of the FP32 file `source` (`source_model`: the original FP32 model,
        loaded once, or None when `source` is another file); `exclude`: node names (exact) kept in higher
        precision (repair's fallback); `calib`: the calibration batch (the check images without calibration)."""

    def candidate(self, source: Path, source_model, exclude: tuple[str, ...], calib: np.ndarray,
                  method: str | None, info: ModelInfo, stem: Path) -> tuple[object, Path]:
        """(model, file) of one repair candidate: the converted model in memory (for the layer ranking) and the
        file the judging backend runs, written at `stem` + a suffix with the source's `info`."""
        model = self.convert(source, source_model, exclude, calib, method)
        # the source's info (AutoCast drops metadata): the runner reads the model's size and classes from it
        return model, save_with_info(model, info, stem.with_suffix(ONNX_SUFFIX))

    def write(self, model, source_model, exclude: list[str], info: ModelInfo, dst: str | os.PathLike) -> Path:
        """Write the chosen candidate's `model` (made keeping `exclude`) at `dst` with `info`."""
        return save_with_info(model, info, dst)

    def files(self, path: str | os.PathLike) -> list[Path]:
        """Every file a model written at `path` consists of."""
        return [Path(path)]

    def remove(self, path: str | os.PathLike) -> None:
        for file in self.files(path):
            file.unlink(missing_ok=True)

    def describe(self, extra: dict, method: str | None, calib: np.ndarray) -> dict:
        """The written model's ModelInfo.extra: `extra` (the source's) and what this target records about its
        making (the verified conversion adds what repair did)."""
        return dict(extra)

    def read_back(self, runner, dst: Path, source_model, exclude: list[str]) -> None:
        """What the written file's open `runner` says about how it runs it (runtime_precision, kept_by_runtime)."""


def register_target(cls: type[PrecisionTarget]) -> type[PrecisionTarget]:
    """Class decorator: `cls` becomes findable by its precision and name, once its declaration holds together
    (a ValueError names what does not)."""
    key = (cls.precision, cls.name)
    if _TARGETS.get(key, cls) is not cls:
        raise ValueError(f"precision target {key} is registered twice ({_TARGETS[key].__name__}, {cls.__name__})")
    problems = declaration_problems(cls)
    if problems:
        raise ValueError(f"precision target {cls.__name__}: {'; '.join(problems)}")
    _TARGETS[key] = cls
    return cls


def declaration_problems(cls: type[PrecisionTarget]) -> list[str]:
    """What in `cls`'s declaration cannot work: what register_target refuses."""
    problems = []
    if not getattr(cls, "precision", ""):
        problems.append("no precision")
    if not 0 < getattr(cls, "default_gate", 0) <= 1:
        problems.append(f"default_gate must be a fraction in (0, 1], got {getattr(cls, 'default_gate', None)!r}")
    if cls.calibrated != bool(cls.methods):
        problems.append("a target calibrated on images offers calibration methods, and only such a target does")
    if len(set(cls.methods)) != len(cls.methods):
        problems.append(f"calibration methods repeated: {cls.methods}")
    if not cls.suffix.startswith(".") or cls.suffix != cls.suffix.lower():
        problems.append(f"suffix must be a lower-case file suffix, got {cls.suffix!r}")
    others = [t for (of, _), t in _TARGETS.items() if of == getattr(cls, "precision", "") and t is not cls]
    if others and (cls.name is None or any(t.name is None for t in others)):
        problems.append(f"several {cls.precision} targets: each needs a name")
    return problems


def unregister_target(cls: type[PrecisionTarget]) -> None:
    _TARGETS.pop((cls.precision, cls.name), None)


def targets(precision: str | None = None) -> list[type[PrecisionTarget]]:
    """The registered targets (of `precision`), in registration order."""
    importlib.import_module(TARGET_PACKAGE)
    return [t for (of, _), t in _TARGETS.items() if precision is None or of == precision]


def target_class(precision: str, name: str | None = None) -> type[PrecisionTarget]:
    """The target of `precision` called `name` (None: the precision's only target)."""
    found = targets(precision)
    if not found:
        raise InputError(f"precision must be one of {', '.join(dict.fromkeys(t.precision for t in targets()))}, "
                         f"got {precision!r}")
    if name is None and len(found) == 1:
        return found[0]
    by_name = {t.name: t for t in found}
    if name not in by_name:
        raise InputError(f"{precision.upper()} target must be one of {', '.join(map(str, by_name))}, got {name!r}")
    return by_name[name]


def create_target(precision: str, name: str | None = None, method: str | None = None) -> PrecisionTarget:
    """A conversion to the target of `precision` called `name`, checked to offer `method` (when given)."""
    return target_class(precision, name)(method)


def engine_target(precision: str) -> type[PrecisionTarget]:
    """The target of `precision` whose file TensorRT builds."""
    found = [t for t in targets(precision) if t.builds_engine]
    if len(found) != 1:
        raise InputError(f"no {precision} conversion for TensorRT: it builds {', '.join(sorted(engine_precisions()))}")
    return found[0]


def engine_calibrated(precision: str | None) -> bool:
    """Whether psp-build-engine's conversion to `precision` calibrates on images (None: the model as it is)."""
    return bool(precision) and any(t.builds_engine and t.calibrated for t in targets(precision))


def engine_precisions() -> list[str]:
    """The precisions a conversion makes for TensorRT, in registration order."""
    return list(dict.fromkeys(t.precision for t in targets() if t.builds_engine))


def default_gate(precision: str) -> float:
    """The gate --min-agreement defaults to for `precision` (every target of a precision shares it)."""
    gates = {t.default_gate for t in targets(precision)}
    if len(gates) != 1:
        raise InputError(f"no single default gate for {precision!r}: {sorted(gates)}")
    return gates.pop()


def all_methods(precision: str) -> list[str]:
    """Every calibration method some target of `precision` offers, in registration order."""
    return list(dict.fromkeys(m for t in targets(precision) for m in t.methods))
