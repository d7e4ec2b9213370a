"""pspnet.gpu on a CPU: CUDA graphs on a two-device stand-in for torch.cuda (tests/pspnet/fake_torch_cuda.py),
strict FP32 through either TF32 API, and the host copies' dtypes."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import pspnet.gpu as gpu
from pspnet.gpu import LEGACY_TF32_API, NEW_TF32_API, CudaGraphs, HostStaging, describe_tf32_off, strict_fp32, tf32_api
from tests.pspnet.fake_torch_cuda import FakeTorchCuda


@pytest.fixture
def fake_cuda(monkeypatch) -> FakeTorchCuda:
    fake = FakeTorchCuda(devices=2)
    monkeypatch.setattr(gpu, "cuda_api", lambda: fake)
    return fake


def _doubling(fake: FakeTorchCuda, device: int):
    """A forward whose one kernel runs on `device` (output = 2 x input)."""
    def forward(x):
        out = torch.empty_like(x)
        fake.launch(device, lambda: torch.mul(x, 2, out=out))
        return out
    return forward


def _batch(seed: int, shape=(2, 3, 4, 4)) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def test_graphs_on_a_second_gpu_record_the_work_and_replay_new_inputs(fake_cuda):
    """A runner on cuda:0 captures first, then one on cuda:1. Without an explicit stream the second capture
    would use torch's process-wide capture stream (made on GPU 0 by the first), the work on GPU 1 would run
    eagerly and every replay would return the capture's output (pytorch issue 87894)."""
    for index in (0, 1):
        graphs = CudaGraphs(_doubling(fake_cuda, index), torch.device("cuda", index))
        assert graphs.stream.device.index == index
        for seed in (1, 2, 3):
            x = _batch(seed)
            torch.testing.assert_close(graphs(x), 2 * x, rtol=0, atol=0)
        (graph,) = graphs.graphs.values()
        assert len(graph.graph.recorded) == 1  # the kernel was recorded, not run during the capture
    assert fake_cuda.current == 0  # the current device is restored after each capture


def test_one_graph_per_shape_in_one_pool_and_eager_past_the_limit(fake_cuda):
    graphs = CudaGraphs(_doubling(fake_cuda, 0), torch.device("cuda", 0), limit=2)
    small, large, third = (2, 3, 4, 4), (1, 3, 4, 4), (3, 3, 4, 4)
    for seed, shape in enumerate([small, large, small, large, small]):
        x = _batch(seed, shape)
        torch.testing.assert_close(graphs(x), 2 * x, rtol=0, atol=0)
    assert fake_cuda.captures == 2 and fake_cuda.replays == 5  # each shape captured once, then replayed
    assert len(fake_cuda.pools) == 1 and {g.graph.recorded is not None for g in graphs.graphs.values()} == {True}
    x = _batch(9, third)
    torch.testing.assert_close(graphs(x), 2 * x, rtol=0, atol=0)  # past the limit: eager, right answer
    assert fake_cuda.captures == 2 and graphs.eager_calls == 1 and len(graphs.graphs) == 2


# ---- strict FP32 ----

def _legacy_backends():
    return SimpleNamespace(cuda=SimpleNamespace(matmul=SimpleNamespace(allow_tf32=True)),
                           cudnn=SimpleNamespace(allow_tf32=True))


def test_strict_fp32_uses_the_new_api_on_this_torch_and_restores_it():
    """torch here (>= 2.9) has fp32_precision; cuDNN convolutions default to TF32. The legacy flags are never
    touched: after a mixed state reading them raises, so a legacy-only switch would break or leave TF32 on."""
    backends = torch.backends
    assert tf32_api() == NEW_TF32_API
    before = backends.cuda.matmul.fp32_precision, backends.cudnn.conv.fp32_precision
    rnn = backends.cudnn.rnn.fp32_precision
    backends.cudnn.rnn.fp32_precision = "ieee"  # conv and rnn differ: the legacy cuDNN flag cannot be read
    try:
        with pytest.raises(RuntimeError, match="mix of the legacy and new APIs"):
            backends.cudnn.allow_tf32
        with strict_fp32() as api:
            assert api == NEW_TF32_API
            assert (backends.cuda.matmul.fp32_precision, backends.cudnn.conv.fp32_precision) == ("ieee", "ieee")
        assert (backends.cuda.matmul.fp32_precision, backends.cudnn.conv.fp32_precision) == before
    finally:
        backends.cudnn.rnn.fp32_precision = rnn
    assert "fp32_precision" in describe_tf32_off(api)


def test_strict_fp32_uses_the_legacy_flags_on_an_older_torch():
    backends = _legacy_backends()
    assert tf32_api(backends) == LEGACY_TF32_API
    with strict_fp32(backends) as api:
        assert api == LEGACY_TF32_API
        assert backends.cuda.matmul.allow_tf32 is False and backends.cudnn.allow_tf32 is False
    assert backends.cuda.matmul.allow_tf32 is True and backends.cudnn.allow_tf32 is True
    assert "allow_tf32" in describe_tf32_off(api)


def test_torch_runner_fp32_runs_with_tf32_off(tmp_path):
    from experiments.gpu_check import small_model
    from pspnet.runner import TorchRunner

    checkpoint = small_model(tmp_path / "m.pth", "pspnet18-tiny", 3, (33, 33))
    seen = []
    with TorchRunner(checkpoint) as runner:
        runner.model.register_forward_pre_hook(lambda module, args: seen.append(
            (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)))
        runner.infer(np.zeros((1, 3, 33, 33), np.float32))
    assert seen == [("ieee", "ieee")]
    assert torch.backends.cudnn.conv.fp32_precision == "tf32"  # restored: torch's default


# ---- host copies ----

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_output_copied_in_its_own_dtype_and_widened_on_the_host(dtype):
    staging = HostStaging(pin=False)  # pinned memory needs CUDA; the copies are the same
    out = _batch(1).to(dtype)
    got = staging.download(out, synchronize=lambda: None)
    assert staging.buffers["output"].dtype == dtype  # FP16/bf16 logits travel at half the bytes
    assert got.dtype == np.float32 and np.array_equal(got, out.float().numpy())
    staging.download(out * 2, synchronize=lambda: None)
    assert np.array_equal(got, out.float().numpy())  # the returned array is not the reused buffer


def test_upload_reuses_its_buffer_and_grows_for_a_larger_batch():
    staging = HostStaging(pin=False)
    x = _batch(1).numpy()
    np.testing.assert_array_equal(staging.upload(x, "cpu").numpy(), x)
    buffer = staging.buffers["input"]
    np.testing.assert_array_equal(staging.upload(x[:1], "cpu").numpy(), x[:1])
    assert staging.buffers["input"] is buffer
    bigger = _batch(2, (4, 3, 4, 4)).numpy()
    np.testing.assert_array_equal(staging.upload(bigger, "cpu").numpy(), bigger)
    assert staging.buffers["input"].numel() == bigger.size
