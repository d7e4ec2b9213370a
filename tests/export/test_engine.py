"""psp-build-engine without a GPU: option parsing, profiles, precision choice, and the build flow (sidecar,
atomic writes, TensorRT's log on failure) against a stand-in for the tensorrt module's build API."""
import enum
import hashlib
import importlib.util
import json
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

import export.engine.build as engine_module
from export.engine.build import (
    EngineBuildError,
    Profile,
    build_engine,
    input_profile,
    parse_batch,
    parse_size_profile,
    prepare_onnx,
)
from export.engine.cli import main as build_engine_cli
from pspcore.engine_file import Platform, read_sidecar
from pspcore.errors import InputError
from pspcore.files import file_sha256
from pspcore.model_info import ModelInfo, read_onnx_info

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
CACHE_MAGIC = b"TRTCACHE\n"
PLATFORM = Platform("10.13.3.9", "NVIDIA L4", "8.9")


class FakeTensorRT:
    """The slice of the tensorrt module build_engine uses, recording what it was asked to do."""

    class ILogger:
        class Severity(enum.IntEnum):
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self):
            pass

    class NetworkDefinitionCreationFlag:
        STRONGLY_TYPED = 1

    class MemoryPoolType:
        WORKSPACE = 0

    class BuilderFlag:
        TF32 = 7

    def __init__(self, version="10.13.3.9", input_shape=(-1, 3, 65, 65), engine=b"serialized engine",
                 parse_ok=True, timing: bytes = b"timing of build 1", during_build=None):
        self.__version__ = version
        self.input_shape, self.engine, self.parse_ok = input_shape, engine, parse_ok
        self.timing, self.during_build = timing, during_build  # the entry a build adds; a hook run mid-build
        self.lock_file = None  # the cache's lock file, to check the merge happens while it is held
        self.calls: dict = {}
        fake = self

        class Network:
            num_inputs = num_outputs = 1

            def get_input(self, i):
                return SimpleNamespace(name="image", shape=fake.input_shape, dtype=SimpleNamespace(name="FLOAT"))

            def get_output(self, i):
                return SimpleNamespace(name="logits", shape=(-1, 5, 65, 65), dtype=SimpleNamespace(name="FLOAT"))

        class Cache:
            """A timing cache as a set of entries, one a line; bytes that do not start with CACHE_MAGIC are
            refused, as TensorRT refuses a truncated or foreign file."""

            def __init__(self, data):
                if data and not data.startswith(CACHE_MAGIC):
                    raise RuntimeError("timing cache: bad magic")
                self.entries = set(data[len(CACHE_MAGIC):].split(b"\n")) - {b""}

            def serialize(self):
                return CACHE_MAGIC + b"\n".join(sorted(self.entries))

            def combine(self, other, ignore_mismatch):
                fake.calls["combined_under_lock"] = fake.lock_held()
                self.entries |= other.entries
                return True

        class Config:
            def set_memory_pool_limit(self, pool, size):
                fake.calls["workspace"] = size

            def clear_flag(self, flag):
                fake.calls["cleared"] = flag

            def add_optimization_profile(self, profile):
                fake.calls["profile"] = profile.shapes

            def create_timing_cache(self, data):
                fake.calls["cache_in"] = bytes(data)
                return Cache(bytes(data))

            def set_timing_cache(self, cache, ignore_mismatch):
                fake.calls["cache_used"] = set(cache.entries)
                self.cache = cache
                return True

            def get_timing_cache(self):
                return self.cache

        class Profile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, lo, opt, hi):
                self.shapes[name] = (lo, opt, hi)

        class Builder:
            def __init__(self, logger):
                self.logger = logger
                fake.calls.setdefault("order", []).append("builder")

            def create_network(self, flags):
                fake.calls["flags"] = flags
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                if hasattr(config, "cache"):
                    config.cache.entries.add(fake.timing)
                if fake.during_build:
                    fake.during_build()
                self.logger.log(FakeTensorRT.ILogger.Severity.WARNING, "a build warning")
                self.logger.log(FakeTensorRT.ILogger.Severity.INTERNAL_ERROR, "an internal error")
                if fake.engine is None:
                    self.logger.log(FakeTensorRT.ILogger.Severity.ERROR, "out of workspace for tactic X")
                return fake.engine

        class OnnxParser:
            def __init__(self, network, logger):
                self.num_errors = 0 if fake.parse_ok else 1

            def parse_from_file(self, path):
                fake.calls["parsed"] = path
                return fake.parse_ok

            def get_error(self, i):
                return "In node 3 (Resize): unsupported mode"

        self.Builder, self.OnnxParser = Builder, OnnxParser

    def lock_held(self) -> bool:
        """Whether someone holds the flock on the cache's lock file (a second open file cannot take it)."""
        import fcntl

        if self.lock_file is None or not self.lock_file.exists():
            return False
        with open(self.lock_file) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False


