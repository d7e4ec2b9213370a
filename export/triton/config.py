"""Triton's model configuration as both the model entry (export.triton.repository) and the ensemble around it
(export.triton.ensemble) write it: the protobuf schema shipped with tritonclient, tensor and python-step
messages, the text form and the version folder."""
from __future__ import annotations

from pspcore.errors import BackendUnavailable
from pspcore.tensor_types import triton_config_enum_name

VERSION = "1"
PYTHON = "python"  # the python backend (runtime.triton_steps runs there)


def model_config_pb2():
    """Triton's model configuration schema as shipped with tritonclient (the `triton` extra)."""
    try:
        from tritonclient.grpc import model_config_pb2 as pb2
    except ImportError as exc:
        raise BackendUnavailable(f"tritonclient is not installed ({exc.name}); "
                                 "pip install 'pspnet-deploy[triton]'") from None
    return pb2


def tensor_message(message, name: str, data_type: str, dims) -> None:
    """Fill a ModelInput/ModelOutput: its name, Triton type name ("FP32") and dims."""
    message.name = name
    message.data_type = model_config_pb2().DataType.Value(triton_config_enum_name(data_type))
    message.dims.extend(dims)


def python_config(name: str, instances: int = 1):
    """An empty python-backend ModelConfig on CPU instances: the shape every python step shares."""
    pb2 = model_config_pb2()
    config = pb2.ModelConfig(name=name, backend=PYTHON)
    config.instance_group.add(count=instances, kind=pb2.ModelInstanceGroup.Kind.Value("KIND_CPU"))
    return config


def config_text(config) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)
