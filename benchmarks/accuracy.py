"""psp-bench accuracy: the same validation images through every backend/precision with pspnet.evaluate (a
Runner's `infer` is its `predict`), so FP16/INT8 accuracy is judged exactly like the PyTorch FP32 reference,
and optionally joined with a psp-bench speed report so speed and accuracy sit in one table."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.loading import Loaded, backend_name, load_candidate
from benchmarks.memory import MemoryProbe
from benchmarks.records import Candidate, Unavailable
from benchmarks.report import markdown_table, text_table, write_text
from pspcore.errors import InputError, PSPError, first_line
from pspcore.files import require_file
from pspcore.geometry import runner_input_size


@dataclass(frozen=True)
class AccuracyConfig:
    """The images: a list file (`data_list`) or a named dataset's split (`dataset`: voc, ade20k, cityscapes),
    exactly one of them; `root` is the list's data root (default its folder) or the dataset's folder."""

    data_list: str | None = None
    root: str | None = None
    size: tuple[int, int] | None = None
    limit: int | None = None
    threads: int | None = None
    dataset: str | None = None
    split: str = "val"
    device: str = "auto"  # auto, cpu, cuda, cuda:N (pspcore.device)
    backend_options: tuple[tuple[str, object], ...] = ()  # as BenchConfig's: non-baseline runners that take them

    def __post_init__(self):
        if (self.data_list is None) == (self.dataset is None):
            raise InputError("give the validation images as exactly one of --data LIST or --dataset NAME "
                             "--data-root ROOT")

    @property
    def images(self) -> str:
        """The images in words, for report headers."""
        return self.data_list or f"{self.dataset} {self.split} ({self.root})"


@dataclass
class AccuracyRow:
    label: str
    model: str
    backend: str
    precision: str
    reference: bool
    miou: float
    macc: float
    allacc: float
    images: int
    seconds: float
    drop: float | None = None  # reference mIoU - this mIoU, in points (positive = worse)
    agreement: float | None = None  # strict argmax agreement with the reference's labels, every window pixel
    median_ms: float | None = None  # joined from a psp-bench report
    speedup: float | None = None


@dataclass
class AccuracyReport:
    config: AccuracyConfig
    rows: list[AccuracyRow]
    unavailable: list[Unavailable] = field(default_factory=list)
    speed_source: str | None = None

    def join_speed(self, bench_json: str | Path) -> None:
        """Add median latency and speed-up from a psp-bench --json report (smallest batch), matched by model
        file and backend."""
        path = require_file(bench_json, "psp-bench report")
        try:
            results = json.loads(path.read_text())["results"]
            smallest = min((r["batch"] for r in results), default=None)
            speed = {(_key(r["model"]), r["backend"]): (float(r["latency"]["median"]), r.get("speedup"))
                     for r in results if r["batch"] == smallest}
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError):
            raise InputError(f"{path}: not a psp-bench --json report (write one with psp-bench --json)") from None
        for row in self.rows:
            match = speed.get((_key(row.model), row.backend))
            if match:
                row.median_ms, row.speedup = match
        self.speed_source = str(path)


def _key(model: str) -> str:
    return str(Path(model).resolve())


def open_images(config: AccuracyConfig):
    """The validation source (checked once, before any model loads): the list file or the dataset split."""
    from pspnet.data.datasets import open_source

    return open_source(config.dataset or config.data_list, config.root, config.split)


def evaluate_runner(item: Loaded, data, config: AccuracyConfig, crop: tuple[int, int], labels: list | None = None):
    """pspnet.evaluate over `data` with this runner's infer as the predict callable: sliding windows of
    `crop` (one window when the images are that size), the same for every candidate. `labels` collects the
    argmax of every window, in order (the same windows for every candidate: what agreement compares)."""
    from pspnet.evaluate import EvalMode, evaluate

    info = item.runner.info

    def predict(batch):
        logits = item.runner.infer(batch)
        if labels is not None:
            labels.append(logits.argmax(1) if logits.ndim == 4 else logits)
        return logits

    return evaluate(predict, data, info.num_classes, mode=EvalMode("slide", crop=crop), class_names=info.class_names,
                    mean=info.mean, std=info.std, limit=config.limit)


def run_accuracy(candidates: list[Candidate], config: AccuracyConfig, log=lambda line: None) -> AccuracyReport:
    """Evaluate every candidate in turn (one loaded at a time, to keep memory low); a candidate that cannot
    load or run is listed as unavailable and the rest still run."""
    data = open_images(config)
    rows: list[AccuracyRow] = []
    unavailable: list[Unavailable] = []
    crop = None  # the reference's input size unless --size: one evaluation protocol for all
    labels: dict[int, list] = {}  # row -> argmax of every window
    for cand in sorted(candidates, key=lambda c: not c.baseline):
        try:
            item = load_candidate(cand, config.threads, MemoryProbe(), config.device, dict(config.backend_options))
        except PSPError as exc:
            unavailable.append(Unavailable(cand.model, backend_name(cand), first_line(exc)))
            log(f"unavailable: {unavailable[-1].line()}")
            continue
        log(f"evaluating {Path(cand.model).name} on {item.runner.describe()}")
        started = time.perf_counter()
        try:
            crop = runner_input_size(item.runner, crop or config.size)  # later models must take the first's
            windows: list = []
            result = evaluate_runner(item, data, config, crop, windows)
        except PSPError as exc:
            unavailable.append(Unavailable(cand.model, item.runner.name, first_line(exc)))
            log(f"unavailable: {unavailable[-1].line()}")
            continue
        finally:
            item.runner.deactivate()
        rows.append(AccuracyRow(
            label=item.label, model=cand.model, backend=item.runner.name, precision=item.runner.info.precision,
            reference=cand.baseline, miou=float(result.miou), macc=float(result.macc),
            allacc=float(result.allacc), images=int(result.num_images),
            seconds=time.perf_counter() - started))
        labels[id(rows[-1])] = windows
    _label_duplicates(rows)
    reference = next((r for r in rows if r.reference), None)
    for row in rows:
        if reference is not None:
            row.drop = (reference.miou - row.miou) * 100
            row.agreement = _agreement(labels[id(reference)], labels[id(row)])
    return AccuracyReport(config, rows, unavailable)


def _agreement(reference: list, candidate: list) -> float | None:
    """Strict argmax agreement over all windows (None when the windows differ, e.g. a candidate that failed)."""
    if len(reference) != len(candidate) or any(a.shape != b.shape for a, b in zip(reference, candidate)):
        return None
    same = sum(int((a == b).sum()) for a, b in zip(reference, candidate))
    total = sum(a.size for a in reference)
    return same / total if total else None


def _label_duplicates(rows: list[AccuracyRow]) -> None:
    labels = [r.label for r in rows]
    for row in rows:
        if labels.count(row.label) > 1:
            row.label = f"{row.label} ({Path(row.model).name})"


def accuracy_table(report: AccuracyReport) -> tuple[list[str], list[list[str]]]:
    headers = ["backend", "model", "mIoU %", "drop (pts)", "agreement %", "mAcc %", "allAcc %"]
    joined = report.speed_source is not None
    if joined:
        headers += ["median ms", "speed-up"]
    rows = []
    for r in report.rows:
        row = [r.label + (" *" if r.reference else ""), Path(r.model).name, f"{r.miou * 100:.2f}",
               f"{r.drop:+.2f}" if r.drop is not None else "-",
               f"{r.agreement * 100:.2f}" if r.agreement is not None else "-", f"{r.macc * 100:.2f}",
               f"{r.allacc * 100:.2f}"]
        if joined:
            row += [f"{r.median_ms:.2f}" if r.median_ms is not None else "-",
                    f"{r.speedup:.2f}x" if r.speedup is not None else "-"]
        rows.append(row)
    return headers, rows


def _footer(report: AccuracyReport, star: str = "*") -> list[str]:
    lines = [f"{star} reference: PyTorch FP32; drop = reference mIoU - mIoU in percentage points; agreement = share "
             "of pixels whose predicted class equals the reference's (strict argmax)"]
    if report.speed_source:
        lines.append(f"speed from {report.speed_source} (median latency of one batch, smallest batch)")
    return lines + [f"unavailable: {u.line()}" for u in report.unavailable]


def format_accuracy(report: AccuracyReport) -> str:
    lines = [f"accuracy on {report.config.images}", "", *text_table(*accuracy_table(report), text_columns=2)]
    return "\n".join(lines + [""] + _footer(report))


def format_accuracy_markdown(report: AccuracyReport) -> str:
    lines = ["# psp-bench accuracy", "", f"Validation images: `{report.config.images}`", "",
             *markdown_table(*accuracy_table(report), text_columns=2)]
    return "\n".join(lines + [""] + [f"- {line}" for line in _footer(report, "`*`")]) + "\n"


def write_accuracy_json(report: AccuracyReport, path: str | Path) -> Path:
    data = {"schema": "psp-bench-accuracy/1", "config": asdict(report.config),
            "rows": [asdict(r) for r in report.rows], "unavailable": [asdict(u) for u in report.unavailable],
            "speed_source": report.speed_source}
    return write_text(json.dumps(data, indent=2) + "\n", path)


def write_accuracy_markdown(report: AccuracyReport, path: str | Path) -> Path:
    return write_text(format_accuracy_markdown(report), path)