@pytest.fixture
def fake_trt(monkeypatch):
    def install(**options):
        fake = FakeTensorRT(**options)
        monkeypatch.setattr(engine_module, "import_tensorrt", lambda: fake)
        monkeypatch.setattr(engine_module, "current_platform", lambda device=0: PLATFORM)
        monkeypatch.setattr(engine_module, "select_device",
                            lambda device: fake.calls.setdefault("order", []).append(f"device {device}"))
        return fake
    return install


def test_parse_batch_and_sizes():
    assert parse_batch("4") == (4, 4, 4)
    assert parse_batch("1:4:8") == (1, 4, 8)
    assert parse_size_profile("473") == ((473, 473),) * 3
    assert parse_size_profile("257x257:513x1025:1025x2049") == ((257, 257), (513, 1025), (1025, 2049))
    for bad in ("0", "1:2", "8:4:1", "a"):
        with pytest.raises(InputError, match="batch"):
            parse_batch(bad)
    for bad in ("1x2:3x4", "513x513:257x257:1025x1025", "12y5"):
        with pytest.raises(InputError):
            parse_size_profile(bad)


def test_input_profiles_follow_what_the_model_allows():
    info = ModelInfo(input_size=(97, 129))
    shapes, notes = input_profile((-1, 3, 65, 65), Profile((1, 2, 4)), info)
    assert shapes == ((1, 3, 65, 65), (2, 3, 65, 65), (4, 3, 65, 65)) and not notes
    shapes, notes = input_profile((-1, 3, -1, -1), Profile((1, 1, 1)), info)
    assert shapes[2] == (1, 3, 97, 129) and "recorded input size" in notes[0]
    sizes = parse_size_profile("33x33:65x65:129x129")
    assert input_profile((1, 3, -1, -1), Profile((1, 1, 1), sizes), info)[0][2] == (1, 3, 129, 129)
    with pytest.raises(InputError, match="batch 1 only"):
        input_profile((1, 3, 65, 65), Profile((1, 2, 4)), info)
    with pytest.raises(InputError, match="65x65 inputs only"):
        input_profile((-1, 3, 65, 65), Profile((1, 1, 1), sizes), info)
    with pytest.raises(InputError, match="pass --size"):
        input_profile((-1, 3, -1, -1), Profile(), ModelInfo())


