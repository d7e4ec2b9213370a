"""From trained weights to deployable files: exact ONNX export, FP16/INT8 ONNX, TensorRT engines."""
