"""Segmentation data: the named datasets (VOC, ADE20K, Cityscapes) and list files, the reference
augmentations, the built-in context-scenes dataset, loaders."""
from pspnet.data.datasets import DATASETS, open_dataset

__all__ = ["DATASETS", "open_dataset"]
