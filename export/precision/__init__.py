"""Precision conversion: FP16/BF16/INT8 models made from the FP32 ONNX, verified and repaired."""
