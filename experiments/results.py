"""docs/results.md, written by one command from the measurements it runs: each section runs one experiment
(a command a reader can rerun) into a work folder, and the page puts every table under the command that made
it. Nothing in the page is typed by hand.

    python -m experiments.results docs/results.md                 # everything (about an hour on 2 cores)
    python -m experiments.results docs/results.md --only demo,cpu-speed
    python -m experiments.results docs/results.md --reuse         # assemble from what the work folder has

A section whose outputs are already in the work folder is reused with --reuse (so a long run can be done in
parts); without it every selected section runs again. A section with no outputs in the work folder (one not run
on this machine) keeps its text from the page as it was, so `--only NAME` replaces that section alone."""
from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click

from benchmarks.report import write_text
from experiments.demo import run_tool
from pspcore.cli import Command
from pspcore.errors import InputError


@dataclass(frozen=True)
class Section:
    """One experiment: its title, what it shows, the command (words; {work} is its folder) and the Markdown
    files it writes there, in the order they appear on the page."""

    name: str
    title: str
    about: str
    command: tuple[str, ...]
    outputs: tuple[str, ...]

    def argv(self, work: Path) -> list[str]:
        """The command for the section folder `work`; {root} is the folder of all sections."""
        return [word.replace("{work}", str(work)).replace("{root}", str(work.parent)) for word in self.command]

    def shown(self, work: Path) -> str:
        """The command as a reader types it from the project's folder."""
        return " ".join(self.argv(Path(os.path.relpath(work))))


SECTIONS = (
    Section("ablation", "The pyramid pooling module, PPM vs FCN",
            "PSPNet-18 trained twice on context-scenes panoramas (the scene type shows only at one end), with and "
            "without the pyramid, same recipe and budget, evaluated on the val split. `*`: classes decided by "
            "the scene, not by local appearance.",
            ("python", "-m", "experiments.ppm_ablation", "{work}", "--time-limit-min", "45"), ("ablation.md",)),
    Section("export", "Exact ONNX export of PSPNet-50",
            "Export time, graph size and parity of static and dynamic-shape exports at sizes whose feature map "
            "does and does not divide by the pyramid bins, against what the usual fixed-kernel avg_pool rewrite "
            "would give.",
            ("python", "-m", "experiments.export_report", "--markdown", "{work}/export.md"), ("export.md",)),
    Section("cpu-speed", "PSPNet-50 at 473x473 on this CPU",
            "A PSPNet-50 checkpoint through `psp-export onnx`, `psp-export int8 --target onnxruntime` and "
            "`--target openvino`, then psp-bench's interleaved measurement (PyTorch eager FP32 as the baseline): "
            "ONNX Runtime FP32/INT8, OpenVINO FP32 (f32 hint) on the FP32 .onnx, OpenVINO on the ONNX Runtime "
            "INT8 file and on the openvino IR (on a CPU with bf16 also `psp-export bf16`'s IR), each against the "
            "machine's own GEMM rate; then ONNX Runtime's per-op profile.",
            ("python", "-m", "experiments.cpu_speed", "{work}"), ("bench.md", "profile.md")),
    Section("demo", "The demo model, pspnet18-tiny on context-scenes",
            "`./run.sh demo`: a pspnet18-tiny (PSPNet-18 at half width) trained on the CPU, exported, converted to "
            "FP16 and INT8, benchmarked for speed and for accuracy on the same validation images.",
            ("python", "-m", "experiments.demo", "{work}"), ("bench.md", "accuracy.md")),
    Section("precision", "Verified INT8 with automatic repair: the demo model and PSPNet-50 at 473x473",
            "`psp-export int8` as a user runs it: calibration on drawn scenes with every 4th held out, the gate "
            "(98% of the FP32 labels kept), repair when below it, the whole conversion timed, and ONNX Runtime "
            "latency of FP32, plain INT8 and repaired INT8.",
            ("python", "-m", "experiments.precision_report", "{work}", "--checkpoint", "{root}/demo/train/model.pth",
             "--markdown", "{work}/precision.md"),
            ("precision.md",)),
    Section("ov-accuracy-control", "OpenVINO INT8 on the outlier network: our repair vs NNCF's accuracy control",
            "`psp-export int8 --target openvino` (ONNX Runtime's quantizer or `--method nncf`, then the gate and "
            "repair) against `nncf.quantize_with_accuracy_control` on the outlier network of the tests, with the "
            "same calibration and held-out images and the same metric (argmax agreement with FP32 on OpenVINO, "
            "98%); each result written as IR and measured the same way.",
            ("python", "-m", "experiments.ov_accuracy_control", "{work}", "--markdown",
             "{work}/ov_accuracy_control.md"),
            ("ov_accuracy_control.md",)),
    Section("ort-int8", "ONNX Runtime's INT8 convolutions against its own GEMM rate",
            "The onnxruntime target's INT8 PSPNet-50 rebuilt in variants (weights per channel or per tensor, S8 "
            "or U8, QDQ or QOperator, 7-bit, the logit Resize on uint8, a labels output) and opened with several "
            "session options, all run interleaved under ONNX Runtime's profiler; each convolution's rate set "
            "against MatMulInteger on the same shapes and the machine's 2048^3 GEMM rates; the labels output "
            "measured with psp-bench and psp-infer; U8S8 saturation measured on the demo's trained model.",
            ("python", "-m", "experiments.ort_int8_report", "{work}", "--trained", "{root}/demo",
             "--markdown", "{work}/ort-int8.md"),
            ("ort-int8.md",)),
    Section("triton", "Serving on the real Triton server",
            "A PSPNet-18 (65x65) run locally in ONNX Runtime and served by psp-serve's Triton server on this "
            "machine, as the plain model and as the image -> labels ensemble, HTTP and gRPC, with and without "
            "system shared memory; one client (latency) and 8 concurrent clients (throughput). Server and "
            "clients share the same cores.",
            ("python", "-m", "experiments.triton_overhead", "-o", "{work}/files", "--markdown", "{work}/triton.md"),
            ("triton.md",)),
    Section("throughput", "psp-infer on a video",
            "End-to-end psp-infer (decode, preprocess, inference, post-process, encode in overlapping threads) "
            "against the backend's pure inference throughput, rounds interleaved.",
            ("python", "-m", "experiments.infer_throughput", "--markdown", "{work}/throughput.md"),
            ("throughput.md",)),
    Section("live", "psp-infer on a live stream, and end to end on files per backend",
            "PSPNet-18 (129x129, ONNX Runtime INT8) on an HTTP MJPEG stream that FFmpeg serves at 30 fps, in "
            "real-time mode: output fps, dropped frames, latency and where the time goes; then `psp-bench e2e` "
            "on the same clip as a file, FP32 and INT8 on every CPU backend, against the model alone.",
            ("python", "-m", "experiments.live_stream", "{work}", "--markdown", "{work}/live.md"), ("live.md",)),
)


