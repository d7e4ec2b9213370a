"""GPU tests reuse the export tests' tiny PSPNet (pspnet18-tiny, 5 classes, randomised BN statistics)."""
from tests.export.conftest import tiny_info, tiny_model  # noqa: F401  (pytest fixtures)
