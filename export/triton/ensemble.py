"""The image -> labels ensemble of `psp-export triton --ensemble`: a python `preprocess` step (RGB uint8
image of any size -> letterboxed, normalised network input), the model step, and a python `postprocess` step
(argmax -> label map at the image's size). Clients send an image and get a uint8 label map back instead of
C x H x W float logits; the steps run runtime.triton_steps, the same code as psp-infer."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from export.triton.config import VERSION, config_text, model_config_pb2, python_config, tensor_message
from pspcore.errors import InputError
from pspcore.geometry import resolve_input_size
from pspcore.label_maps import label_dtype
from pspcore.model_info import ModelInfo
from pspcore.runner import InputSpec
from pspcore.tensor_types import numpy_to_triton
from runtime.triton_steps import model_py

MODEL_SUFFIX = "_model"
IMAGE, LABELS = "image", "labels"


def _set_info(config, info: ModelInfo) -> None:
    for key, value in info.to_props().items():
        config.parameters[key].string_value = value


def input_size(model) -> tuple[int, int]:
    """The (H, W) the preprocess step letterboxes to (pspcore.geometry's rule: the model's fixed input shape,
    else its stored size; the ensemble takes no size of its own)."""
    h, w = model.inputs[0].shape[2:4]
    spec = InputSpec(size=(h, w) if h > 0 and w > 0 else None)
    return resolve_input_size(spec, model.info, None, model=model.path.name, option="the ONNX export's --size")


def labels_type(model) -> str:
    """Triton's name for pspcore.label_maps' type of the model's label maps (what runtime.triton_steps'
    postprocess step returns)."""
    classes = model.info.num_classes or (model.outputs[0].shape[1] if len(model.outputs[0].shape) == 4 else 0)
    return numpy_to_triton(label_dtype(classes))


def _step(model_name: str, inputs: dict[str, str], outputs: dict[str, str]) -> dict:
    return {"model_name": model_name, "model_version": -1, "input_map": inputs, "output_map": outputs}


def ensemble_configs(model, model_config, name: str, instances: int = 1) -> dict:
    """{name: ModelConfig} of the preprocess step, the postprocess step and the ensemble around the model
    step `model_config`. The python steps take one image per request (max_batch_size 0: images of different
    sizes cannot be batched); Triton's dynamic batcher still merges concurrent requests at the model step."""
    from google.protobuf import json_format

    pb2 = model_config_pb2()
    if model_config.max_batch_size == 0 and model.inputs[0].shape[0] not in (1, -1):
        raise InputError(f"{model.path.name} takes batches of exactly {model.inputs[0].shape[0]}; the ensemble "
                         "sends one image at a time: export the model with a dynamic batch")
    size, info = input_size(model), model.info.with_(input_size=input_size(model))
    scores = model.outputs[0]
    pre, post = python_config(f"{name}_preprocess", instances), python_config(f"{name}_postprocess", instances)
    tensor_message(pre.input.add(), IMAGE, "UINT8", [-1, -1, 3])
    tensor_message(pre.output.add(), "input", "FP32", [1, 3, *size])
    tensor_message(pre.output.add(), "box", "INT32", [4])
    _set_info(pre, info)
    tensor_message(post.input.add(), "scores", scores.data_type, [1, *scores.shape[1:]])
    tensor_message(post.input.add(), "box", "INT32", [4])
    tensor_message(post.output.add(), LABELS, labels_type(model), [-1, -1])
    _set_info(post, info)  # the step reads the class count, which decides the label type (labels_type)
    ensemble = pb2.ModelConfig(name=name, platform="ensemble", max_batch_size=0)
    tensor_message(ensemble.input.add(), IMAGE, "UINT8", [-1, -1, 3])
    tensor_message(ensemble.output.add(), LABELS, labels_type(model), [-1, -1])
    steps = [_step(pre.name, {IMAGE: IMAGE}, {"input": "net_input", "box": "box"}),
             _step(model_config.name, {model.inputs[0].name: "net_input"}, {scores.name: "scores"}),
             _step(post.name, {"scores": "scores", "box": "box"}, {LABELS: LABELS})]
    json_format.ParseDict({"step": steps}, ensemble.ensemble_scheduling)
    # Clients read the metadata (classes, palette) off the ensemble; it answers with labels.
    _set_info(ensemble, info.with_(output=LABELS))
    return {pre.name: pre, post.name: post, name: ensemble}


def _fill(config, model_py_text: str | None) -> Callable[[Path], None]:
    def fill(folder: Path) -> None:
        (folder / VERSION).mkdir(parents=True)  # an ensemble needs an (empty) version folder too
        if model_py_text:
            (folder / VERSION / "model.py").write_text(model_py_text)
        (folder / "config.pbtxt").write_text(config_text(config))

    return fill


def ensemble_folders(model, model_config, options) -> dict[str, Callable[[Path], None]]:
    """Writers of the three folders the ensemble adds beside the model step, for
    export.triton.repository.write_folders."""
    configs = ensemble_configs(model, model_config, options.name, options.instances)
    code = {f"{options.name}_preprocess": model_py("PreprocessStep", "RGB image -> network input and box"),
            f"{options.name}_postprocess": model_py("PostprocessStep", "scores and box -> label map")}
    return {name: _fill(config, code.get(name)) for name, config in configs.items()}
