"""TensorRT engines built from the (precision-carrying) ONNX models."""
