"""The outlier network of issue #13: a PSPNet whose FP32 function is unchanged, but where a few channels after
three BN+ReLU pairs carry 1000x larger activations (BN scale and shift of those channels x1000, the next conv's
input weights /1000). Trained networks grow such channels on their own; per-tensor INT8 cannot hold them."""
import copy

import torch

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
