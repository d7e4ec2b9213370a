"""Test inputs and a classifier for converted-model checks, without ModelOpt (GPU tests use them too, and must
not skip just because ModelOpt is missing): drawn scenes letterboxed like frames, and a tiny PSPNet whose
logits vary over a scene like a trained model's. Defined in experiments.outliers, which builds the outlier
network from them for the experiments too."""
from experiments.outliers import SIZE, scene_batch, separating_classifier  # noqa: F401
