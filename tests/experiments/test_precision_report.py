"""experiments/precision_report.py on a tiny model: the conversion runs, is timed, and the table is written."""
import pytest
from click.testing import CliRunner

pytest.importorskip("modelopt.onnx")


@pytest.mark.slow
def test_tiny_precision_report(tmp_path):
    from experiments.precision_report import main

    out = tmp_path / "precision.md"
    result = CliRunner().invoke(main, [str(tmp_path / "work"), "--arch", "pspnet18-tiny", "--size", "65",
                                       "--classes", "5", "--calib", "8", "--markdown", str(out)])
    assert result.exit_code == 0, result.output
    table = [line for line in out.read_text().splitlines() if line.startswith("| pspnet18")]
    assert len(table) == 1 and "onnxruntime" in table[0] and table[0].endswith("x |")
