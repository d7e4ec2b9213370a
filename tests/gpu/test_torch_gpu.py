"""The PyTorch GPU path of experiments.gpu_check on a real CUDA device (no TensorRT needed): every variant
(FP32 with TF32 off, FP16/bf16 autocast, channels_last, CUDA graphs) within its gate against PyTorch FP32 on
the CPU, a graph replayed on a new input equal to eager on it. Skipped without a CUDA device."""
import json

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device visible to torch", allow_module_level=True)


def test_torch_variants_on_the_gpu(tmp_path):
    from experiments.gpu_check import GpuCheckConfig, run_gpu_check
    from experiments.gpu_torch import PASSED, VARIANTS

    config = GpuCheckConfig(size=(129, 129), num_inputs=4, duration_s=0.3, matmul_n=4096, workdir=tmp_path)
    report = run_gpu_check(config, log=print)
    json.dumps(report)
    checks = report["torch"]["checks"]
    assert [c["variant"]["name"] for c in checks] == [v.name for v in VARIANTS]
    assert all(c["status"] == PASSED for c in checks), [c["detail"] for c in checks]
    graphs = next(c for c in checks if c["variant"]["cuda_graphs"])
    assert graphs["replay"]["passed"] and graphs["latency_ms"]["median"] > 0
    assert report["torch"]["bf16_matmul_tflops"] > 0 and not report["torch"]["errors"]
    assert report["torch"]["tf32"].startswith("TF32 off")
