"""Shared export fixtures: a tiny PSPNet and its verified ONNX export, made once per session."""
from __future__ import annotations

import pytest

from tests.conftest import shared_folder

pytest.register_assert_rewrite("tests.export.qdq")  # its checks fail with the values compared


@pytest.fixture(scope="session")
def tiny_model():
    """pspnet18-tiny, 5 classes, random weights with randomised BN statistics (so the outputs are not flat)."""
    import torch

    from experiments.export_report import randomize_batchnorm
    from pspnet import create_model

    torch.manual_seed(0)
    return randomize_batchnorm(create_model("pspnet18-tiny", num_classes=5)).eval()


@pytest.fixture(scope="session")
def tiny_info(tiny_model):
    from pspnet.checkpoint import info_for_config

    return info_for_config(tiny_model.config)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, tiny_model, tiny_info):
    """(path, torch_model): the tiny model exported at 65x65 with a dynamic batch, logits output, verified."""
    from export.onnx.exporter import export_onnx

    name = "pspnet18_5c_65.onnx"
    folder = shared_folder(tmp_path_factory, "tiny_onnx",
                           lambda work: export_onnx(tiny_model, tiny_info, work / name, size=(65, 65)))
    return folder / name, tiny_model


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
    from export.onnx.exporter import export_onnx
    from tests.export.scenes import SIZE

    folder = shared_folder(tmp_path_factory, "scene_onnx",
                           lambda work: export_onnx(scene_classifier, tiny_info, work / "scene.onnx", size=SIZE))
    return folder / "scene.onnx", scene_classifier, tiny_info


@pytest.fixture(scope="session")
def outlier_onnx(request, tmp_path_factory):
    """The tiny PSPNet with a separating classifier and 1000x outlier channels (experiments/outliers.py, the
    network of issue #13), exported; its FP32 function is the scene classifier's."""

    def build(work):
        import torch

        from experiments.outliers import with_outliers
        from export.onnx.exporter import export_onnx
        from tests.export.scenes import SIZE, scene_batch

        model, info = request.getfixturevalue("scene_classifier"), request.getfixturevalue("tiny_info")
        outlier = with_outliers(model, scene_batch(info, seed=60))
        batch = torch.from_numpy(scene_batch(info, seed=70))
        with torch.no_grad():
            assert (model(batch) - outlier(batch)).abs().max() < 1e-4  # function-preserving
        export_onnx(outlier, info, work / "outlier.onnx", size=SIZE)

    return shared_folder(tmp_path_factory, "outlier_onnx", build) / "outlier.onnx"


@pytest.fixture(scope="session")
def scenes_dir(tmp_path_factory):
    """12 drawn street/sea scenes of the outlier network's tests: 9 calibrate, every 4th is held out."""
    from export.scenes import write_scenes

    return shared_folder(tmp_path_factory, "scenes",
                         lambda work: write_scenes(work, [(60 + 4 * i, 80) for i in range(12)]))


FP16_LOST_STEP = 4e-4  # 1 + this rounds to 1 in FP16 (its spacing at 1 is 2 ** -10)


@pytest.fixture(scope="session")
def fp16_hostile_onnx(tiny_info, tmp_path_factory):
    """A 3-conv classifier FP16 cannot hold, while every value and weight stays far inside FP16's range (so
    AutoCast converts it all): `features` makes two equal channels f, `difference` takes (1 + d) f - f = d f
    (in FP16 its weight 1 + d rounds to 1 and the difference to 0), `classify` scales d f back up into
    nearest-centre logits 2 c_k f - c_k^2 with the centres at quantiles of f, so every class
    shows. Keeping `difference` FP32 repairs it."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from export.precision.graph import save_with_info
    from export.precision.verified import drawn_scenes
    from tests.export.scenes import SIZE

    rng = np.random.default_rng(0)
    feature = rng.normal(0, 1, (1, 3, 3, 3)).astype(np.float32)
    weights = {"features.weight": np.concatenate([feature, feature]),
               "difference.weight": np.array([[[[1 + FP16_LOST_STEP]], [[-1.0]]]], np.float32)}
    images = drawn_scenes(tiny_info, SIZE)
    padded = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)))
    f = sum(feature[0, c, i, j] * padded[:, c, i:i + SIZE[0], j:j + SIZE[1]]
            for c in range(3) for i in range(3) for j in range(3))
    centres = np.quantile(f, [0.1, 0.3, 0.5, 0.7, 0.9]).astype(np.float32)
    weights["classify.weight"] = (2 * centres / FP16_LOST_STEP).reshape(5, 1, 1, 1).astype(np.float32)
    weights["classify.bias"] = -(centres ** 2)
    nodes = [helper.make_node("Conv", ["image", "features.weight"], ["features"], name="features", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["features", "difference.weight"], ["difference"], name="difference"),
             helper.make_node("Conv", ["difference", "classify.weight", "classify.bias"], ["logits"], name="classify")]
    graph = helper.make_graph(
        nodes, "fp16_hostile", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, *SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5, *SIZE])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("fp16_hostile") / "fp16_hostile.onnx"
    info = tiny_info.with_(arch="fp16_hostile", input_size=SIZE, num_classes=5)
    return save_with_info(model, info, path)
