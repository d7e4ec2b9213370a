"""Segmentation data: the named datasets (VOC, ADE20K, Cityscapes) and list files, the reference
augmentations, the built-in context-scenes dataset, loaders. The readers load on first use (they pull in
OpenCV), so a command can name the datasets in its options without paying for them at --help."""


def dataset_names() -> tuple[str, ...]:
    """The named datasets (voc, ade20k, cityscapes), read from their registry when called."""
    from pspnet.data.datasets import DATASETS

    return tuple(DATASETS)


def __getattr__(name: str):
    if name in ("DATASETS", "open_dataset"):
        from pspnet.data import datasets

        return getattr(datasets, name)
    raise AttributeError(f"module 'pspnet.data' has no attribute {name!r}")


__all__ = ["DATASETS", "dataset_names", "open_dataset"]
