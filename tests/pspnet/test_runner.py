"""The PyTorch runner's options for GPU users without TensorRT (precision, channels_last, cuda_graphs) and its
lifecycle, on the CPU: CUDA graphs through a stand-in with torch.cuda.CUDAGraph's contract."""
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from export.parity import compare_outputs
from experiments.gpu_torch import passes
from pspcore.errors import InputError
from pspnet.runner import TorchRunner
from tests.experiments.test_gpu_check import EagerGraph, StaleGraph


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from experiments.gpu_check import small_model

    return small_model(tmp_path_factory.mktemp("runner") / "small.pth", "pspnet18-tiny", 4, (33, 33))


def _images(seed):
    return np.random.default_rng(seed).standard_normal((2, 3, 33, 33)).astype(np.float32)


def test_init_stores_options_only_and_activate_loads(checkpoint):
    runner = TorchRunner(checkpoint, precision="bf16")
    assert runner.model is None and "torch[cpu]" in runner.describe()
    with runner:
        assert runner.info.num_classes == 4 and runner.info.precision == "bf16"
    assert runner.model is None  # deactivate drops the model
    with pytest.raises(InputError, match="choose one of fp32, fp16, bf16"):
        TorchRunner(checkpoint, precision="int8")
    with pytest.raises(InputError, match="needs a CUDA device"):
        TorchRunner(checkpoint, cuda_graphs=True).activate()


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_autocast_precisions_pass_their_gates_and_differ_from_fp32(checkpoint, precision):
    x = _images(0)
    with TorchRunner(checkpoint) as fp32, TorchRunner(checkpoint, precision=precision, channels_last=True) as low:
        reference, got = fp32.infer(x), low.infer(x)
    report = compare_outputs(reference, got)
    assert passes(precision, report), report.describe()
    assert report.max_abs > 0  # autocast really ran in the lower precision


def test_cuda_graphs_replay_a_new_input(checkpoint, monkeypatch):
    """Captured on one input, replayed on another: the answer for the new input (eager on it), not the
    capture's; a graph that never re-runs fails this."""
    monkeypatch.setattr(TorchRunner, "graph_type", EagerGraph)
    first, fresh = _images(1), _images(2)
    with TorchRunner(checkpoint) as eager:
        expected = eager.infer(fresh)
    with TorchRunner(checkpoint, cuda_graphs=True) as graphs:
        graphs.infer(first)
        np.testing.assert_allclose(graphs.infer(fresh), expected, rtol=0, atol=1e-5)
    monkeypatch.setattr(TorchRunner, "graph_type", StaleGraph)
    with TorchRunner(checkpoint, cuda_graphs=True) as stale:
        stale.infer(first)
        assert not compare_outputs(expected, stale.infer(fresh)).ok()


def test_cli_flags_reach_the_torch_runner_only(tmp_path):
    from pspnet.eval_cli import main as eval_main
    from runtime.cli import main as infer_main

    for main in (infer_main, eval_main):
        help_text = CliRunner().invoke(main, ["--help"]).output
        assert "--precision" in help_text and "--cuda-graphs" in help_text
    from pspcore.registry import create_runner
    from tests.runtime.conftest import make_onnx

    model = make_onnx(tmp_path / "m.onnx")
    with pytest.raises(InputError, match="does not take --precision"):
        create_runner("onnxruntime", model, precision="fp16")


def test_labels_past_255_from_the_torch_runner(tmp_path):
    """A 300-class checkpoint through the torch runner and the runtime's labels rule: ids past 255 survive (the
    expected labels are the network's own argmax, computed here with torch)."""
    from pspnet.checkpoint import info_for_config, save_checkpoint
    from pspnet.factory import create_model
    from runtime.postprocess import to_labels

    torch.manual_seed(7)
    net = create_model("pspnet18-tiny", 300, aux=False).eval()
    with torch.no_grad():
        net.cls[4].bias[256:] += 0.5  # the wide ids win most pixels
    path = save_checkpoint(tmp_path / "wide.pth", net, info_for_config(net.config))
    x = _images(7)
    with torch.no_grad():
        expected = net.eval()(torch.from_numpy(x)).argmax(1).numpy()
    assert (expected > 255).mean() > 0.5
    with TorchRunner(path, arch="pspnet18-tiny", num_classes=300) as runner:
        labels = to_labels(runner.infer(x), runner.info.num_classes)
    assert labels.dtype == np.uint16
    np.testing.assert_array_equal(labels, expected)
