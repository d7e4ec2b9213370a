"""The precision targets, one module each; each registers itself where it is defined
(export.precision.target.register_target). A new target is one more module here and its line below."""
# isort: off
# The import order is the registration order, which is the order the commands list the targets in (the int8
# command's default target first).
from export.precision.targets import fp16, bf16, int8_tensorrt, int8_onnxruntime, int8_openvino  # noqa: F401
# isort: on
