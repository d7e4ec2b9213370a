"""Test inputs and a classifier for converted-model checks, without ModelOpt (GPU tests use them too, and must
not skip just because ModelOpt is missing): drawn scenes letterboxed like frames, and a tiny PSPNet whose
logits vary over a scene like a trained model's."""
import numpy as np
import torch

from export.scenes import draw_scene
from pspcore.model_info import ModelInfo
from pspcore.preprocess import prepare_frame

SIZE = (65, 65)


def scene_batch(info: ModelInfo, count: int = 4, seed: int = 100) -> np.ndarray:
    """Real-looking inputs: drawn scenes of several aspect ratios, letterboxed like runtime frames."""
    shapes = [(60, 90), (90, 60), (65, 65), (48, 128)]
    frames = [draw_scene(*shapes[i % len(shapes)], seed=seed + i) for i in range(count)]
    return np.stack([prepare_frame(f, info, SIZE)[0] for f in frames])


def separating_classifier(model, scenes: np.ndarray):
    """A copy of `model` whose last 1x1 conv projects the head's features on their principal directions over
    `scenes` (unit variance each): logits that vary over a scene like a trained model's, without training."""
    import copy

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
