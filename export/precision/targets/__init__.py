"""The precision targets, one module each; each registers itself where it is defined
(export.precision.target.register_target). A new target is one more module here and its line below."""
from export.precision.targets import bf16, fp16, int8_onnxruntime, int8_openvino, int8_tensorrt  # noqa: F401
