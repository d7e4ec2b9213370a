"""The outlier network of issue #13: a PSPNet whose FP32 function is unchanged, but where a few channels after
three BN+ReLU pairs carry 1000x larger activations (BN scale and shift of those channels x1000, the next conv's
input weights /1000). Trained networks grow such channels on their own; per-tensor INT8 cannot hold them.

Also what it is built on (shared with the tests, tests/export/scenes.py): drawn scenes letterboxed like frames,
and a tiny PSPNet whose classifier makes logits vary over a scene like a trained model's."""
import copy
import os

import numpy as np
import torch

from export.scenes import draw_scene
from pspcore.model_info import ModelInfo
from pspcore.preprocess import prepare_frame

SIZE = (65, 65)  # the tiny networks' input size

# Three BN -> ReLU -> conv pairs: the stem's first, the first block's, and the head's. An untrained network's
# labels barely depend on its early layers (at 65x65 its 9x9 features are mostly a pattern fixed by padding),
# so on the tiny test model the head's pair is the one whose damage the labels show.
PAIRS = (("layer0.1", "layer0.3"), ("layer1.0.bn1", "layer1.0.conv2"), ("cls.1", "cls.4"))
# The issue's own network: three early pairs, whose damage a trained network's labels show.
EARLY_PAIRS = (("layer0.1", "layer0.3"), ("layer0.4", "layer0.6"), ("layer1.0.bn1", "layer1.0.conv2"))


def with_outliers(model, images, scale: float = 1000.0, channels: int = 4, pairs=PAIRS):
    """A copy of `model` with the `channels` most active channels (post-ReLU mean on `images`) of each pair
    rescaled as above."""
    model = copy.deepcopy(model).eval()
    activity = {}
    hooks = [model.get_submodule(bn).register_forward_hook(
        lambda module, inputs, output, bn=bn: activity.__setitem__(bn, output.relu().mean((0, 2, 3))))
        for bn, _ in pairs]
    with torch.no_grad():
        model(torch.as_tensor(images))
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        for bn_name, conv_name in pairs:
            bn, conv = model.get_submodule(bn_name), model.get_submodule(conv_name)
            chosen = torch.argsort(activity[bn_name], descending=True)[:channels]
            bn.weight[chosen] *= scale
            bn.bias[chosen] *= scale
            conv.weight[:, chosen] /= scale
    return model


def scene_batch(info: ModelInfo, count: int = 4, seed: int = 100, size: tuple[int, int] = SIZE) -> np.ndarray:
    """Real-looking inputs: drawn scenes of several aspect ratios, letterboxed like runtime frames."""
    shapes = [(60, 90), (90, 60), (65, 65), (48, 128)]
    frames = [draw_scene(*shapes[i % len(shapes)], seed=seed + i) for i in range(count)]
    return np.stack([prepare_frame(f, info, size)[0] for f in frames])


def separating_classifier(model, scenes: np.ndarray):
    """A copy of `model` whose last 1x1 conv projects the head's features on their principal directions over
    `scenes` (unit variance each): logits that vary over a scene like a trained model's, without training."""
    model = copy.deepcopy(model).eval()
    features = []
    hook = model.cls[4].register_forward_hook(lambda module, inputs, output: features.append(inputs[0]))
    with torch.no_grad():
        model(torch.from_numpy(scenes))
    hook.remove()
    flat = features[0].permute(0, 2, 3, 1).reshape(-1, features[0].shape[1])
    mean = flat.mean(0)
    _, singular, directions = torch.linalg.svd(flat - mean, full_matrices=False)
    k = model.cls[4].out_channels
    weight = directions[:k] / singular[:k, None] * len(flat) ** 0.5
    with torch.no_grad():
        model.cls[4].weight.copy_(weight[:, :, None, None])
        model.cls[4].bias.copy_(-(weight @ mean))
    return model


def export_outlier_network(path: str | os.PathLike):
    """The outlier network of tests/export/test_verified.py's `outlier_onnx`, built the same way (tiny PSPNet-18,
    5 classes, seed 0, randomised BN; separating classifier; outlier channels) and exported to `path` at SIZE."""
    from experiments.export_report import randomize_batchnorm
    from export.onnx.exporter import export_onnx
    from pspnet import create_model
    from pspnet.checkpoint import info_for_config

    torch.manual_seed(0)
    tiny = randomize_batchnorm(create_model("pspnet18", num_classes=5)).eval()
    info = info_for_config(tiny.config)
    classifier = separating_classifier(tiny, scene_batch(info, seed=50))
    return export_onnx(with_outliers(classifier, scene_batch(info, seed=60)), info, path, size=SIZE).path
