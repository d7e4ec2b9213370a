"""A tiny PSPNet trained for a few seconds to segment drawn scenes by brightness: labels that follow the
input with real margins between classes, unlike an untrained network's (whose labels are a pattern fixed by
position, the same for any input, so that no conversion check on them can fail)."""
import numpy as np
import torch

from export.parity import draw_scene
from pspcore.model_info import ModelInfo
from pspcore.preprocess import prepare_frame

SIZE = (65, 65)


def training_scenes(info: ModelInfo, count: int = 16, seed: int = 0) -> np.ndarray:
    """Drawn scenes of varied aspect ratios, letterboxed like frames: [count, 3, 65, 65] float32."""
    shapes = [(60, 90), (90, 60), (65, 65), (48, 128), (70, 80)]
    frames = [draw_scene(*shapes[i % len(shapes)], seed=seed + i) for i in range(count)]
    return np.stack([prepare_frame(f, info, SIZE)[0] for f in frames])


def brightness_labels(batch: np.ndarray, classes: int) -> np.ndarray:
    """Per-pixel class: the brightness (mean of the normalised channels) cut at fixed quantiles."""
    brightness = batch.mean(1)
    edges = np.quantile(brightness, np.linspace(0, 1, classes + 1)[1:-1])
    return np.digitize(brightness, edges).astype(np.int64)


def train_briefly(model, info: ModelInfo, steps: int = 40, seed: int = 0):
    """`model` (in place, returned in eval mode) after `steps` Adam steps on brightness segmentation."""
    torch.manual_seed(seed)
    scenes = training_scenes(info, seed=seed)
    labels = torch.from_numpy(brightness_labels(scenes, info.num_classes))
    images = torch.from_numpy(scenes)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for step in range(steps):
        pick = torch.randperm(len(images))[:4]
        output = model(images[pick])
        logits = output[0] if isinstance(output, tuple) else output
        loss = torch.nn.functional.cross_entropy(logits, labels[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()