def machine_line() -> str:
    import onnxruntime

    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = "not installed"
    from benchmarks.machine import machine_info

    m = machine_info(None)
    return (f"{m['cpu']}, {m['cores']} cores, Python {platform.python_version()}, torch {torch_version}, "
            f"onnxruntime {onnxruntime.__version__}; {time.strftime('%Y-%m-%d')}")


def run_section(section: Section, work: Path, reuse: bool) -> None:
    folder = work / section.name
    if reuse and all((folder / out).is_file() for out in section.outputs):
        click.echo(f"== {section.name}: reusing {folder}", err=True)
        return
    click.echo(f"== {section.name}: {' '.join(section.argv(folder))}", err=True)
    run_tool(*section.argv(folder))
    missing = [out for out in section.outputs if not (folder / out).is_file()]
    if missing:
        raise InputError(f"{section.name}: the command ran but wrote no {', '.join(missing)} in {folder}")


def written_sections(text: str, sections: list[Section]) -> dict[str, str]:
    """What the page `text` holds under each section's heading (title -> its body, up to the next section)."""
    titles = {section.title for section in sections}
    found: dict[str, list[str]] = {}
    body: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("## ") and line[3:] in titles:
            body = found.setdefault(line[3:], [])
        elif body is not None:
            body.append(line)
    return {title: "\n".join(lines).strip() for title, lines in found.items()}


def page(sections: list[Section], work: Path, before: str = "") -> str:
    """The page: each section from its outputs in `work`, else as the page `before` had it (else left out)."""
    kept = written_sections(before, sections)
    lines = ["# Measured results", "",
             "Written by `python -m experiments.results docs/results.md`; every table below is the output of "
             "the command above it, rerun with `--only NAME`. Nothing on this page is typed by hand.", "",
             f"Page assembled on: {machine_line()}. Sections are rerun one at a time (`--only`), so they can "
             "come from different machines and days: a section's own tables name the CPU, load and date they were "
             "measured on.", ""]
    for section in sections:
        folder = work / section.name
        available = [out for out in section.outputs if (folder / out).is_file()]
        if not available:
            if kept.get(section.title):
                lines += [f"## {section.title}", "", kept[section.title], ""]
            continue
        lines += [f"## {section.title}", "", section.about, "", "```", section.shown(folder), "```", ""]
        for out in available:
            # the commands ran in the absolute work folder: the page names it as a reader types it
            text = (folder / out).read_text().strip().replace(str(work), os.path.relpath(work))
            # A fragment's own top-level title would break the page's outline: it goes under the section's.
            lines += [("##" + line) if line.startswith("# ") else line for line in text.splitlines()] + [""]
    return "\n".join(lines).rstrip() + "\n"


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("page_path", type=click.Path(dir_okay=False, path_type=Path), default="docs/results.md")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/results"),
              show_default=True, help="Where each section's command writes its outputs.")
@click.option("--only", default=None, help="Comma-separated section names to run: "
              + ", ".join(s.name for s in SECTIONS) + " [default: all].")
@click.option("--reuse", is_flag=True, help="Keep a section's existing outputs instead of running it again.")
def main(page_path, work, only, reuse):
    """Run the experiments and write the results page from their outputs."""
    names = [n.strip() for n in only.split(",")] if only else [s.name for s in SECTIONS]
    unknown = sorted(set(names) - {s.name for s in SECTIONS})
    if unknown:
        raise InputError(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(s.name for s in SECTIONS)}")
    work = work.resolve()
    for section in SECTIONS:
        if section.name in names:
            run_section(section, work, reuse)
    before = page_path.read_text() if page_path.is_file() else ""
    write_text(page(list(SECTIONS), work, before), page_path)
    click.echo(f"wrote {page_path}", err=True)


if __name__ == "__main__":
    sys.exit(main())
