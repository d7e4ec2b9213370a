"""The one ONNX Runtime session loader (Polygraphy's SessionFromOnnx): a model file, its bytes or an onnx
ModelProto, the execution providers and the options in; an InferenceSession out, its intra-op threads set by
pspcore.threads' rule. onnxruntime is imported when a session is made, so importing pspcore never needs it."""
from __future__ import annotations

import os

from pspcore.errors import InputError, PSPError, load_error
from pspcore.threads import cpu_threads

CPU = "CPUExecutionProvider"
QUIET = 3  # ONNX Runtime's log severity for errors only (its warnings about models made in memory are noise)


def session_options(threads: int | None = None, *, optimize: bool = True, quiet: bool = False):
    """SessionOptions with every graph optimisation (none for a metadata-only look: `optimize=False`) and the
    intra-op thread count of pspcore.threads: `threads`, else OMP_NUM_THREADS, else ONNX Runtime's default of a
    thread per core. Inter-op threads stay unset: they exist only in the parallel execution mode, never used
    here."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    level = ort.GraphOptimizationLevel
    options.graph_optimization_level = level.ORT_ENABLE_ALL if optimize else level.ORT_DISABLE_ALL
    threads = cpu_threads(threads)
    if threads:
        options.intra_op_num_threads = threads
    if quiet:
        options.log_severity_level = QUIET
    return options


class SessionFromOnnx:
    """Calling the loader opens a session on `model` (a path, serialized bytes or an onnx.ModelProto) with
    `providers` (names or (name, options) pairs, best first; the CPU by default) and `options` (an
    ort.SessionOptions; by default session_options(threads, optimize=..., quiet=...)). A model that does not
    load is one line: an InputError for a file the user gave, a PSPError for a model made in memory."""

    def __init__(self, model, providers=(CPU,), *, threads: int | None = None, optimize: bool = True,
                 quiet: bool = False, options=None):
        self.model, self.providers, self.options = model, list(providers), options
        self.threads, self.optimize, self.quiet = threads, optimize, quiet

    def __call__(self):
        return self.open(self.providers)

    def open(self, providers):
        """The session on `providers` (the list ONNX Runtime is given: a subclass adds each one's options)."""
        import onnxruntime as ort

        if isinstance(self.model, (str, os.PathLike)):
            source, name, error = str(self.model), str(self.model), InputError
        else:
            source = self.model if isinstance(self.model, bytes) else self.model.SerializeToString()
            name, error = "the in-memory model", PSPError
        options = self.options or session_options(self.threads, optimize=self.optimize, quiet=self.quiet)
        try:
            return ort.InferenceSession(source, options, providers=list(providers))
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/RuntimeException types
            raise load_error(name, "ONNX model", exc, error) from None
