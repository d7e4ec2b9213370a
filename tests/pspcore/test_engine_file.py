"""The engine file format: the sidecar round trip, one reader, and refusing engines built elsewhere."""
import json

import pytest

from pspcore.engine_file import (
    EngineSidecar,
    Platform,
    check_compatible,
    read_engine_info,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)
from pspcore.errors import InputError
from pspcore.model_info import ModelInfo

BUILT = Platform("10.13.3.9", "NVIDIA L4", "8.9")


def _sidecar(**changes) -> EngineSidecar:
    info = ModelInfo(arch="pspnet18", num_classes=3, class_names=("a", "b", "c"), input_size=(65, 65))
    values = dict(platform=BUILT, precision="fp16", onnx_sha256="ab" * 32, engine_sha256="cd" * 32, info=info,
                  profiles={"image": {"min": [1, 3, 65, 65], "opt": [2, 3, 65, 65], "max": [4, 3, 65, 65]}})
    return EngineSidecar(**{**values, **changes})


def test_sidecar_round_trip_and_runtime_reads_its_info(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not really an engine")
    sidecar = _sidecar(build={"workspace_gib": 2.0})
    path = write_sidecar(sidecar_path(engine), sidecar)
    assert path.name == "m.engine.json"
    data = json.loads(path.read_text())
    assert {"tensorrt_version", "gpu_name", "compute_capability", "precision", "profiles", "onnx_sha256",
            "info"} <= set(data)
    assert read_sidecar(engine) == sidecar
    assert read_engine_info(engine) == sidecar.info  # the runtime helper's reader agrees on the format


def test_missing_or_corrupt_sidecar_is_a_clear_input_error(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    with pytest.raises(InputError, match="no sidecar m.engine.json"):
        read_sidecar(engine)
    sidecar_path(engine).write_text('{"tensorrt_version": "10.1"}')
    with pytest.raises(InputError, match="not a valid engine sidecar"):
        read_sidecar(engine)


@pytest.mark.parametrize("running,problem", [
    (Platform("10.14.1.48", "NVIDIA L4", "8.9"), "TensorRT 10.13.3.9, this machine has 10.14.1.48"),
    (Platform("11.0.0.1", "NVIDIA L4", "8.9"), "TensorRT 10.13.3.9"),
    (Platform("10.13.3.9", "NVIDIA H100 80GB HBM3", "9.0"), "GPU NVIDIA L4 (sm 8.9), this machine has NVIDIA H100"),
    (Platform("10.13.3.9", "NVIDIA L40S", "8.9"), "GPU NVIDIA L4 (sm 8.9)"),  # same SM, other model
])
def test_engine_from_another_platform_is_refused(running, problem):
    with pytest.raises(InputError, match="rebuild it here") as err:
        check_compatible(BUILT, running, "m.engine")
    assert problem in str(err.value)


def test_same_release_other_build_number_is_accepted():
    check_compatible(BUILT, Platform("10.13.3.11", "NVIDIA L4", "8.9"))
