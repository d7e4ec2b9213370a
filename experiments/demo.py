"""The end-to-end demo (`./run.sh demo`, `python -m experiments.demo OUT_DIR`): train a small PSPNet on
context-scenes, export FP32 ONNX, convert to FP16 and INT8, segment a generated video, then benchmark speed
and accuracy of every backend and precision -- all through the psp-* commands exactly as a user runs them,
so the demo also proves the commands work together. TensorRT steps run only where TensorRT and a GPU are, the
OpenVINO bf16 step only on a CPU with bf16 (AMX or AVX512-BF16): elsewhere OpenVINO would run it in f32."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from pspcore.cli import Command
from pspcore.errors import InputError, PSPError


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of every stage. FULL is the real demo (~6 min on a quiet 2-core AVX2 CPU); QUICK proves the wiring in
    seconds."""

    train: tuple[str, ...]  # extra psp-train options
    val_images: int
    calib_images: int
    video_frames: int
    video_size: tuple[int, int]
    bench: tuple[str, ...]  # extra psp-bench options
    overlay_frames: int = 4
    arch: str = "pspnet18"


# pspnet18-tiny (pspnet18 at half width, a quarter of its compute): psp-train's default recipe (500 iterations of
# 8 129x129 crops) takes ~4 min on a quiet 2-core AVX2 EPYC (0.48 s/iteration), where pspnet18 took 19 of the
# demo's 21 minutes (2.3 s/iteration); its mIoU on the 100 validation scenes was 86.4% (pspnet18: 86.7%).
FULL = DemoPlan(train=(), val_images=100, calib_images=64, video_frames=120, video_size=(240, 320),
                bench=("--batch", "1,4"), arch="pspnet18-tiny")
QUICK = DemoPlan(train=("--iters", "2", "--scenes", "8", "--batch", "2", "--scene-size", "65", "--crop", "65",
                        "--workers", "0"),
                 val_images=3, calib_images=3, video_frames=6, video_size=(72, 96),
                 bench=("--batch", "1", "--duration-s", "0.2", "--min-iters", "3", "--warmup-ms", "0",
                        "--slice-ms", "20", "--no-limit"), overlay_frames=2, arch="pspnet18-tiny")


@dataclass
class Demo:
    out: Path
    plan: DemoPlan
    threads: int
    stages: list[tuple[str, float, str]] = field(default_factory=list)  # (title, seconds, outcome)
    started: float = field(default_factory=time.perf_counter)
    total: int = 8

    def header(self, title: str) -> None:
        n = len(self.stages) + 1
        click.secho(f"\n== [{n}/{self.total}] {title}  ({self.elapsed()} elapsed)", bold=True)

    def elapsed(self) -> str:
        s = int(time.perf_counter() - self.started)
        return f"{s // 60}:{s % 60:02d}"

    def stage(self, title: str, action) -> object:
        """Run one stage with a header and its time; `action()` returns a value or a skip reason string
        prefixed 'skipped: '."""
        self.header(title)
        t0 = time.perf_counter()
        value = action()
        outcome = value if isinstance(value, str) and value.startswith("skipped") else "done"
        if outcome != "done":
            click.echo(outcome)
        self.stages.append((title, time.perf_counter() - t0, outcome))
        return value


