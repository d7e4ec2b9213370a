import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from export.cli import main
from pspcore.model_info import ModelInfo

onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_model, tiny_info):
    from pspnet import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_checkpoint(path, tiny_model, tiny_info.with_(input_size=(65, 65)))
    return path


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".onnx", ".partial") or p.name.startswith("."))


def test_export_with_defaults_from_the_checkpoint(tmp_path, checkpoint):
    out = tmp_path / "model.onnx"
    result = CliRunner().invoke(main, ["onnx", str(checkpoint), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and "input 65x65" in result.output
    assert "parity 2x3x65x65: max abs error" in result.output and "argmax agreement 100.0000%" in result.output
    info = ModelInfo.from_props({p.key: p.value for p in onnx.load(out).metadata_props})
    assert info.input_size == (65, 65) and info.num_classes == 5 and info.dynamic_batch
    assert _leftovers(tmp_path) == ["model.onnx"]


def test_fixed_batch_labels_no_verify(tmp_path, checkpoint):
    out = tmp_path / "labels.onnx"
    result = CliRunner().invoke(main, ["onnx", str(checkpoint), "-o", str(out), "--size", "49x81",
                                       "--batch", "2", "--emit", "labels", "--no-verify"])
    assert result.exit_code == 0, result.output
    assert "not verified" in result.output and "parity" not in result.output
    graph = onnx.load(out).graph
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [2, 3, 49, 81]
    assert graph.output[0].name == "labels"


@pytest.mark.parametrize("args,message", [
    (["--size", "33"], "at least 41"),
    (["--size", "3x"], "Invalid value for '--size'"),
    (["--size", "65x65.5"], "Invalid value for '--size'"),
    (["--batch", "0"], "batch must be at least 1"),
    (["--batch", "many"], "positive integer or 'dynamic'"),
    (["--opset", "9"], "opset 9 is not supported"),
    (["--arch", "pspnet50"], "does not fit pspnet50"),
    (["--classes", "7"], "checkpoint has 5 classes"),
])
def test_bad_options(tmp_path, checkpoint, args, message):
    result = CliRunner().invoke(main, ["onnx", str(checkpoint), "-o", str(tmp_path / "m.onnx"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert _leftovers(tmp_path) == []


def test_bad_paths(tmp_path, checkpoint):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(checkpoint.read_bytes()[:1000])
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    cases = [
        ([str(tmp_path / "missing.pth"), "-o", str(tmp_path / "a.onnx")], "checkpoint not found"),
        ([str(corrupt), "-o", str(tmp_path / "b.onnx")], "not a readable PyTorch checkpoint"),
        ([str(checkpoint), "-o", str(blocker / "c.onnx")], "blocker is a file, not a folder"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, ["onnx", *args])
        assert result.exit_code == 2, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], result.output
    assert _leftovers(tmp_path) == []


@pytest.mark.slow
def test_cli_as_a_user_runs_it(tmp_path, checkpoint):
    """The installed console script, dynamic shape, in a fresh process."""
    exe = Path(sys.executable).with_name("psp-export")
    command = [str(exe)] if exe.exists() else [sys.executable, "-c", "from export.cli import main; main()"]
    out = tmp_path / "dyn.onnx"
    done = subprocess.run([*command, "onnx", str(checkpoint), "-o", str(out), "--dynamic-shape"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "input dynamic HxW" in done.stdout and done.stdout.count("parity ") == 2
    dims = [d.dim_param or d.dim_value for d in onnx.load(out).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    bad = subprocess.run([*command, "onnx", str(checkpoint), "-o", str(tmp_path / "x.onnx"), "--size", "20"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: input size 20x20")
    assert _leftovers(tmp_path) == ["dyn.onnx"]
