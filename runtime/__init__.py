"""Inference without torch: backends, pre/post-processing and video for exported PSPNet models."""
