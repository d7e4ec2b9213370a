"""The runtime on a real PSPNet: the torch backend on a checkpoint, and (slow) an exported ONNX model run by
psp-infer as a user would, agreeing with the checkpoint it came from."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pspcore.registry import create_runner
from runtime.postprocess import to_labels
from tests.conftest import worker_threads
from tests.runtime.test_video import count_frames

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from pspnet import create_model, save_checkpoint
    from pspnet.checkpoint import info_for_config

    torch.manual_seed(0)
    model = create_model("pspnet18-tiny", num_classes=4, aux=False).eval()
    for module in model.modules():  # non-trivial BN statistics, so outputs are not flat
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("ckpt") / "pspnet18.pth"
    save_checkpoint(path, model, info_for_config(model.config).with_(input_size=(65, 65)))
    return path, model


def test_torch_backend_runs_a_checkpoint(checkpoint):
    path, model = checkpoint
    runner = create_runner("auto", path, threads=worker_threads())
    runner.activate()
    assert runner.name == "torch" and runner.info.num_classes == 4 and runner.info.input_size == (65, 65)
    x = np.random.default_rng(0).normal(size=(2, 3, 33, 33)).astype(np.float32)
    out = runner.infer(x)
    with torch.inference_mode():
        np.testing.assert_allclose(out, model(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-5)
    assert out.shape == (2, 4, 33, 33)


@pytest.mark.slow
def test_exported_pspnet_through_psp_infer(checkpoint, tmp_path):
    from export.onnx.exporter import export_onnx
    from tests.runtime.conftest import write_video

    path, model = checkpoint
    onnx_path = tmp_path / "pspnet18.onnx"
    torch_runner = create_runner("torch", path)
    torch_runner.activate()
    export_onnx(model, torch_runner.info, onnx_path, size=(65, 65))
    ort_runner = create_runner("auto", onnx_path)
    ort_runner.activate()
    assert ort_runner.info.num_classes == 4 and ort_runner.input_spec.size == (65, 65)
    x = np.random.default_rng(1).normal(size=(2, 3, 65, 65)).astype(np.float32)
    agree = (to_labels(ort_runner.infer(x)) == to_labels(torch_runner.infer(x))).mean()
    assert agree > 0.999
    video = write_video(tmp_path / "clip.avi", frames=24, size=(96, 64))
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", str(onnx_path), str(video), "-o",
                           str(tmp_path / "out.mp4"), "--batch", "4", "-q"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "24 frames in, 24 out, 0 skipped" in proc.stdout
    assert count_frames(tmp_path / "out.mp4") == 24
