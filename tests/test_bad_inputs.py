"""Every psp-* command over a catalogue of bad inputs, as a user types them: missing, empty, truncated and wrong
kinds of files, the wrong architecture or class count, a file where a folder is needed and the reverse, zero and
negative numbers, a server that is not there. Each must exit non-zero with one message line (ours `error: ...`
or click's usage `Error: ...`), show no traceback, and leave nothing at its output paths."""
from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

# One xdist group (run.sh: --dist loadgroup): the module's fixtures are built on one worker, not on both.
pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.xdist_group("bad_inputs")]


@dataclass(frozen=True)
class Case:
    id: str
    command: str  # console script name
    args: tuple[str, ...]  # {f} = the fixture folder, {out} = this case's empty output folder
    code: int  # expected exit code
    says: str  # a piece of the one message line
    without_cuda: bool = False  # a bad input only where torch sees no CUDA device


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DEAD = f"127.0.0.1:{_free_port()}"  # nothing listens there

CASES = [
    # psp-train
    Case("train-out-is-a-file", "psp-train", ("-o", "{f}/file.txt", "--iters", "1"), 2, "is a file"),
    Case("train-threads-negative", "psp-train", ("-o", "{out}/run", "--threads", "-1"), 2, "--threads"),
    Case("train-batch-zero", "psp-train", ("-o", "{out}/run", "--batch", "0"), 2, "batch must be at least 1"),
    Case("train-iters-zero", "psp-train", ("-o", "{out}/run", "--iters", "0"), 2, "at least 1"),
    Case("train-list-missing", "psp-train", ("-o", "{out}/run", "--dataset", "{f}/missing.txt",
                                             "--classes", "3"), 2, "not found"),
    Case("train-config-broken", "psp-train", ("--config", "{f}/broken.yaml", "-o", "{out}/run"), 2, "not valid"),
    Case("train-dataset-root-missing", "psp-train", ("-o", "{out}/run", "--dataset", "voc", "--data-root",
                                                     "{f}/nothing"), 2, "nothing"),
    # psp-eval
    Case("eval-model-missing", "psp-eval", ("{f}/missing.pth",), 2, "not found"),
    Case("eval-model-empty", "psp-eval", ("{f}/empty.pth",), 2, "empty.pth"),
    Case("eval-model-truncated", "psp-eval", ("{f}/truncated.pth",), 2, "truncated"),
    Case("eval-model-wrong-kind", "psp-eval", ("{f}/photo.png",), 2, "photo.png"),
    Case("eval-limit-negative", "psp-eval", ("{f}/model.pth", "--limit", "-1"), 2, "--limit"),
    Case("eval-limit-zero", "psp-eval", ("{f}/model.pth", "--limit", "0"), 2, "--limit"),
    Case("eval-save-png-is-a-file", "psp-eval", ("{f}/model.pth", "--save-png", "{f}/file.txt"), 2, "file.txt"),
    Case("eval-device-cuda-without-gpu", "psp-eval", ("{f}/model.pth", "--device", "cuda"), 1, "CUDA",
         without_cuda=True),
    Case("eval-dataset-folder-is-file", "psp-eval", ("{f}/model.pth", "--dataset", "ade20k", "--data-root",
                                                     "{f}/file.txt"), 2, "file.txt"),
    # psp-export onnx
    Case("export-checkpoint-missing", "psp-export", ("onnx", "{f}/missing.pth", "-o", "{out}/m.onnx"), 2, "not found"),
    Case("export-checkpoint-truncated", "psp-export", ("onnx", "{f}/truncated.pth", "-o", "{out}/m.onnx"), 2,
         "truncated"),
    Case("export-wrong-architecture", "psp-export", ("onnx", "{f}/model.pth", "--arch", "pspnet50", "-o",
                                                     "{out}/m.onnx"), 2, "does not fit pspnet50"),
    Case("export-wrong-class-count", "psp-export", ("onnx", "{f}/model.pth", "--classes", "19", "-o",
                                                    "{out}/m.onnx"), 2, "3 classes, the model has 19"),
    Case("export-size-too-small", "psp-export", ("onnx", "{f}/model.pth", "--size", "9", "-o", "{out}/m.onnx"), 2,
         "too small"),
    Case("export-size-zero", "psp-export", ("onnx", "{f}/model.pth", "--size", "0", "-o", "{out}/m.onnx"), 2,
         "size"),
    Case("export-output-in-a-file", "psp-export", ("onnx", "{f}/model.pth", "-o", "{f}/file.txt/m.onnx"), 2,
         "file.txt is a file"),
    Case("export-output-is-a-folder", "psp-export", ("onnx", "{f}/model.pth", "-o", "{out}"), 2, "directory"),
    # psp-export fp16 / int8 / triton
    Case("fp16-model-empty", "psp-export", ("fp16", "{f}/empty.onnx", "-o", "{out}/m.onnx"), 2, "empty.onnx"),
    Case("fp16-model-truncated", "psp-export", ("fp16", "{f}/truncated.onnx", "-o", "{out}/m.onnx"), 2,
         "truncated.onnx"),
    Case("fp16-output-in-a-file", "psp-export", ("fp16", "{f}/model.onnx", "-o", "{f}/file.txt/m.onnx"), 2,
         "file.txt is a file"),
    Case("int8-no-calibration", "psp-export", ("int8", "{f}/model.onnx", "-o", "{out}/m.onnx"), 2, "calib"),
    Case("int8-calibration-folder-is-file", "psp-export", ("int8", "{f}/model.onnx", "-o", "{out}/m.onnx",
                                                           "--calib-images", "{f}/file.txt"), 2, "file.txt"),
    Case("int8-calibration-folder-empty", "psp-export", ("int8", "{f}/model.onnx", "-o", "{out}/m.onnx",
                                                         "--calib-images", "{f}/empty_dir"), 2, "no calibration"),
    Case("int8-num-images-zero", "psp-export", ("int8", "{f}/model.onnx", "-o", "{out}/m.onnx", "--calib-images",
                                                "{f}/calib", "--num-images", "0"), 2, "--num-images"),
    Case("fp16-gate-above-100", "psp-export", ("fp16", "{f}/model.onnx", "-o", "{out}/m.onnx", "--min-agreement",
                                               "101"), 2, "--min-agreement"),
    Case("int8-miou-gate-without-labels", "psp-export", ("int8", "{f}/model.onnx", "-o", "{out}/m.onnx",
                                                         "--calib-images", "{f}/calib", "--max-miou-drop", "1"), 2,
         "needs --eval-list"),
    Case("compare-other-missing", "psp-export", ("compare", "{f}/model.onnx", "{f}/missing.onnx", "--images",
                                                 "{f}/images"), 2, "not found"),
    Case("compare-images-missing", "psp-export", ("compare", "{f}/model.onnx", "{f}/model.onnx", "--images",
                                                  "{f}/no-images"), 2, "no-images"),
    Case("compare-json-in-a-file", "psp-export", ("compare", "{f}/model.onnx", "{f}/model.onnx", "--images",
                                                  "{f}/images", "--json", "{f}/file.txt/c.json"), 2,
         "file.txt is a file"),
    Case("triton-model-wrong-kind", "psp-export", ("triton", "{f}/photo.png", "-o", "{out}/repo"), 2, "photo.png"),
    Case("triton-repo-is-a-file", "psp-export", ("triton", "{f}/model.onnx", "-o", "{f}/file.txt"), 2, "file.txt"),
    Case("triton-max-batch-negative", "psp-export", ("triton", "{f}/model.onnx", "-o", "{out}/repo",
                                                     "--max-batch", "-1"), 2, "max-batch"),
    # psp-build-engine (no TensorRT here: path and option errors come first, then the install advice)
    Case("engine-onnx-missing", "psp-build-engine", ("{f}/missing.onnx", "-o", "{out}/m.engine"), 2, "not found"),
    Case("engine-output-in-a-file", "psp-build-engine", ("{f}/model.onnx", "-o", "{f}/file.txt/m.engine"), 2,
         "file.txt is a file"),
    Case("engine-batch-zero", "psp-build-engine", ("{f}/model.onnx", "-o", "{out}/m.engine", "--batch", "0"), 2,
         "batch"),
    Case("engine-workspace-zero", "psp-build-engine", ("{f}/model.onnx", "-o", "{out}/m.engine", "--workspace",
                                                       "0"), 2, "--workspace"),
    # psp-infer
    Case("infer-model-missing", "psp-infer", ("{f}/missing.onnx", "{f}/clip.avi", "-o", "{out}/o.mp4"), 2,
         "not found"),
    Case("infer-model-truncated", "psp-infer", ("{f}/truncated.onnx", "{f}/clip.avi", "-o", "{out}/o.mp4"), 2,
         "not a loadable ONNX model"),
    Case("infer-video-missing", "psp-infer", ("{f}/model.onnx", "{f}/missing.mp4", "-o", "{out}/o.mp4"), 2,
         "not found"),
    Case("infer-video-empty", "psp-infer", ("{f}/model.onnx", "{f}/empty.mp4", "-o", "{out}/o.mp4"), 2, "empty"),
    Case("infer-video-not-a-video", "psp-infer", ("{f}/model.onnx", "{f}/file.txt", "-o", "{out}/o.mp4"), 2,
         "not a video"),
    Case("infer-image-to-video-name", "psp-infer", ("{f}/model.onnx", "{f}/photo.png", "-o", "{out}/o.mp4"), 2,
         "the input is an image"),
    Case("infer-video-to-image-name", "psp-infer", ("{f}/model.onnx", "{f}/clip.avi", "-o", "{out}/o.png"), 2,
         "the input is a video"),
    Case("infer-output-in-a-file", "psp-infer", ("{f}/model.onnx", "{f}/photo.png", "-o", "{f}/file.txt/o.png"), 2,
         "file.txt is a file"),
    Case("infer-masks-dir-is-a-file", "psp-infer", ("{f}/model.onnx", "{f}/photo.png", "-o", "{out}/o.png",
                                                    "--masks-dir", "{f}/file.txt"), 2, "is a file"),
    Case("infer-folder-output-is-a-file", "psp-infer", ("{f}/model.onnx", "{f}/images", "-o", "{f}/file.txt"), 2,
         "is a file"),
    Case("infer-batch-zero", "psp-infer", ("{f}/model.onnx", "{f}/clip.avi", "-o", "{out}/o.mp4", "--batch", "0"), 2,
         "--batch"),
    Case("infer-wrong-size", "psp-infer", ("{f}/model.onnx", "{f}/clip.avi", "-o", "{out}/o.mp4", "--size", "99"),
         2, "inputs only"),
    Case("infer-codec-bad", "psp-infer", ("{f}/model.onnx", "{f}/clip.avi", "-o", "{out}/o.mp4", "--codec", "x"),
         2, "four-character"),
    Case("infer-server-down", "psp-infer", (f"grpc://{DEAD}/pspnet", "{f}/clip.avi", "-o", "{out}/o.mp4"), 1,
         "cannot reach"),
    # psp-bench
    Case("bench-model-missing", "psp-bench", ("{f}/missing.onnx", "--duration-s", "0"), 1, "not found"),
    Case("bench-batch-zero", "psp-bench", ("{f}/model.onnx", "--batch", "0"), 2, "--batch"),
    Case("bench-json-in-a-file", "psp-bench", ("{f}/model.onnx", "--json", "{f}/file.txt/b.json"), 2,
         "file.txt is a file"),
    Case("bench-server-down", "psp-bench", (f"grpc://{DEAD}/pspnet", "--duration-s", "0"), 1, "cannot reach"),
    Case("accuracy-list-missing", "psp-bench", ("accuracy", "--data", "{f}/missing.txt", "{f}/model.onnx"), 2,
         "not found"),
    Case("accuracy-bench-json-lacks-keys", "psp-bench", ("accuracy", "--data", "{f}/val.txt", "{f}/model.onnx",
                                                         "--bench", "{f}/bad_bench.json"), 2, "not a psp-bench"),
    Case("accuracy-max-images-zero", "psp-bench", ("accuracy", "--data", "{f}/val.txt", "{f}/model.onnx",
                                                   "--max-images", "0"), 2, "--max-images"),
    # psp-serve
    Case("serve-repository-missing", "psp-serve", ("{f}/no-repo",), 2, "no-repo"),
    Case("serve-repository-is-a-file", "psp-serve", ("{f}/file.txt",), 2, "file.txt"),
    Case("serve-port-zero", "psp-serve", ("{f}/empty_dir", "--http-port", "0"), 2, "--http-port"),
]


