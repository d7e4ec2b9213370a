import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from export.onnx.pooling import ExactAdaptiveAvgPool2d, pooling_matrix, with_exact_pooling
from pspnet.ppm import PPM

SHAPES = [(h, w, b) for h, w in [(1, 1), (5, 3), (7, 11), (8, 16), (9, 9), (13, 6), (60, 60), (64, 128),
                                 (90, 90), (47, 61)] for b in (1, 2, 3, 6)]


@pytest.mark.parametrize("h,w,b", SHAPES)
def test_matches_adaptive_avg_pool(h, w, b):
    x = torch.randn(2, 3, h, w, dtype=torch.float64)
    expected = F.adaptive_avg_pool2d(x, b)
    static = ExactAdaptiveAvgPool2d(b, (h, w)).double()
    dynamic = ExactAdaptiveAvgPool2d(b)
    assert torch.allclose(static(x), expected, atol=1e-12)
    assert torch.allclose(dynamic(x), expected, atol=1e-12)


@pytest.mark.parametrize("length,bins", [(7, 6), (11, 6), (9, 3), (1, 6), (100, 6), (5, 2)])
def test_matrix_rows_are_the_torch_windows(length, bins):
    p = pooling_matrix(length, bins, torch.float64)
    assert p.shape == (bins, length)
    assert torch.allclose(p.sum(1), torch.ones(bins, dtype=torch.float64))
    for i in range(bins):
        start, end = (i * length) // bins, -((-(i + 1) * length) // bins)
        support = torch.nonzero(p[i]).flatten().tolist()
        assert support == list(range(start, end))


def test_rectangular_bins_and_static_size_check():
    x = torch.randn(1, 4, 7, 11)
    pool = ExactAdaptiveAvgPool2d((2, 3), (7, 11))
    assert torch.allclose(pool(x), F.adaptive_avg_pool2d(x, (2, 3)), atol=1e-6)
    with pytest.raises(ValueError, match="built for"):
        pool(torch.randn(1, 4, 9, 9))


@pytest.mark.parametrize("size", [(7, 11), None])
def test_swap_replaces_every_ppm_pool_in_a_copy(size):
    model = PPM(8, 2, (1, 2, 3, 6)).eval()
    swapped = with_exact_pooling(model, size)
    assert sum(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules()) == 4  # original untouched
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in swapped.modules())
    pools = [m for m in swapped.modules() if isinstance(m, ExactAdaptiveAvgPool2d)]
    assert [p.bins for p in pools] == [(1, 1), (2, 2), (3, 3), (6, 6)] and all(p.size == size for p in pools)
    x = torch.randn(2, 8, 7, 11)
    with torch.no_grad():
        assert torch.allclose(swapped(x), model(x), atol=1e-6)


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript")
def test_dynamic_pooling_exports_small_and_exact_at_any_size():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    buffer = io.BytesIO()
    torch.onnx.export(ExactAdaptiveAvgPool2d(6), (torch.randn(1, 4, 7, 11),), buffer, dynamo=False,
                      opset_version=17, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
    graph = onnx.load_from_string(buffer.getvalue()).graph
    real_ops = [n for n in graph.node if n.op_type != "Constant"]
    assert len(real_ops) <= 40, [n.op_type for n in real_ops]  # tens of nodes, not a decomposition
    assert "AveragePool" not in {n.op_type for n in graph.node}
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for n, h, w in [(1, 7, 11), (3, 13, 5), (2, 60, 60), (1, 64, 128)]:
        x = torch.randn(n, 4, h, w)
        got = session.run(None, {"x": x.numpy()})[0]
        np.testing.assert_allclose(got, F.adaptive_avg_pool2d(x, 6).numpy(), atol=1e-6)
