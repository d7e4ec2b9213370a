"""TensorRT and cuda-python, imported only when called: the import helpers with install advice, CUDA result
checking, the current GPU, and a TensorRT logger that keeps its messages for error reports."""
from __future__ import annotations

from pspcore.errors import BackendUnavailable, PSPError

TENSORRT_INSTALL = ("TensorRT is not installed: `pip install tensorrt` (or `pip install 'pspnet-deploy[tensorrt]'`), "
                    "the CUDA 13 build, which needs NVIDIA driver r580 or newer; for a CUDA 12 driver "
                    "`pip install tensorrt-cu12`")
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
        # Reported here: clear it as the thread's last error, or the next kernel launch (TensorRT checks) fails too.
        cudart.cudaGetLastError()
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
# The oldest driver branch each CUDA major runs on (TensorRT's pip wheels: r535+ for -cu12, r580+ for -cu13).
MIN_DRIVER = {12: "r535", 13: "r580"}
NO_DRIVER = ("no NVIDIA driver is installed or loaded on this machine (the CUDA runtime finds none): install the "
             "NVIDIA driver (r580 or newer for the CUDA 13 packages) on a machine with an NVIDIA GPU")


def driver_cuda_version(cudart) -> int:
    """The newest CUDA version the installed driver supports, as 1000*major + 10*minor (13000 = 13.0); 0 when
    there is no driver."""
    err, version = cudart.cudaDriverGetVersion()
    return int(version) if err == cudart.cudaError_t.cudaSuccess else 0


def _dotted(version: int) -> str:
    return f"{version // 1000}.{version % 1000 // 10}"


def cuda_unavailable_reason() -> str | None:
    """None when a CUDA GPU can be used through cuda-python, else why not, telling apart a missing package,
    no driver at all, a driver too old for the installed cuda-python, and a machine without a usable GPU."""
    try:
        cudart = import_cudart()
    except BackendUnavailable as exc:
        return str(exc)
    err, count = cudart.cudaGetDeviceCount()
    name = getattr(err, "name", str(err))
    if name in _DRIVER_ERRORS:
        # Without any driver the runtime also says "insufficient driver"; the driver version (0) tells them apart.
        driver = driver_cuda_version(cudart)
        if driver == 0:
            return NO_DRIVER
        return (f"cuda-python is installed but cannot use this NVIDIA driver ({name}; the driver supports CUDA "
                f"{_dotted(driver)}): cuda-python 13 needs driver r580 or newer; update the driver, or install "
                "the cuda-python major matching it (`pip install 'cuda-python>=12.6.1,<13'` for CUDA 12 drivers)")
    if name in _NO_DEVICE_ERRORS or (err == cudart.cudaError_t.cudaSuccess and count < 1):
        return "no CUDA GPU is visible (no NVIDIA device, or CUDA_VISIBLE_DEVICES hides them all)"
    if err != cudart.cudaError_t.cudaSuccess:
        return f"CUDA cannot be used here ({name})"
    return None


def tensorrt_cuda_major(distributions: dict[str, list[str]] | None = None) -> int | None:
    """The CUDA major the installed TensorRT was built for, read from its pip distributions (tensorrt-cu12,
    tensorrt-cu13 and their -libs/-bindings); None when it cannot be told (a tar or deb install, or both
    majors installed). `distributions`: top-level module -> distribution names (importlib.metadata's
    packages_distributions, the default)."""
    import re

    if distributions is None:
        from importlib.metadata import packages_distributions

        distributions = packages_distributions()
    names = {d for module, dists in distributions.items() if module.startswith("tensorrt") for d in dists}
    majors = {int(m.group(1)) for d in names if (m := re.search(r"tensorrt[-_]cu(\d+)", d.lower()))}
    return majors.pop() if len(majors) == 1 else None


def tensorrt_driver_reason(tensorrt_version: str, cuda_major: int | None = None) -> str | None:
    """Why the installed TensorRT cannot run on this driver (its CUDA major is newer than the driver
    supports), naming the package to install instead; None when it can or when its CUDA major is unknown."""
    cuda_major = tensorrt_cuda_major() if cuda_major is None else cuda_major
    if cuda_major is None:
        return None
    driver = driver_cuda_version(import_cudart())
    if driver == 0:
        return NO_DRIVER
    if driver // 1000 >= cuda_major:
        return None
    fallback = driver // 1000
    advice = (f"install the CUDA {fallback} build: `pip uninstall -y tensorrt tensorrt-cu{cuda_major} "
              f"tensorrt-cu{cuda_major}-bindings tensorrt-cu{cuda_major}-libs && pip install tensorrt-cu{fallback}`"
              if fallback in MIN_DRIVER else "no TensorRT build supports a driver this old")
    return (f"TensorRT {tensorrt_version} is the CUDA {cuda_major} build (tensorrt-cu{cuda_major}), which needs "
            f"NVIDIA driver {MIN_DRIVER.get(cuda_major, 'for CUDA ' + str(cuda_major))} or newer; this driver "
            f"supports CUDA {_dotted(driver)}: update the driver, or {advice}")


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
