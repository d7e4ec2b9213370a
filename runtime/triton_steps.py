"""The python-backend models of a Triton repository written by `psp-export triton --ensemble` or
`--platform python`. They run inside Triton's stub process (each repository model.py is two lines that
import a class from here), with this project installed in the server's Python environment, so the served
ensemble pre- and post-processes with the very functions psp-infer uses locally and gives the same labels.

`triton_python_backend_utils` exists only inside the server, so it is imported in `initialize`."""
from __future__ import annotations

import json
import os

import numpy as np

from pspcore.model_info import ModelInfo
from pspcore.onnx_session import SessionFromOnnx
from pspcore.preprocess import Letterbox, prepare_rgb
from runtime.postprocess import labels_to_frame, to_labels

MODEL_PY = '''"""Triton python-backend model written by psp-export triton: {doc}"""
import sys

sys.dont_write_bytecode = True  # the stub would otherwise write __pycache__ into the model repository

from runtime.triton_steps import {cls} as TritonPythonModel  # noqa: E402,F401
'''


def model_py(cls: str, doc: str) -> str:
    """The model.py that serves `cls` from this module."""
    return MODEL_PY.format(cls=cls, doc=doc)


def parameters(args: dict) -> dict[str, str]:
    """The string parameters of the model's config.pbtxt (psp-export triton writes ModelInfo there)."""
    config = json.loads(args["model_config"])
    return {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}


class _DLPack:
    """A stub tensor seen through DLPack. The stub's own Tensor(name, array) and as_numpy() read numpy's dtype
    descriptor at its numpy 1.x layout and get byte sizes and values wrong under numpy 2; DLPack does not
    depend on that layout, so tensors cross the stub correctly with either numpy."""

    def __init__(self, tensor):
        self.tensor = tensor

    def __dlpack__(self, **_):
        return self.tensor.to_dlpack()

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU


class _Step:
    """What the three steps share: the backend utilities, tensors in and out, and answering with an error."""

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        self.params = parameters(args)

    def input(self, request, name: str) -> np.ndarray:
        return np.from_dlpack(_DLPack(self.pb.get_input_tensor_by_name(request, name)))

    def output(self, name: str, array: np.ndarray):
        return self.pb.Tensor.from_dlpack(name, np.ascontiguousarray(array))

    def error(self, message: str):
        """A response carrying `message` as a client error (400 / INVALID_ARGUMENT where supported)."""
        code = getattr(self.pb.TritonError, "INVALID_ARG", None)
        error = self.pb.TritonError(message, code) if code is not None else self.pb.TritonError(message)
        return self.pb.InferenceResponse(output_tensors=[], error=error)

    def execute(self, requests):
        return [self.answer(r) for r in requests]  # each step defines answer(request)


class PreprocessStep(_Step):
    """One RGB uint8 image [H, W, 3] of any size -> network input [1, 3, h, w] (letterbox, mean/std from the
    model's metadata) and box = (H, W, rh, rw) for the postprocess step."""

    def initialize(self, args: dict) -> None:
        super().initialize(args)
        self.info = ModelInfo.from_props(self.params) or ModelInfo()
        self.size = tuple(self.info.input_size)

    def answer(self, request):
        image = self.input(request, "image")
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
            return self.error(f"image must be H x W x 3 uint8 RGB with H, W >= 1, got shape {list(image.shape)}")
        tensor, box = prepare_rgb(image, self.info, self.size)
        corners = np.array([*box.frame_size, *box.resized], np.int32)
        return self.pb.InferenceResponse(output_tensors=[self.output("input", tensor[None]),
                                                         self.output("box", corners)])


def frame_labels(scores: np.ndarray, box: np.ndarray, num_classes: int = 0) -> np.ndarray:
    """Scores [1, C, h, w] (or labels [1, h, w] of a model with `num_classes` classes) and a box (H, W, rh, rw)
    -> labels [H, W] in pspcore.label_maps' type (what the ensemble's `labels` output declares)."""
    labels = to_labels(scores, num_classes)[0]
    height, width, rh, rw = (int(v) for v in box)
    return np.ascontiguousarray(labels_to_frame(labels, Letterbox((height, width), labels.shape, (rh, rw))))


class PostprocessStep(_Step):
    """The model's scores and the preprocess box -> a label map at the image's own size."""

    def initialize(self, args: dict) -> None:
        super().initialize(args)
        self.info = ModelInfo.from_props(self.params) or ModelInfo()

    def answer(self, request):
        scores = self.input(request, "scores")
        box = self.input(request, "box")
        try:
            labels = frame_labels(scores, box, self.info.num_classes)
        except Exception as exc:  # a box that does not fit the scores: answer this request, keep serving
            return self.error(f"postprocess failed: {exc}")
        return self.pb.InferenceResponse(output_tensors=[self.output("labels", labels)])


class OnnxStep(_Step):
    """ONNX Runtime (CPU) on the exported model, for servers without the onnxruntime backend (the one in the
    nvidia-pytriton wheel). Requests merged by Triton's dynamic batcher run as one ONNX Runtime call."""

    def initialize(self, args: dict) -> None:
        super().initialize(args)
        folder = os.path.join(args["model_repository"], args["model_version"])
        threads = int(self.params.get("intra_op_threads") or 0) or None  # 0: pspcore.threads' rule in the server
        self.session = SessionFromOnnx(os.path.join(folder, self.params.get("onnx_file", "model.onnx")),
                                       threads=threads)()
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def execute(self, requests):
        arrays = [self.input(r, self.input_name) for r in requests]
        try:
            scores = self.session.run([self.output_name], {self.input_name: np.concatenate(arrays)})[0]
        except Exception as exc:  # a failed batch: each of its requests gets the error, the server keeps serving
            return [self.error(f"onnxruntime failed: {exc}") for _ in requests]
        bounds = np.cumsum([0] + [len(a) for a in arrays])
        return [self.pb.InferenceResponse(output_tensors=[
            self.output(self.output_name, scores[a:b])])
            for a, b in zip(bounds[:-1], bounds[1:])]

    def finalize(self) -> None:
        self.session = None
