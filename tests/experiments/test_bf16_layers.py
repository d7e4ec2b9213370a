"""experiments/bf16_layers: the per-layer precision report of a psp-export bf16 IR, the check a bf16 CPU runs."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

pytest.importorskip("openvino", reason="openvino is not installed (pip install '.[openvino]')")


def test_reports_every_layer_and_flags_kept_ones_in_bf16(tmp_path, monkeypatch):
    from experiments import bf16_layers
    from export.precision.targets.bf16 import cpu_has_bf16

    source = bf16_layers.fp32_onnx(tmp_path)  # the script's own default network
    result = CliRunner().invoke(bf16_layers.main, [str(source)])
    assert result.exit_code == 0, result.output
    kept = [line for line in result.output.splitlines() if " kept " in line]
    assert any(line.startswith("FullyConnected") or line.startswith("MatMul") for line in kept), result.output
    assert ("no bf16" in result.output) != cpu_has_bf16()
    # garbage: a compiled model that reports a kept layer in bf16 is refused, on any CPU
    from runtime.backends.openvino import OpenVINORunner

    real = OpenVINORunner.layer_precisions
    monkeypatch.setattr(OpenVINORunner, "layer_precisions",
                        lambda self: [(k, "bf16" if k == "FullyConnected" else p, n) for k, p, n in real(self)])
    import export.precision.targets.bf16 as target

    monkeypatch.setattr(target, "cpu_has_bf16", lambda: True)
    refused = CliRunner().invoke(bf16_layers.main, [str(source)])
    assert refused.exit_code == 1 and "kept layer(s) ran in bf16: FullyConnected" in refused.output
