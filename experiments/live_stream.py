"""psp-infer on a live 30 fps stream, and end to end on files for every CPU backend (issue 29).

    python -m experiments.live_stream WORK [--seconds 20] [--markdown WORK/live.md]

PSPNet-18 (context-scenes classes, random weights: speed does not depend on them) is exported at its 129x129
input and converted to ONNX Runtime INT8 (`psp-export int8 --target onnxruntime`, calibrated on frames of the
clip; the agreement gate is off because random weights have nothing to keep). FFmpeg serves the clip as an
HTTP MJPEG stream paced at 30 fps (`-re`, `-listen 1`), psp-infer reads it in real-time mode until the stream
ends, and its --json gives output fps, dropped frames, latency and the per-stage table. Then `psp-bench e2e`
runs the FP32 and INT8 models on the clip as a file on every CPU backend beside their pure throughput."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import click
import cv2

from benchmarks.machine import machine_info
from benchmarks.report import write_text
from experiments.demo import run_tool
from experiments.infer_throughput import export_demo_model
from pspcore.cli import Command
from pspcore.errors import InputError
from runtime.serve import free_port
from runtime.stages import format_stages

FPS = 30
FILE_FRAMES = 150  # of the clip, per end-to-end run on a file: FP32 on a busy 2-core machine runs a few frames/s


def calibration_frames(video: Path, folder: Path, count: int = 32) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(video))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    for i in range(count):
        cap.set(cv2.CAP_PROP_POS_FRAMES, i * total // count)
        ok, frame = cap.read()
        if ok:
            cv2.imwrite(str(folder / f"f{i:03d}.png"), frame)
    cap.release()
    return folder


def stream_run(model: Path, video: Path, work: Path, threads: int) -> dict:
    """FFmpeg serves `video` once at its 30 fps over HTTP MJPEG; psp-infer reads it until it ends."""
    if shutil.which("ffmpeg") is None:
        raise InputError("the stream benchmark needs the ffmpeg tool (run.sh setup installs it)")
    url = f"http://127.0.0.1:{free_port()}/live.mjpg"
    server = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-re", "-i", str(video), "-c:v", "mjpeg", "-q:v", "4",
                               "-f", "mpjpeg", "-listen", "1", url])
    try:
        time.sleep(1.0)  # ffmpeg binds its port
        run_tool("psp-infer", model, url, "-o", work / "stream.avi", "--codec", "MJPG", "--threads", threads,
                 "--json", work / "stream.json", "--jsonl", work / "stream.jsonl", "--reconnect-tries", "0", "-q")
    finally:
        server.kill()
        server.wait()
    return json.loads((work / "stream.json").read_text())


def stream_lines(model: Path, run: dict, threads: int) -> list[str]:
    latency = run["stages"]["latency"]
    return [f"- model {model.name} (ONNX Runtime INT8, input 129x129), threads {threads}; source: an HTTP MJPEG "
            f"stream served by FFmpeg at {FPS} fps",
            f"- {run['frames_in']} frames in, {run['frames_out']} segmented, {run['dropped']} dropped (real-time "
            f"mode: {run['realtime']}), {run['seconds']:.1f} s",
            f"- output {run['fps']:.1f} frames/s, input {run['frames_in'] / run['seconds']:.1f} frames/s; latency "
            f"(decode to written) p50 {latency['p50_ms']:.1f} ms, p95 {latency['p95_ms']:.1f} ms",
            "", "```", format_stages(run["stages"]), "```"]


@click.command(cls=Command)
@click.argument("work", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seconds", type=click.IntRange(min=2), default=20, show_default=True, help="Length of the stream.")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report as Markdown [default: WORK/live.md].")
def main(work, seconds, threads, markdown_path):
    """PSPNet-18 INT8 on a live 30 fps stream; end-to-end vs pure throughput on files for every CPU backend."""
    from pspnet.data.context_scenes import write_video

    work.mkdir(parents=True, exist_ok=True)
    video = write_video(work / "clip.avi", num_frames=FPS * seconds, size=(240, 320), fps=FPS)
    fp32 = export_demo_model(work / "pspnet18_context-scenes_129.onnx")
    int8 = work / "pspnet18_context-scenes_129.int8.onnx"
    run_tool("psp-export", "int8", fp32, "-o", int8, "--target", "onnxruntime", "--calib-images",
             calibration_frames(video, work / "calib"), "--min-agreement", "0", "--fallback", "none")
    run = stream_run(int8, video, work, threads)
    run_tool("psp-bench", "e2e", fp32, int8, "--source", video, "--backend", "onnxruntime,openvino",
             "--threads", threads, "--seconds", "5", "--frames", FILE_FRAMES, "--json", work / "e2e.json",
             "--markdown", work / "e2e.md")
    e2e = json.loads((work / "e2e.json").read_text())
    m = machine_info(threads)
    lines = [f"{m['cpu']}, {m['cores']} cores, load average {m.get('load_average', '?')}; {time.strftime('%Y-%m-%d')}"
             " (a machine shared with other work: figures move with its load)", "", "### A live 30 fps stream", "",
             *stream_lines(int8, run, threads), "", "### End to end on a file vs the model alone", "",
             f"The first {FILE_FRAMES} frames of the clip as a file, every frame kept:", "",
             "| model | backend | pure frames/s | end-to-end frames/s | e2e / pure |",
             "| --- | --- | ---: | ---: | ---: |",
             *(f"| {Path(r['model']).name} | {r['backend']} | {sum(r['pure_fps']) / len(r['pure_fps']):.1f} | "
               f"{r['e2e_fps']:.1f} | {r['ratio']:.0%} |" for r in e2e), "",
             "Per-stage times of each run: `e2e.md` in the work folder."]
    out = markdown_path or work / "live.md"
    write_text("\n".join(lines) + "\n", out)
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
