"""psp-train and psp-eval on VOC, ADE20K and Cityscapes trees as downloaded: a short run on each, and the
one-line errors a user meets with a wrong root, an empty split, a missing label or a colour label."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pspcore.model_info import ModelInfo
from pspnet.checkpoint import read_checkpoint
from pspnet.eval_cli import main as eval_main
from pspnet.labels import LABEL_SETS
from pspnet.train_cli import main as train_main
from tests.pspnet.dataset_trees import VOC_SPLITS, make_ade20k, make_cityscapes, make_voc

TREES = {"voc": lambda base: make_voc(base, VOC_SPLITS)[0], "ade20k": lambda base: make_ade20k(base)[0],
         "cityscapes": lambda base: make_cityscapes(base)[0]}
CLASSES = {"voc": 21, "ade20k": 150, "cityscapes": 19}
TRAIN = ["--arch", "pspnet18-tiny", "--crop", "33", "--iters", "2", "--batch", "2", "--workers", "0", "--device",
         "cpu", "--no-amp"]


def run(main, args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TREES))
def test_train_then_eval_on_each_dataset(tmp_path, name):
    root, out = TREES[name](tmp_path), tmp_path / "run"
    trained = run(train_main, ["--dataset", name, "--data-root", str(root), *TRAIN, "-o", str(out)])
    assert trained.exit_code == 0, trained.output
    info = ModelInfo.from_dict(read_checkpoint(out / "model.pth")["info"])  # names and official palette travel
    assert (info.dataset, info.class_names, info.palette) == (name, LABEL_SETS[name].class_names,
                                                              LABEL_SETS[name].palette)
    evaluated = run(eval_main, [str(out / "model.pth"), "--dataset", name, "--data-root", str(root),
                                "--split", "val", "--mode", "slide", "--flip", "--base-size", "40", "--json", "-"])
    assert evaluated.exit_code == 0, evaluated.output
    result = json.loads(evaluated.stdout)
    assert len(result["classes"]) == CLASSES[name]
    assert [c["name"] for c in result["classes"]] == list(LABEL_SETS[name].class_names)
    assert result["mode"] == "slide 33x33 + flip + base size 40"
    assert result["num_images"] == (2 if name == "ade20k" else 1)


def one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in result.output and len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], result.output


def voc_model(path):
    """A PSPNet-18 checkpoint for VOC's 21 classes (random weights): psp-eval must get past the model to the data."""
    import torch

    from pspnet import create_model, save_checkpoint
    from pspnet.checkpoint import info_for_config

    torch.manual_seed(0)
    model = create_model("pspnet18-tiny", num_classes=21).eval()
    return save_checkpoint(path, model, info_for_config(model.config, "voc"))


def test_wrong_root_empty_split_and_missing_label_are_one_line_errors(tmp_path):
    root = make_voc(tmp_path, {**VOC_SPLITS, "empty": []})[0]
    args = [*TRAIN, "-o", str(tmp_path / "run")]
    one_line_error(run(train_main, ["--dataset", "voc", "--data-root", str(tmp_path), *args]),
                   "not a Pascal VOC2012 folder: expected JPEGImages/", f"did you mean {root}?")
    one_line_error(run(train_main, ["--dataset", "voc", "--data-root", str(root), "--split", "empty", *args]),
                   "split 'empty' of Pascal VOC2012 is empty")
    one_line_error(run(train_main, ["--dataset", "cityscapes", *args]), "needs --data-root")
    (root / "SegmentationClass" / "2007_000033.png").unlink()
    one_line_error(run(eval_main, [str(voc_model(tmp_path / "model.pth")), "--dataset", "voc", "--data-root",
                                   str(root)]), "no label for image", "2007_000033")
    ade = make_ade20k(tmp_path / "ade")[0]
    next((ade / "annotations" / "validation").glob("*.png")).unlink()
    one_line_error(run(train_main, ["--dataset", "ade20k", "--data-root", str(ade), "--split", "val", *args]),
                   "no label for image", "ADE_val_")


def test_colour_labels_in_a_list_file_keep_their_error(tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((40, 40, 3), np.uint8))
    Image.fromarray(np.full((40, 40, 3), (128, 0, 0), np.uint8)).save(tmp_path / "a_gt.png")
    (tmp_path / "train.txt").write_text("a.png a_gt.png\na.png a_gt.png\n")
    result = run(train_main, ["--dataset", str(tmp_path / "train.txt"), "--classes", "3", *TRAIN,
                              "-o", str(tmp_path / "run")])
    one_line_error(result, "a_gt.png is a colour image (Pillow mode RGB); labels must be single-channel class "
                           "indices (255 = ignore), or palette PNGs")


def test_fixed_size_export_on_a_named_dataset_slides_windows_of_its_size(tmp_path):
    """The default export is fixed-size; VOC images are not: psp-eval evaluates in windows of the model's size
    (semseg's protocol) by default, and a forced whole-image run names the option that fixes it."""
    from tests.runtime.conftest import make_onnx, tiny_info

    root = make_voc(tmp_path, VOC_SPLITS)[0]
    model = make_onnx(tmp_path / "fixed.onnx", num_classes=21, size=(16, 16),
                      info=tiny_info(21, (16, 16), dataset="voc"))
    out = tmp_path / "result.json"
    result = run(eval_main, [str(model), "--dataset", "voc", "--data-root", str(root), "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["mode"] == "slide 16x16 + base size 512" and data["num_images"] == 1
    assert "mIoU" in result.stdout  # the table still goes to stdout when the JSON goes to a file
    whole = run(eval_main, [str(model), "--dataset", "voc", "--data-root", str(root), "--mode", "whole"])
    one_line_error(whole, "takes 16x16 inputs", "pass --mode slide")
    crop = run(eval_main, [str(model), "--dataset", "voc", "--data-root", str(root), "--mode", "slide",
                           "--crop", "24"])
    one_line_error(crop, "takes 16x16 inputs only, not 24x24",
                   "--crop 24x24 needs a model exported with a dynamic shape")