def test_build_writes_engine_and_sidecar(tmp_path, fake_trt, tiny_onnx):
    fake = fake_trt()
    onnx_path, _ = tiny_onnx
    cache = tmp_path / "timing.cache"
    result = build_engine(onnx_path, tmp_path / "m.engine", batch="1:2:4", timing_cache=cache, workspace_gib=0.5)
    assert (tmp_path / "m.engine").read_bytes() == b"serialized engine"
    assert fake.calls["flags"] == 1 << 1  # TensorRT 10: STRONGLY_TYPED requested
    assert fake.calls["cleared"] == FakeTensorRT.BuilderFlag.TF32 and fake.calls["workspace"] == 1 << 29
    assert fake.calls["profile"]["image"] == ((1, 3, 65, 65), (2, 3, 65, 65), (4, 3, 65, 65))
    assert cache.read_bytes() == CACHE_MAGIC + b"timing of build 1"
    sidecar = read_sidecar(tmp_path / "m.engine")
    assert sidecar.platform == PLATFORM and sidecar.precision == "fp32" == result.precision
    assert sidecar.profiles == {"image": {"min": [1, 3, 65, 65], "opt": [2, 3, 65, 65], "max": [4, 3, 65, 65]}}
    assert sidecar.onnx_sha256 == file_sha256(onnx_path)
    assert sidecar.engine_sha256 == hashlib.sha256(b"serialized engine").hexdigest()
    assert sidecar.info == read_onnx_info(onnx_path)
    assert sidecar.tensors == {"inputs": [{"name": "image", "dtype": "FLOAT", "shape": [-1, 3, 65, 65]}],
                               "outputs": [{"name": "logits", "dtype": "FLOAT", "shape": [-1, 5, 65, 65]}]}
    assert result.warnings == ["a build warning", "an internal error"]  # INTERNAL_ERROR is not dropped
    build_engine(onnx_path, tmp_path / "m2.engine", timing_cache=cache)  # the saved cache is read back
    assert fake.calls["cache_in"] == CACHE_MAGIC + b"timing of build 1"


def test_timing_cache_is_merged_under_a_lock_with_what_another_build_wrote(tmp_path, fake_trt, tiny_onnx):
    """Two builds sharing a cache: the one finishing last keeps the other's timings (written while it built),
    merging under the file's lock, and the file is replaced whole."""
    cache = tmp_path / "timing.cache"
    cache.write_bytes(CACHE_MAGIC + b"timing of an older build")

    def another_build_finishes():
        cache.write_bytes(CACHE_MAGIC + b"timing of an older build\ntiming of a parallel build")

    fake = fake_trt(timing=b"timing of this build", during_build=another_build_finishes)
    fake.lock_file = engine_module.timing_cache_lock_path(cache)
    build_engine(tiny_onnx[0], tmp_path / "m.engine", timing_cache=cache)
    assert cache.read_bytes().split(b"\n")[1:] == [b"timing of a parallel build", b"timing of an older build",
                                                     b"timing of this build"]
    assert fake.calls["combined_under_lock"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine", "m.engine.json", "timing.cache",
                                                          "timing.cache.lock"]  # no temporary file left


def test_unreadable_timing_cache_falls_back_to_a_fresh_one(tmp_path, fake_trt, tiny_onnx):
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"\x00 truncated or from another TensorRT")
    fake = fake_trt()
    result = build_engine(tiny_onnx[0], tmp_path / "m.engine", timing_cache=cache)
    assert any("timing cache" in n and "starting a fresh one" in n for n in result.notes)
    assert fake.calls["cache_used"] == set()  # the build ran on an empty cache
    assert cache.read_bytes() == CACHE_MAGIC + b"timing of build 1"  # replaced by a readable one
    assert (tmp_path / "m.engine").read_bytes() == b"serialized engine"


def test_build_selects_its_gpu_before_creating_the_builder(tmp_path, fake_trt, tiny_onnx):
    fake = fake_trt()
    build_engine(tiny_onnx[0], tmp_path / "m.engine", device=1)
    assert fake.calls["order"] == ["device 1", "builder"]


def test_tensorrt_11_networks_are_strongly_typed_without_a_flag(tmp_path, fake_trt, tiny_onnx):
    fake = fake_trt(version="11.1.0.5")
    build_engine(tiny_onnx[0], tmp_path / "m.engine")
    assert fake.calls["flags"] == 0


