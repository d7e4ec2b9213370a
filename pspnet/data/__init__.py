"""Segmentation data: list files, the reference augmentations, the built-in context-scenes dataset, loaders."""
