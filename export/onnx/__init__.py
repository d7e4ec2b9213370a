"""ONNX export: PSPNet to an exact ONNX graph at any input size (pooling as averaging matrices).
The opsets live here, where psp-export's options read them without importing torch."""

OPSET = 17  # what psp-export onnx writes unless told otherwise
MIN_OPSET, MAX_OPSET = 13, 20  # 13: the Resize/ArgMax forms used here; 20: the legacy exporter's newest