def tool(name: str) -> str:
    """The installed psp-* script beside this Python (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise PSPError(f"{name} is not installed; run `pip install -e .` in the project (./run.sh setup)")
    return found


def run_tool(*args: str | os.PathLike) -> None:
    """Run a psp-* command with its output (and progress bars) on this terminal; fail on a non-zero exit."""
    argv = [tool(str(args[0])), *(str(a) for a in args[1:])]
    click.secho("$ " + " ".join([str(args[0]), *argv[1:]]), dim=True)
    result = subprocess.run(argv, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if result.returncode != 0:
        raise PSPError(f"`{args[0]} {' '.join(argv[1:3])} ...` failed with exit code {result.returncode} "
                       "(its message is above)")


def tensorrt_reason() -> str | None:
    """None when TensorRT engines can be built and run here, else why not."""
    from pspcore.registry import available_backends

    return available_backends().get("tensorrt")


@dataclass(frozen=True)
class Paths:
    """Where every output of the demo goes, under one folder."""

    out: Path
    arch: str

    @property
    def data(self) -> Path:
        return self.out / "data"

    @property
    def train_images(self) -> Path:
        """The training split's images (export_split's layout): FP16/bf16 verify on them (the INT8 conversion
        calibrates on them and verifies on every 4th), never on the validation images the accuracy is judged on."""
        return self.data / "train" / "images"

    @property
    def checkpoint(self) -> Path:
        return self.out / "train" / "model.pth"

    def model(self, precision: str, suffix: str = ".onnx") -> Path:
        return self.out / "models" / f"{self.arch}-{precision}{suffix}"

    @staticmethod
    def found_model(out: str | os.PathLike, precision: str) -> Path:
        """The `precision` ONNX model of a demo output folder, whichever network it trained."""
        found = sorted((Path(out) / "models").glob(f"*-{precision}.onnx"))
        if not found:
            raise InputError(f"{out} holds no demo model models/<arch>-{precision}.onnx (run the demo into it)")
        return found[0]

    @property
    def video(self) -> Path:
        return self.out / "video" / "context-scenes.mp4"

    @property
    def overlay(self) -> Path:
        return self.out / "video" / "context-scenes-seg.mp4"

    def report(self, name: str) -> Path:
        return self.out / name

    def conversion_report(self, precision: str) -> Path:
        """psp-export's JSON report of the verified conversion to `precision`."""
        return self.out / "models" / f"{self.arch}-{precision}.report.json"


def make_data(paths: Paths, plan: DemoPlan) -> tuple[Path, Path]:
    """Validation images for accuracy, and separate training-split images to calibrate INT8 on."""
    from pspnet.data.context_scenes import export_split

    size = int(plan.train[plan.train.index("--scene-size") + 1]) if "--scene-size" in plan.train else None
    extra = {"size": size} if size else {}
    val = export_split(paths.data, "val", n=plan.val_images, seed=0, **extra)
    calib = export_split(paths.data, "train", n=plan.calib_images, seed=0, **extra)
    click.echo(f"{plan.val_images} validation scenes in {val}, {plan.calib_images} calibration scenes in {calib}")
    return val, calib


def train(paths: Paths, plan: DemoPlan, threads: int) -> Path:
    run_tool("psp-train", "-o", paths.checkpoint.parent, "--arch", plan.arch, "--dataset", "context-scenes",
             "--threads", threads, "--device", "cpu", *plan.train)
    if not paths.checkpoint.exists():
        raise PSPError(f"psp-train finished but wrote no {paths.checkpoint}")
    return paths.checkpoint


def convert(paths: Paths, calib: Path, plan: DemoPlan) -> list[Path]:
    fp32, fp16, int8 = paths.model("fp32"), paths.model("fp16"), paths.model("int8")
    run_tool("psp-export", "onnx", paths.checkpoint, "-o", fp32)
    run_tool("psp-export", "fp16", fp32, "-o", fp16, "--verify-images", paths.train_images,
             "--json", paths.conversion_report("fp16"))
    run_tool("psp-export", "int8", fp32, "-o", int8, "--target", "onnxruntime", "--calib-list", calib,
             "--num-images", plan.calib_images, "--json", paths.conversion_report("int8"))
    return [fp32, fp16, int8]


def bf16_reason() -> str | None:
    """None when OpenVINO runs bf16 on this CPU, else why the demo skips its bf16 model."""
    if importlib.util.find_spec("openvino") is None:
        return "openvino is not installed"
    from runtime.backends.openvino import cpu_has_bf16

    return None if cpu_has_bf16() else "this CPU has neither AMX nor AVX512-BF16: OpenVINO would run it in f32"


