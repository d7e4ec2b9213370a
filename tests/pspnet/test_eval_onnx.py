"""psp-eval on an exported ONNX model: it runs through ONNX Runtime (the registry's backend for .onnx) and scores
what the checkpoint it came from scores, on the same images."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pspnet.eval_cli import main as eval_main


def scores(model, *extra: str) -> dict:
    result = CliRunner().invoke(eval_main, [str(model), "--scenes", "3", "--json", "-", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def trained_pair(tmp_path_factory):
    """A PSPNet-18 checkpoint for the context-scenes set (random weights, randomised BN so the outputs vary)
    and its ONNX export at 65x65."""
    import torch

    from experiments.export_report import randomize_batchnorm
    from export.onnx.exporter import export_onnx
    from pspcore.model_info import ModelInfo
    from pspnet.checkpoint import save_checkpoint
    from pspnet.factory import create_model
    from pspnet.labels import get_label_set

    labels = get_label_set("context-scenes")
    info = ModelInfo(arch="pspnet18-tiny", num_classes=6, class_names=labels.class_names, palette=labels.palette,
                     input_size=(65, 65), dataset="context-scenes")
    torch.manual_seed(0)
    model = randomize_batchnorm(create_model("pspnet18-tiny", 6)).eval()
    folder = tmp_path_factory.mktemp("eval_onnx")
    checkpoint = save_checkpoint(folder / "model.pth", model, info)
    export_onnx(model, info, folder / "model.onnx", size=(65, 65), verify=False)  # the scores compare
    return checkpoint, folder / "model.onnx"


def test_psp_eval_scores_an_onnx_model_like_its_checkpoint(trained_pair):
    checkpoint, onnx_model = trained_pair
    served, reference = scores(onnx_model), scores(checkpoint, "--device", "cpu")
    assert served["num_images"] == reference["num_images"] == 3
    assert [c["name"] for c in served["classes"]] == [c["name"] for c in reference["classes"]]
    # Fractions; ONNX Runtime and torch may break a rare argmax tie differently.
    assert served["miou"] == pytest.approx(reference["miou"], abs=0.005)
    assert served["allacc"] == pytest.approx(reference["allacc"], abs=0.005)
    assert 0 < served["allacc"] < 1  # neither all right nor all wrong: a meaningful comparison
