"""psp-train as separate processes: two gloo processes under torchrun, and a run killed with SIGKILL."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pspnet.checkpoint import read_checkpoint

BIN = Path(sys.executable).parent
TINY = ["--arch", "pspnet18-tiny", "--scene-size", "33", "--crop", "33", "--scenes", "8", "--workers", "0",
        "--threads", "1"]


def env_one_thread():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_two_gloo_processes_with_torchrun(tmp_path):
    out = tmp_path / "ddp"
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "pspnet.train_cli",
           "-o", str(out), *TINY, "--batch", "4", "--iters", "2", "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env_one_thread(),
                          cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("images/s") == 1  # one report for the group, from rank 0
    last = read_checkpoint(out / "last.pth")
    assert last["iteration"] == 2 and last["train_config"]["batch"] == 4
    # 8 scenes, 2 processes, 2 images each per step: 2 iterations make one epoch.
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 1
    assert not any(k.startswith("module.") for k in last["state_dict"])


@pytest.mark.slow
def test_killed_run_keeps_a_valid_checkpoint_and_resumes(tmp_path):
    out = tmp_path / "run"
    cmd = [str(BIN / "psp-train"), "-o", str(out), *TINY, "--batch", "2", "--iters", "12", "--save-every", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env_one_thread())
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "last.pth").exists() and read_checkpoint(out / "last.pth")["iteration"] >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)  # mid-run, possibly mid-save
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = read_checkpoint(out / "last.pth")["iteration"]  # loads: never a half-written file
    assert killed_at >= 2
    resume = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300, env=env_one_thread())
    assert resume.returncode == 0, resume.stderr[-3000:]
    assert read_checkpoint(out / "last.pth")["iteration"] == 12
    assert not list(out.glob(".*.partial"))
    iterations = [json.loads(x)["iteration"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert iterations == sorted(iterations) and iterations[-1] == 12
    assert torch.isfinite(read_checkpoint(out / "model.pth")["state_dict"]["cls.4.weight"]).all()