def convert_bf16(paths: Paths) -> list[Path] | str:
    """psp-export bf16 (verified against FP32 like FP16) where the CPU runs it; its agreement is in its report."""
    reason = bf16_reason()
    if reason:
        return f"skipped: OpenVINO bf16 needs a CPU with bf16 ({reason})"
    bf16 = paths.model("bf16", ".xml")
    run_tool("psp-export", "bf16", paths.model("fp32"), "-o", bf16, "--verify-images", paths.train_images,
             "--json", paths.conversion_report("bf16"))
    return [bf16]


def build_engines(paths: Paths, calib: Path, plan: DemoPlan) -> list[Path] | str:
    reason = tensorrt_reason()
    if reason:
        return f"skipped: TensorRT engines need TensorRT and an NVIDIA GPU ({reason})"
    fp16, int8 = paths.model("fp16", ".engine"), paths.model("int8", ".engine")
    run_tool("psp-build-engine", paths.model("fp32"), "--fp16", "-o", fp16)
    run_tool("psp-build-engine", paths.model("fp32"), "--int8", "--calib-list", calib, "--num-images",
             plan.calib_images, "-o", int8)
    return [fp16, int8]


def segment_video(paths: Paths, plan: DemoPlan, model: Path, threads: int) -> list[Path]:
    """Generate a context-scenes video, segment it with psp-infer, and keep a few overlay frames as PNGs."""
    from pspnet.data.context_scenes import write_video
    from runtime.video import VideoReader, write_image

    write_video(paths.video, num_frames=plan.video_frames, size=plan.video_size, seed=0)
    click.echo(f"wrote {paths.video} ({plan.video_frames} frames, {plan.video_size[1]}x{plan.video_size[0]})")
    run_tool("psp-infer", model, paths.video, "-o", paths.overlay, "--threads", threads)
    # Evenly spaced frames, including both halves: the scene cuts from sea to street halfway.
    wanted = {round(i * (plan.video_frames - 1) / max(1, plan.overlay_frames - 1))
              for i in range(plan.overlay_frames)}
    frames = []
    reader = VideoReader(paths.overlay)
    try:
        for index, frame in enumerate(reader):
            if index in wanted:
                frames.append(write_image(paths.out / "frames" / f"overlay_{index:03d}.png", frame))
    finally:
        reader.close()
    click.echo("overlay frames: " + ", ".join(str(f) for f in frames))
    return frames


def thread_options(models: list[Path], threads: int) -> tuple:
    """--threads for a CPU-only run; TensorRT engines (on a GPU machine) have no CPU threads to set and
    psp-bench refuses an option one of its runners cannot honour."""
    return () if any(Path(m).suffix in (".engine", ".plan") for m in models) else ("--threads", threads)


def benchmark(paths: Paths, plan: DemoPlan, models: list[Path], threads: int) -> None:
    run_tool("psp-bench", *models, "--baseline", paths.checkpoint, *thread_options(models, threads), *plan.bench,
             "--json", paths.report("bench.json"), "--markdown", paths.report("bench.md"),
             "--plot", paths.report("bench.png"))


def accuracy(paths: Paths, models: list[Path], val: Path, threads: int) -> None:
    run_tool("psp-bench", "accuracy", "--data", val, *models, "--baseline", paths.checkpoint,
             *thread_options(models, threads), "--bench", paths.report("bench.json"),
             "--json", paths.report("accuracy.json"), "--markdown", paths.report("accuracy.md"))


CONVERSIONS = ("fp16", "int8", "bf16")  # psp-export's verified conversions the demo runs (bf16: on bf16 CPUs)


