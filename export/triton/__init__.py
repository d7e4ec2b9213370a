"""Triton Inference Server model repositories for exported models."""
