"""Adaptive average pooling written as two matrix products, y = P_h · x · P_wᵀ, so it exports to ONNX exactly
at any feature size (torch's exporter rejects AdaptiveAvgPool2d when the size does not divide by the bin, and
the usual fixed-kernel workaround changes the answer). Used at export time only; pspnet/ppm.py is unchanged."""
from __future__ import annotations

import copy

import torch
from torch import nn


def pooling_matrix(length, bins: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[bins, length] matrix whose row i averages positions floor(i·L/b) .. ceil((i+1)·L/b)-1, the windows
    torch's adaptive_avg_pool uses. `length` is an int, or a 0-d tensor taken from a traced shape, in
    which case the export builds the matrix in the graph (Range, comparisons, Cast, ReduceSum, Div) from the
    runtime size.
    """
    # Index arithmetic in float32 (exact for integers below 2^24): TensorRT and ONNX Runtime both take float
    # Range and comparisons, while int64 support varies between TensorRT versions.
    row = torch.arange(bins, dtype=torch.float32).unsqueeze(1)  # i, [b, 1]
    scaled = torch.arange(length, dtype=torch.float32).unsqueeze(0) * bins  # p·b, [1, L]
    # For integers: floor(i·L/b) <= p  <=>  i·L < (p+1)·b,  and  p < ceil((i+1)·L/b)  <=>  p·b < (i+1)·L.
    # Products only, no division or rounding: exact, and a short graph.
    inside = (row * length < scaled + bins) & (scaled < (row + 1) * length)
    weights = inside.to(dtype)
    return weights / weights.sum(1, keepdim=True)


class ExactAdaptiveAvgPool2d(nn.Module):
    """Drop-in for nn.AdaptiveAvgPool2d(bins) on NCHW input (`bins` an int or (rows, cols)).

    With `size=(H, W)` the matrices are constants of that feature size (a static export); with `size=None`
    they are computed from the input's shape, so one dynamic-shape ONNX model is exact at every H, W."""

    def __init__(self, bins: int | tuple[int, int], size: tuple[int, int] | None = None):
        super().__init__()
        bh, bw = (bins, bins) if isinstance(bins, int) else bins
        if bh is None or bw is None:
            raise ValueError("adaptive pooling that keeps a dimension (output size None) is not supported")
        self.bins = (int(bh), int(bw))
        self.size = tuple(int(v) for v in size) if size is not None else None
        if self.size is not None:
            self.register_buffer("rows", pooling_matrix(self.size[0], self.bins[0]), persistent=False)
            self.register_buffer("cols", pooling_matrix(self.size[1], self.bins[1]).t().contiguous(),
                                 persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size is None:
            # In a trace, shape entries are tensors: the matrices follow the runtime size.
            rows = pooling_matrix(x.shape[-2], self.bins[0], x.dtype)
            cols = pooling_matrix(x.shape[-1], self.bins[1], x.dtype).t()
        else:
            if tuple(x.shape[-2:]) != self.size:
                raise ValueError(f"pooling built for {self.size}, got feature map {tuple(x.shape[-2:])}")
            rows, cols = self.rows, self.cols
        return torch.matmul(torch.matmul(rows, x), cols)  # [b,H]·[N,C,H,W]·[W,b] -> [N,C,b,b]

    def extra_repr(self) -> str:
        return f"bins={self.bins}, size={self.size or 'dynamic'}"


def with_exact_pooling(model: nn.Module, feature_size: tuple[int, int] | None) -> nn.Module:
    """A deep copy of `model` with every AdaptiveAvgPool2d(b) replaced by ExactAdaptiveAvgPool2d; the model
    passed in is left untouched. `feature_size=None` builds the dynamic-shape variant."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.AdaptiveAvgPool2d):
                bins = child.output_size
                setattr(parent, name, ExactAdaptiveAvgPool2d(bins if isinstance(bins, int) else tuple(bins),
                                                             feature_size))
    return model
