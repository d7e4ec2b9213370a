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