def key_numbers(paths: Paths) -> list[str]:
    """The lines a reader wants from the reports: fastest runner, speed-ups, mIoU and drops."""
    lines = []
    bench = json.loads(paths.report("bench.json").read_text())
    for r in sorted(bench["results"], key=lambda r: (r["batch"], -r["images_per_s"])):
        gain = f", {r['speedup']:.2f}x eager FP32" if r.get("speedup") else ""
        lines.append(f"  batch {r['batch']}: {r['label']:<22} {r['latency']['median']:8.2f} ms median, "
                     f"{r['images_per_s']:7.1f} img/s{gain}")
    acc = json.loads(paths.report("accuracy.json").read_text())
    for r in acc["rows"]:
        drop = f" (drop {r['drop']:+.2f} pts)" if r.get("drop") is not None and not r["reference"] else ""
        lines.append(f"  mIoU {r['label']:<22} {100 * r['miou']:6.2f}%{drop}")
    for precision in CONVERSIONS:
        path = paths.conversion_report(precision)
        if path.is_file():
            after = json.loads(path.read_text())["after"]
            lines.append(f"  {precision.upper()} agreement with the FP32 labels {100 * after['agreement']:6.2f}% "
                         f"(95% lower bound {100 * after['lower_bound']:.2f}%, {after['images']} images)")
    return lines


def summary(demo: Demo, frames: list[Path]) -> str:
    paths = Paths(demo.out, demo.plan.arch)
    lines = [f"demo finished in {demo.elapsed()} (min:s) on {os.cpu_count()} cores, {demo.threads} threads",
             "stages:"]
    lines += [f"  {title:<40} {seconds:6.1f} s  {outcome}" for title, seconds, outcome in demo.stages]
    lines += ["outputs:",
              f"  checkpoint     {paths.checkpoint}",
              f"  models         {paths.model('fp32').parent}/",
              f"  conversions    {paths.conversion_report('*')} (psp-export's verification reports)",
              f"  video overlay  {paths.overlay}",
              f"  frames         {', '.join(str(f) for f in frames)}",
              f"  speed          {paths.report('bench.md')}  {paths.report('bench.json')}  "
              f"{paths.report('bench.png')}",
              f"  accuracy       {paths.report('accuracy.md')}  {paths.report('accuracy.json')}",
              "key numbers:"]
    return "\n".join(lines + key_numbers(paths))


def run_demo(out: str | os.PathLike, quick: bool = False, threads: int | None = None) -> Path:
    """Every stage in order; returns the summary file. Raises PSPError naming the stage that failed."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    plan = QUICK if quick else FULL
    demo = Demo(out, plan, threads or min(os.cpu_count() or 1, 4))
    paths = Paths(out, plan.arch)
    val, calib = demo.stage("generate context-scenes data", lambda: make_data(paths, plan))
    demo.stage(f"train {plan.arch} (psp-train)", lambda: train(paths, plan, demo.threads))
    models = demo.stage("export FP32, convert FP16 and INT8", lambda: convert(paths, calib, plan))
    for title, action in (("OpenVINO bf16 (psp-export bf16)", lambda: convert_bf16(paths)),
                          ("TensorRT engines", lambda: build_engines(paths, calib, plan))):
        made = demo.stage(title, action)
        models += made if isinstance(made, list) else []
    frames = demo.stage("segment a video (psp-infer)",
                        lambda: segment_video(paths, plan, paths.model("int8"), demo.threads))
    demo.stage("benchmark speed (psp-bench)", lambda: benchmark(paths, plan, models, demo.threads))
    demo.stage("benchmark accuracy (psp-bench accuracy)", lambda: accuracy(paths, models, val, demo.threads))
    text = summary(demo, frames)
    target = out / "summary.txt"
    target.write_text(text + "\n")
    click.secho("\n" + text, bold=False)
    return target


@click.command(cls=Command)
@click.argument("out_dir", type=click.Path(file_okay=False), default="demo-out")
@click.option("--quick", is_flag=True, help="Tiny sizes: proves every stage works in seconds (for tests).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for training, inference and benchmarks [default: the cores, at most 4].")
def main(out_dir, quick, threads):
    """The end-to-end demo: train a small PSPNet (pspnet18-tiny, half width) on context-scenes (CPU), export
    FP32 ONNX, convert FP16 and INT8, segment a generated video, benchmark speed and accuracy of every backend
    and precision. Everything lands in OUT_DIR (default demo-out); about 6 minutes on a quiet 2-core AVX2-only
    CPU, seconds with --quick."""
    run_demo(out_dir, quick, threads)


if __name__ == "__main__":
    main()
