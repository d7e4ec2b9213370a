"""psp-train: the recipe's pieces, config files, checkpoints, exact resume, and bad input as one line."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pspcore.errors import InputError
from pspnet.checkpoint import load_model, read_checkpoint
from pspnet.factory import create_model
from pspnet.train import LAST, METRICS, Trainer, param_groups, poly_lr, train, truncate_metrics
from pspnet.train_cli import main as train_main
from pspnet.train_config import TrainConfig, make_config, read_config_file
from tests.conftest import worker_threads

TINY = dict(arch="pspnet18-tiny", scene_size=33, crop=(33, 33), scenes=8, batch=2, workers=0,
            threads=worker_threads())


def tiny(tmp_path, **changes) -> TrainConfig:
    return make_config({**TINY, "output": str(tmp_path / "run"), "iterations": 3, **changes})


def test_poly_schedule_and_head_at_ten_times_lr():
    assert poly_lr(0.01, 0, 100, 0.9) == 0.01
    assert poly_lr(0.01, 50, 100, 0.9) == pytest.approx(0.01 * 0.5 ** 0.9)
    groups = param_groups(create_model("pspnet18", 3), TrainConfig())
    assert [g["lr"] for g in groups] == [0.01, pytest.approx(0.1)]
    model = create_model("pspnet18", 3)
    groups = param_groups(model, TrainConfig())
    head_ids = {id(p) for p in groups[1]["params"]}
    assert {id(p) for p in model.cls.parameters()} <= head_ids
    assert {id(p) for p in model.ppm.parameters()} <= head_ids
    assert not {id(p) for p in model.layer4.parameters()} & head_ids


def test_config_files_yaml_json_and_unknown_keys(tmp_path):
    (tmp_path / "c.yaml").write_text("arch: pspnet18\nbatch: 4\nno-ppm: true\n")
    with pytest.raises(InputError, match="unknown config key.*no_ppm"):
        read_config_file(tmp_path / "c.yaml")
    (tmp_path / "c.json").write_text(json.dumps({"batch": 4, "crop": [65, 97], "ppm": False}))
    config = make_config(read_config_file(tmp_path / "c.json"))
    assert config.batch == 4 and config.crop == (65, 97) and not config.ppm
    (tmp_path / "bad.yaml").write_text("batch: [1\n")
    with pytest.raises(InputError, match="not valid YAML"):
        read_config_file(tmp_path / "bad.yaml")
    with pytest.raises(InputError, match="give --classes or --label-set"):
        make_config({"dataset": "train.txt"})
    assert make_config({"scene_size": 65}).scene_size == (65, 65)
    assert make_config({"scene_size": [49, 385]}).scene_size == (49, 385)
    with pytest.raises(InputError, match="scene_size must be at least 17x17"):
        make_config({"scene_size": [9, 385]})


@pytest.mark.slow
def test_panorama_training_and_evaluation(tmp_path):
    """A model trained on 33x99 panoramas records that input size, and psp-eval evaluates it on panoramas."""
    from pspnet.eval_cli import main as eval_main

    out = tmp_path / "pano"
    result = CliRunner().invoke(train_main, ["-o", str(out), "--arch", "pspnet18-tiny", "--scene-size", "33x99",
                                             "--crop", "33x99", "--scenes", "4", "--batch", "2", "--iters", "2",
                                             "--workers", "0", "--threads", str(worker_threads())])
    assert result.exit_code == 0, result.output
    assert load_model(out / "model.pth")[1].input_size == (33, 99)
    evaluated = CliRunner().invoke(eval_main, [str(out / "model.pth"), "--scenes", "2", "--json", "-"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["num_images"] == 2


@pytest.mark.slow
def test_training_writes_checkpoints_that_later_stages_read(tmp_path):
    result = train(tiny(tmp_path))
    assert result.iteration == 3 and result.stopped == "done"
    model, info = load_model(result.checkpoint)
    assert info.dataset == "context-scenes" and info.class_names[3] == "boat" and info.input_size == (33, 33)
    assert model.config.use_ppm
    last = read_checkpoint(tmp_path / "run" / LAST)  # weights_only=True inside
    assert last["iteration"] == 3 and last["epoch"] == 0 and "optimizer" in last and "rng" in last
    records = [json.loads(ln) for ln in (tmp_path / "run" / METRICS).read_text().splitlines()]
    assert records[-1]["iteration"] == 3 and np.isfinite(records[-1]["loss"])


class Killed(Exception):
    pass


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path, monkeypatch):
    """A run interrupted after its checkpoint at iteration 2 and resumed ends with the same weights, optimizer
    and lr as an uninterrupted run: iteration count, poly lr, data order, augmentation and dropout RNG."""
    straight = train(tiny(tmp_path / "a", iterations=4, save_every=2))
    original_step = Trainer.step

    def dying_step(self, net, images, target):
        if self.iteration == 3:
            raise Killed  # after the checkpoint of iteration 2, in the middle of iteration 3
        return original_step(self, net, images, target)

    monkeypatch.setattr(Trainer, "step", dying_step)
    with pytest.raises(Killed):
        train(tiny(tmp_path / "b", iterations=4, save_every=2))
    monkeypatch.setattr(Trainer, "step", original_step)
    assert read_checkpoint(tmp_path / "b" / "run" / LAST)["iteration"] == 2
    resumed = train(tiny(tmp_path / "b", iterations=4, save_every=2, resume=True))
    assert resumed.iteration == straight.iteration == 4
    a, b = read_checkpoint(tmp_path / "a" / "run" / LAST), read_checkpoint(tmp_path / "b" / "run" / LAST)
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0)
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


def test_resume_refuses_changed_settings_and_missing_checkpoint(tmp_path):
    with pytest.raises(InputError, match="no checkpoint to resume"):
        train(tiny(tmp_path, resume=True))
    train(tiny(tmp_path, iterations=1))
    with pytest.raises(InputError, match="different settings.*batch: 2 -> 4"):
        train(tiny(tmp_path, batch=4, resume=True))


def test_metrics_log_is_cut_back_to_the_checkpoint(tmp_path):
    log = tmp_path / METRICS
    log.write_text("".join(json.dumps({"iteration": i}) + "\n" for i in (2, 4, 6)))
    truncate_metrics(log, 4)
    assert [json.loads(x)["iteration"] for x in log.read_text().splitlines()] == [2, 4]


def bad_list(tmp_path, label_value=1, label_size=(20, 20)):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((20, 20, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "a_gt.png"), np.full(label_size, label_value, np.uint8))
    (tmp_path / "train.txt").write_text("a.png a_gt.png\n" * 4)
    return str(tmp_path / "train.txt")


@pytest.mark.parametrize("args, message", [
    (["--config", "missing.yaml"], "config file not found"),
    (["--dataset", "missing.txt", "--classes", "3"], "list file not found"),
    (["--resume"], "no checkpoint to resume"),
    (["--batch", "0"], "batch must be at least 1"),
    (["--arch", "pspnet7"], "unknown architecture"),
])
def test_cli_bad_input_is_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(train_main, ["-o", "run", "--workers", "0", *args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output
    assert result.output.count("\n") == 1


@pytest.mark.parametrize("workers", [0, 1])
def test_cli_bad_labels_are_one_line_even_from_a_worker(tmp_path, workers):
    args = ["-o", str(tmp_path / "run"), "--dataset", bad_list(tmp_path, label_value=9), "--classes", "3",
            "--crop", "17", "--batch", "2", "--iters", "1", "--workers", str(workers)]
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "Traceback" not in result.output
    assert "label values 9 are outside [0, 3)" in errors[0]


@pytest.mark.slow
def test_cli_config_file_and_options(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(f"output: {tmp_path / 'run'}\narch: pspnet18-tiny\nscene_size: 33\ncrop: 33\nscenes: 4\n"
                      "batch: 2\nworkers: 0\niterations: 50\nppm: false\n")
    result = CliRunner().invoke(train_main, ["--config", str(config), "--iters", "2"])  # the option wins
    assert result.exit_code == 0, result.output
    assert "iteration 2/2" in result.output
    model, info = load_model(tmp_path / "run" / "model.pth")
    assert not model.config.use_ppm and not hasattr(model, "ppm")
