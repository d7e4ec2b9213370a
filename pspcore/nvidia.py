"""TensorRT and cuda-python, imported only when called: the import helpers with install advice, CUDA result
checking, the current GPU, and a TensorRT logger that keeps its messages for error reports."""
from __future__ import annotations

from pspcore.errors import BackendUnavailable, PSPError

TENSORRT_INSTALL = ("TensorRT is not installed: `pip install tensorrt` (or `pip install 'pspnet-deploy[tensorrt]'`); "
                    "it needs an NVIDIA GPU with a recent driver")
CUDA_INSTALL = ("cuda-python is not installed: `pip install cuda-python` (or `pip install 'pspnet-deploy[gpu]'`); "
                "it needs an NVIDIA GPU with a recent driver")


def import_tensorrt():
    """The tensorrt module, or BackendUnavailable saying how to install it."""
    try:
        import tensorrt
    except ImportError:
        raise BackendUnavailable(TENSORRT_INSTALL) from None
    return tensorrt


def import_cudart():
    """cuda-python's runtime API (the cuda-python 12.x/13 import path; the old `from cuda import cudart` is
    gone in 13)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        raise BackendUnavailable(CUDA_INSTALL) from None
    return cudart


def cuda_check(result, what: str):
    """Unpack a cuda-python call's (error, *values) tuple; a failure becomes a PSPError naming the call."""
    cudart = import_cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        _, text = cudart.cudaGetErrorString(err)
        raise PSPError(f"CUDA {what} failed: {text.decode() if isinstance(text, bytes) else text}")
    return values[0] if len(values) == 1 else tuple(values) if values else None


def select_device(device: int) -> None:
    """Make GPU `device` current for this thread. CUDA allocations, streams, TensorRT builders and launches
    all happen on the current device, so every call that allocates or launches selects its own first."""
    cudart = import_cudart()
    cuda_check(cudart.cudaSetDevice(int(device)), f"cudaSetDevice({device})")


# cudaGetDeviceCount errors that mean "cuda-python is installed but cannot use this machine's driver".
_DRIVER_ERRORS = ("cudaErrorInsufficientDriver", "cudaErrorSystemDriverMismatch", "cudaErrorCompatNotSupportedOnDevice",
                  "cudaErrorStubLibrary")
_NO_DEVICE_ERRORS = ("cudaErrorNoDevice", "cudaErrorDevicesUnavailable")


def cuda_unavailable_reason() -> str | None:
    """None when a CUDA GPU can be used through cuda-python, else why not, telling apart a missing package,
    a driver too old for the installed cuda-python, and a machine without a usable GPU."""
    try:
        cudart = import_cudart()
    except BackendUnavailable as exc:
        return str(exc)
    err, count = cudart.cudaGetDeviceCount()
    name = getattr(err, "name", str(err))
    if name in _DRIVER_ERRORS:
        return (f"cuda-python is installed but cannot use this NVIDIA driver ({name}): cuda-python 13 needs "
                "driver 580 or newer; update the driver, or install the cuda-python major matching it "
                "(`pip install 'cuda-python>=12.6.1,<13'` for CUDA 12 drivers)")
    if name in _NO_DEVICE_ERRORS or (err == cudart.cudaError_t.cudaSuccess and count < 1):
        return "no CUDA GPU is visible (no NVIDIA device, or CUDA_VISIBLE_DEVICES hides them all)"
    if err != cudart.cudaError_t.cudaSuccess:
        return f"CUDA cannot be used here ({name})"
    return None


def collecting_logger(trt, min_severity=None):
    """A TensorRT ILogger that keeps every message at or above `min_severity` (default WARNING), so a failed
    build or load can show TensorRT's own explanation instead of a bare None."""

    class CollectingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.min_severity = trt.ILogger.Severity.WARNING if min_severity is None else min_severity
            self.messages: list[tuple[str, str]] = []

        def log(self, severity, msg):
            if int(severity) <= int(self.min_severity):  # lower value = more severe
                self.messages.append((getattr(severity, "name", str(severity)), str(msg)))

        def text(self, last: int = 20) -> str:
            return "\n".join(f"  [{sev}] {msg}" for sev, msg in self.messages[-last:])

    return CollectingLogger()