def _main(command: str):
    from benchmarks.cli import main as bench
    from export.cli import main as export
    from export.engine.cli import main as engine
    from pspnet.eval_cli import main as evaluate
    from pspnet.train_cli import main as train
    from runtime.cli import main as infer
    from runtime.serve_cli import main as serve

    return {"psp-train": train, "psp-eval": evaluate, "psp-export": export, "psp-build-engine": engine,
            "psp-infer": infer, "psp-bench": bench, "psp-serve": serve}[command]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Good and bad files side by side: a 3-class PSPNet-18 checkpoint and its ONNX export, and their empty,
    truncated and wrong-kind twins, a video, images, a list file, a broken YAML, a psp-bench JSON without
    results, a plain file and an empty folder."""
    import cv2
    import numpy as np
    import torch

    from export.onnx.exporter import export_onnx
    from pspnet import create_model, save_checkpoint
    from pspnet.checkpoint import info_for_config
    from tests.runtime.conftest import write_video

    f = tmp_path_factory.mktemp("bad_inputs")
    torch.manual_seed(0)
    model = create_model("pspnet18-tiny", num_classes=3).eval()
    info = info_for_config(model.config).with_(input_size=(65, 65))
    save_checkpoint(f / "model.pth", model, info)
    export_onnx(model, info, f / "model.onnx", size=(65, 65), verify=False)
    for name in ("model.pth", "model.onnx"):
        data = (f / name).read_bytes()
        stem, suffix = name.split(".")
        (f / f"truncated.{suffix}").write_bytes(data[: len(data) // 3])
        (f / f"empty.{suffix}").write_bytes(b"")
    (f / "empty.mp4").write_bytes(b"")
    (f / "file.txt").write_text("just text\n")
    (f / "broken.yaml").write_text("iters: [1, 2\n")
    (f / "bad_bench.json").write_text('{"results": [{"model": "x"}]}')
    (f / "empty_dir").mkdir()
    image = np.full((40, 60, 3), 90, np.uint8)
    cv2.imwrite(str(f / "photo.png"), image)
    (f / "images").mkdir()
    cv2.imwrite(str(f / "images" / "a.png"), image)
    (f / "calib").mkdir()
    cv2.imwrite(str(f / "calib" / "a.png"), image)
    cv2.imwrite(str(f / "label.png"), np.zeros((40, 60), np.uint8))
    (f / "val.txt").write_text("photo.png label.png\n")
    write_video(f / "clip.avi", frames=4)
    return f


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clear_line(case, files, tmp_path, monkeypatch):
    if case.without_cuda:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a CUDA device: --device cuda is a good input here")
    monkeypatch.chdir(tmp_path)  # anything a command would drop in the working folder shows up here too
    out = tmp_path / "out"
    out.mkdir()
    before = _tree(files)
    args = [a.replace("{f}", str(files)).replace("{out}", str(out)) for a in case.args]
    result = CliRunner().invoke(_main(case.command), args)
    text = result.output  # stdout and stderr interleaved, as a terminal shows them
    lines = [ln for ln in text.splitlines() if ln.startswith(("error:", "Error:"))]
    assert result.exit_code == case.code, text
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), text
    assert "Traceback" not in text, text
    assert len(lines) == 1 and case.says in lines[0], text
    assert _tree(out) == set() and _tree(tmp_path) == {"out"}, "left files behind"
    assert _tree(files) == before, "changed the input files"


def test_the_catalogue_covers_every_command():
    import tomllib

    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert {c.command for c in CASES} == set(scripts)
    export_commands = {c.args[0] for c in CASES if c.command == "psp-export"}
    assert {"onnx", "fp16", "int8", "triton", "compare"} <= export_commands


def test_an_unexpected_error_is_one_line_unless_debugging(monkeypatch, files, tmp_path):
    """A bug (not one of our errors) still ends in one line that says how to see the traceback; --debug shows it."""
    import runtime.pipeline

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(runtime.pipeline, "segment", broken)
    args = [str(files / "model.onnx"), str(files / "photo.png"), "-o", str(tmp_path / "o.png")]
    result = CliRunner().invoke(_main("psp-infer"), args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "unexpected ZeroDivisionError: division by zero" in result.output and "--debug" in result.output
    monkeypatch.delenv("PSP_DEBUG", raising=False)
    result = CliRunner().invoke(_main("psp-infer"), [*args, "--debug"])
    assert isinstance(result.exception, ZeroDivisionError)  # the traceback is the user's to see