@pytest.mark.parametrize("options,message", [
    ({"engine": None}, "could not build an engine.*out of workspace for tactic X"),
    ({"parse_ok": False}, "could not parse.*unsupported mode"),
])
def test_failed_build_shows_the_log_and_leaves_no_file(tmp_path, fake_trt, tiny_onnx, options, message):
    fake_trt(**options)
    with pytest.raises(EngineBuildError, match=f"(?s){message}"):
        build_engine(tiny_onnx[0], tmp_path / "m.engine")
    assert list(tmp_path.iterdir()) == []


def test_precision_choice(tmp_path, tiny_onnx):
    src, _ = tiny_onnx
    info = read_onnx_info(src)
    assert prepare_onnx(src, None, info, tmp_path) == (src, info, [])
    with pytest.raises(InputError, match="needs calibration images"):
        prepare_onnx(src, "int8", info, tmp_path)
    with pytest.raises(InputError, match="already an fp16 model"):
        prepare_onnx(src, "int8", info.with_(precision="fp16"), tmp_path)
    cpu_int8 = info.with_(precision="int8", extra={"int8_target": "onnxruntime"})
    with pytest.raises(InputError, match="quantized for ONNX Runtime"):
        prepare_onnx(src, None, cpu_int8, tmp_path)


@pytest.mark.skipif(HAVE_TRT, reason="checks the message shown where TensorRT is not installed")
def test_cli_without_tensorrt_says_how_to_install(tmp_path, tiny_onnx):
    result = CliRunner().invoke(build_engine_cli, [str(tiny_onnx[0]), "-o", str(tmp_path / "m.engine")])
    assert result.exit_code == 1
    assert "pip install tensorrt" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "m.engine").exists()


def test_cli_rejects_calibration_images_without_int8(tmp_path, tiny_onnx):
    result = CliRunner().invoke(build_engine_cli, [str(tiny_onnx[0]), "-o", str(tmp_path / "m.engine"),
                                                   "--calib-images", str(tmp_path)])
    assert result.exit_code == 2 and "--int8" in result.output


def test_cli_passes_options_through(tmp_path, fake_trt, tiny_onnx):
    fake_trt()
    result = CliRunner().invoke(build_engine_cli, [str(tiny_onnx[0]), "-o", str(tmp_path / "m.engine"),
                                                   "--batch", "1:4:8", "--workspace", "1"])
    assert result.exit_code == 0, result.output
    assert "profile image: min [1, 3, 65, 65] opt [4, 3, 65, 65] max [8, 3, 65, 65]" in result.output
    assert json.loads((tmp_path / "m.engine.json").read_text())["gpu_name"] == "NVIDIA L4"


@pytest.mark.slow
def test_fp16_build_converts_through_the_verified_conversion_first(tmp_path, fake_trt, tiny_onnx):
    pytest.importorskip("modelopt", reason="FP16 conversion needs the `convert` extra")
    fake = fake_trt()
    result = build_engine(tiny_onnx[0], tmp_path / "m.engine", precision="fp16")
    assert fake.calls["parsed"].endswith(".fp16.onnx")  # TensorRT got the converted model, not the FP32 one
    assert result.precision == "fp16" == read_sidecar(tmp_path / "m.engine").precision
    assert any(n.startswith("converted pspnet18_5c_65.onnx to fp16") and "verified: agreement" in n
               for n in result.notes)


@pytest.mark.skipif(HAVE_TRT, reason="checks the message shown where TensorRT is not installed")
@pytest.mark.parametrize("flag", ["--fp16", "--int8"])
def test_cli_fp16_int8_without_tensorrt_fail_in_one_line_before_converting(tmp_path, tiny_onnx, flag):
    import cv2
    import numpy as np

    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(2):
        cv2.imwrite(str(calib / f"{i}.png"), np.full((65, 65, 3), 40 * i, np.uint8))
    args = [str(tiny_onnx[0]), "-o", str(tmp_path / "m.engine"), flag]
    result = CliRunner().invoke(build_engine_cli, args + (["--calib-images", str(calib)] if flag == "--int8" else []))
    assert result.exit_code == 1, result.output
    assert "pip install tensorrt" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib"]
