"""The PPM-vs-FCN ablation report: per-class comparison on hand-made results, and a tiny run end to end."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from experiments.ppm_ablation import Arm, comparison, group_miou


def result(ious: dict[str, float | None]) -> dict:
    present = [v for v in ious.values() if v is not None]
    return {"miou": sum(present) / len(present),
            "classes": [{"name": n, "iou": v, "acc": v, "pixels": 0 if v is None else 10} for n, v in ious.items()]}


def test_comparison_groups_context_classes_and_skips_absent_ones():
    psp = Arm("pspnet", None, 60.0, 100, result({"sky": 0.9, "water": 0.8, "road": 0.7, "boat": 0.6,
                                                  "car": 0.5, "bird": None}))
    fcn = Arm("fcn", None, 60.0, 100, result({"sky": 0.9, "water": 0.4, "road": 0.3, "boat": 0.2,
                                               "car": 0.1, "bird": None}))
    headers, rows = comparison(psp, fcn)
    assert headers == ["class", "PSPNet IoU", "FCN IoU", "gain (pts)"]
    by_name = {r[0]: r[1:] for r in rows}
    assert "bird" not in by_name  # never in the ground truth: no IoU either side
    assert by_name["boat *"] == ["60.00", "20.00", "+40.00"] and by_name["sky"] == ["90.00", "90.00", "+0.00"]
    assert by_name["context classes *"] == ["65.00", "25.00", "+40.00"]
    assert by_name["other classes"] == ["90.00", "90.00", "+0.00"]
    assert by_name["mIoU"] == ["70.00", "38.00", "+32.00"]
    assert group_miou(psp.result, ("bird",)) != group_miou(psp.result, ("bird",))  # NaN: nothing to average


@pytest.mark.slow
def test_tiny_ablation_writes_tables(tmp_path):
    out = tmp_path / "ablation"
    cmd = [sys.executable, "-m", "experiments.ppm_ablation", str(out), "--scenes", "3", "--threads", "1", "--",
           "--arch", "pspnet18-tiny", "--iters", "2", "--scenes", "4", "--batch", "2", "--scene-size", "49",
           "--crop", "49", "--workers", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((out / "ablation.json").read_text())
    arms = summary["arms"]
    assert set(arms) == {"pspnet", "fcn"} and all(a["iterations"] == 2 for a in arms.values())
    assert summary["gap_points"] == pytest.approx(100 * (arms["pspnet"]["miou"] - arms["fcn"]["miou"]), abs=0.01)
    assert "PPM gain" in (out / "ablation.txt").read_text()
    assert (out / "ablation.md").read_text().startswith("# PPM vs FCN")
