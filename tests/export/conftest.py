"""Shared export fixtures: a tiny PSPNet and its verified ONNX export, made once per session."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model():
    """pspnet18, 5 classes, random weights with randomised BN statistics (so the outputs are not flat)."""
    import torch

    from experiments.export_report import randomize_batchnorm
    from pspnet import create_model

    torch.manual_seed(0)
    return randomize_batchnorm(create_model("pspnet18", num_classes=5)).eval()


@pytest.fixture(scope="session")
def tiny_info(tiny_model):
    from pspnet.checkpoint import info_for_config

    return info_for_config(tiny_model.config)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, tiny_model, tiny_info):
    """(path, torch_model): the tiny model exported at 65x65 with a dynamic batch, logits output, verified."""
    from export.onnx import export_onnx

    path = tmp_path_factory.mktemp("tiny_onnx") / "pspnet18_5c_65.onnx"
    export_onnx(tiny_model, tiny_info, path, size=(65, 65))
    return path, tiny_model


@pytest.fixture(scope="session")
def scene_classifier(tiny_model, tiny_info):
    """The tiny PSPNet with a separating classifier (tests.export.scenes): logits that vary over a scene like a
    trained model's. Shared by the precision and verified-conversion tests, which build on the same network."""
    from tests.export.scenes import scene_batch, separating_classifier

    return separating_classifier(tiny_model, scene_batch(tiny_info, seed=50))


@pytest.fixture(scope="session")
def scene_onnx(scene_classifier, tiny_info, tmp_path_factory):
    """(path, model, info): scene_classifier exported to ONNX at the scenes' size. A random classifier's logits
    barely differ between classes (nearly one argmax everywhere), which says nothing about a conversion."""
    from export.onnx import export_onnx
    from tests.export.scenes import SIZE

    path = tmp_path_factory.mktemp("scene_onnx") / "scene.onnx"
    export_onnx(scene_classifier, tiny_info, path, size=SIZE)
    return path, scene_classifier, tiny_info
