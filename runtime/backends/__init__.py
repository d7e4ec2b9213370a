"""Inference backends behind one Runner interface, imported lazily so that none of their heavy packages
(onnxruntime-gpu, tensorrt, cuda-python, torch, tritonclient) is needed until that backend is used."""
from __future__ import annotations

# name -> "module:RunnerClass". Each module imports its heavy package inside the runner, not at import.
BACKENDS: dict[str, str] = {
    "onnxruntime": "runtime.backends.onnxruntime:OnnxRuntimeRunner",
    "tensorrt": "runtime.backends.tensorrt:TensorRTRunner",
    "torch": "runtime.backends.torch:TorchRunner",
    "triton": "runtime.backends.triton:TritonRunner",
}
