"""ONNX export: PSPNet to an exact ONNX graph at any input size (pooling as averaging matrices)."""
