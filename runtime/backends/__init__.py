"""The runtime's inference backends (ONNX Runtime, TensorRT, Triton), each a pspcore.runner.Runner, registered by
name in pspcore.registry and imported only when used, so none of their heavy packages is needed until then."""
