"""psp-export triton: the repository layout, and config.pbtxt parsed with Triton's own schema (tritonclient's
model_config_pb2), so a field or value Triton would reject fails here. Tiny ONNX graphs, no torch."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("tritonclient.grpc", reason="tritonclient is the `triton` extra")
from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2 as pb2  # noqa: E402

from export.triton.cli import triton_command  # noqa: E402
from export.triton.repository import export_triton  # noqa: E402
from pspcore.errors import InputError  # noqa: E402
from pspcore.model_info import ModelInfo  # noqa: E402
from runtime.backends.triton import info_from_config  # noqa: E402
from tests.runtime.conftest import make_onnx, tiny_info  # noqa: E402


def parse_config(model_dir: Path) -> pb2.ModelConfig:
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), pb2.ModelConfig())


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("triton-models")
    return {"static": make_onnx(d / "static.onnx", size=(33, 41)),
            "dynamic": make_onnx(d / "dynamic.onnx", dynamic_shape=True),
            "fixed_batch": make_onnx(d / "fixed.onnx", batch=2),
            "labels": make_onnx(d / "labels.onnx", output="labels"),
            "bare": make_onnx(d / "bare.onnx", num_classes=5, info=None)}


def test_a_field_triton_does_not_know_fails_to_parse():
    # What makes parse_config a real check: the schema refuses unknown fields and enum values.
    with pytest.raises(text_format.ParseError):
        text_format.Parse('name: "m"\nmax_batch: 8\n', pb2.ModelConfig())
    with pytest.raises(text_format.ParseError):
        text_format.Parse('input { name: "x" data_type: TYPE_FLOAT32 }', pb2.ModelConfig())


def test_onnx_config_matches_the_model_and_its_metadata(models, tmp_path):
    result = export_triton(models["static"], tmp_path / "repo")
    config = parse_config(result.model_dir)
    assert (config.name, config.platform, config.max_batch_size) == ("pspnet", "onnxruntime_onnx", 8)
    (image,), (logits,) = config.input, config.output
    assert (image.name, image.data_type, list(image.dims)) == ("image", pb2.TYPE_FP32, [3, 33, 41])
    assert (logits.name, logits.data_type, list(logits.dims)) == ("logits", pb2.TYPE_FP32, [4, 33, 41])
    assert logits.label_filename == "labels.txt"
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    (group,) = config.instance_group
    # KIND_AUTO: GPUs where the server has them, CPU otherwise (KIND_GPU would fail on a CPU-only server).
    assert (group.kind, group.count) == (pb2.ModelInstanceGroup.KIND_AUTO, 1)
    assert result.instance_kind == "auto"
    assert info_from_config(config) == tiny_info(4, (33, 41))


def test_repository_layout(models, tmp_path):
    repo = tmp_path / "repo"
    export_triton(models["static"], repo, name="seg")
    files = sorted(str(p.relative_to(repo)) for p in repo.rglob("*"))
    assert files == ["seg", "seg/1", "seg/1/model.onnx", "seg/config.pbtxt", "seg/labels.txt"]
    assert (repo / "seg/1/model.onnx").read_bytes() == models["static"].read_bytes()
    assert (repo / "seg/labels.txt").read_text().splitlines() == ["c0", "c1", "c2", "c3"]


def test_dynamic_shape_gives_open_dims(models, tmp_path):
    config = parse_config(export_triton(models["dynamic"], tmp_path).model_dir)
    assert list(config.input[0].dims) == [3, -1, -1]
    assert list(config.output[0].dims) == [4, -1, -1]
    assert info_from_config(config).dynamic_shape


def test_fixed_batch_model_is_served_without_batching(models, tmp_path):
    result = export_triton(models["fixed_batch"], tmp_path)
    config = parse_config(result.model_dir)
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [2, 3, 32, 32]
    assert result.notes and "fixed batch" in result.notes[0]
    with pytest.raises(InputError, match="fixed batch size"):
        export_triton(models["fixed_batch"], tmp_path, name="other", max_batch=4)


def test_labels_output_type_and_dims(models, tmp_path):
    config = parse_config(export_triton(models["labels"], tmp_path).model_dir)
    assert (config.output[0].name, config.output[0].data_type) == ("labels", pb2.TYPE_UINT8)
    assert list(config.output[0].dims) == [32, 32]


def test_model_without_metadata_gets_defaults_read_off_its_shapes(models, tmp_path):
    result = export_triton(models["bare"], tmp_path)
    info = info_from_config(parse_config(result.model_dir))
    assert (info.num_classes, info.input_size) == (5, (32, 32))
    assert (result.model_dir / "labels.txt").read_text().splitlines() == [f"class_{i}" for i in range(5)]


def test_batching_and_instance_options(models, tmp_path):
    result = export_triton(models["static"], tmp_path, max_batch=16, preferred_batch=(8, 2, 16),
                           queue_delay_us=500, instances=3, kind="cpu")
    config = parse_config(result.model_dir)
    assert config.max_batch_size == 16
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 8, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert (config.instance_group[0].kind, config.instance_group[0].count) == (pb2.ModelInstanceGroup.KIND_CPU, 3)


@pytest.mark.parametrize("options, message", [
    ({"preferred_batch": (4, 16)}, "preferred batch sizes must lie in 1..8"),
    ({"max_batch": -1}, "--max-batch must be >= 0"),
    ({"kind": "tpu"}, "--instance-kind must be one of auto, cpu, gpu"),
    ({"platform": "tensorrt_plan"}, "served by onnxruntime_onnx or python, not tensorrt_plan"),
    ({"name": "../escape"}, "invalid model name"),
])
def test_bad_options_write_nothing(models, tmp_path, options, message):
    with pytest.raises(InputError, match=message):
        export_triton(models["static"], tmp_path / "repo", **options)
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_existing_model_folder_needs_force(models, tmp_path):
    repo = tmp_path / "repo"
    export_triton(models["static"], repo)
    with pytest.raises(InputError, match="already exists; pass --force"):
        export_triton(models["dynamic"], repo)
    export_triton(models["dynamic"], repo, force=True)
    assert list(parse_config(repo / "pspnet").input[0].dims) == [3, -1, -1]
    # No staging or replaced folders left, in the repository or beside it.
    assert [p.name for p in repo.iterdir()] == ["pspnet"] and [p.name for p in tmp_path.iterdir()] == ["repo"]


def write_fake_engine(path: Path, info: ModelInfo, low: list[int], high: list[int], tensors: dict | None = None,
                      input_name: str = "image") -> Path:
    """A stand-in plan file with a real sidecar (export.engine.build's format); the plan's bytes are not read here."""
    from pspcore.engine_file import EngineSidecar, Platform, write_sidecar

    path.write_bytes(b"not a real engine")
    write_sidecar(Path(str(path) + ".json"), EngineSidecar(
        platform=Platform("10.13.0", "NVIDIA H100", "9.0"), precision=info.precision,
        profiles={input_name: {"min": low, "opt": high, "max": high}}, onnx_sha256="", engine_sha256="", info=info,
        tensors=tensors or {}))
    return path


def test_engine_is_served_by_its_own_tensor_names_and_types(tmp_path, capsys):
    """An engine built from someone else's ONNX: the config names its real tensors, not ours."""
    tensors = {"inputs": [{"name": "input.1", "dtype": "FLOAT", "shape": [-1, 3, 65, 65]}],
               "outputs": [{"name": "out", "dtype": "HALF", "shape": [-1, 6, 65, 65]}]}
    engine = write_fake_engine(tmp_path / "m.engine", tiny_info(6, (65, 65)), [1, 3, 65, 65], [4, 3, 65, 65],
                               tensors, input_name="input.1")
    config = parse_config(export_triton(engine, tmp_path / "repo").model_dir)
    assert [(t.name, list(t.dims)) for t in config.input] == [("input.1", [3, 65, 65])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("out", [6, 65, 65])]
    assert pb2.DataType.Name(config.output[0].data_type) == "TYPE_FP16"
    assert "records no tensor names" not in capsys.readouterr().err
    old = write_fake_engine(tmp_path / "old.engine", tiny_info(6, (65, 65)), [1, 3, 65, 65], [4, 3, 65, 65])
    export_triton(old, tmp_path / "repo", name="old")
    assert "records no tensor names" in capsys.readouterr().err  # an old sidecar: our names, said so


def test_engine_with_sidecar(tmp_path):
    info = tiny_info(6, (65, 65), precision="fp16")
    engine = write_fake_engine(tmp_path / "m.engine", info, [1, 3, 65, 65], [4, 3, 65, 65])
    result = export_triton(engine, tmp_path / "repo")
    config = parse_config(result.model_dir)
    assert (config.platform, config.max_batch_size) == ("tensorrt_plan", 4)  # capped by the profile
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4]
    assert list(config.input[0].dims) == [3, 65, 65] and list(config.output[0].dims) == [6, 65, 65]
    assert (result.model_dir / "1/model.plan").read_bytes() == b"not a real engine"
    assert info_from_config(config) == info
    with pytest.raises(InputError, match="exceeds the engine's profile maximum 4"):
        export_triton(engine, tmp_path / "repo", name="big", max_batch=8)
    with pytest.raises(InputError, match="GPU only"):
        export_triton(engine, tmp_path / "repo", name="cpu", kind="cpu")


def batch_dynamic_tensors(dtype: str = "FLOAT") -> dict:
    """What psp-build-engine records for our dynamic-batch export: the network leaves the batch open (-1)."""
    return {"inputs": [{"name": "image", "dtype": "FLOAT", "shape": [-1, 3, 65, 65]}],
            "outputs": [{"name": "logits", "dtype": dtype, "shape": [-1, 6, 65, 65]}]}


def test_engine_built_for_batch_1_is_served_with_max_batch_1(tmp_path):
    """The default flow: a dynamic-batch ONNX built with psp-build-engine's default --batch 1. Triton's TensorRT
    backend refuses max_batch_size 8 for it ("engine only supports max-batch 1")."""
    engine = write_fake_engine(tmp_path / "m.engine", tiny_info(6, (65, 65)), [1, 3, 65, 65], [1, 3, 65, 65],
                               batch_dynamic_tensors())
    config = parse_config(export_triton(engine, tmp_path / "repo").model_dir)
    assert config.max_batch_size == 1 and list(config.dynamic_batching.preferred_batch_size) == [1]
    assert list(config.input[0].dims) == [3, 65, 65]
    assert config.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_GPU  # auto: engines run on a GPU
    with pytest.raises(InputError, match="exceeds the engine's profile maximum 1"):
        export_triton(engine, tmp_path / "repo", name="two", max_batch=2)


@pytest.mark.parametrize("low, high", [(2, 8), (4, 4)])
def test_engine_profile_starting_above_batch_1_is_refused(tmp_path, low, high):
    engine = write_fake_engine(tmp_path / "m.engine", tiny_info(6, (65, 65)), [low, 3, 65, 65],
                               [high, 3, 65, 65], batch_dynamic_tensors())
    with pytest.raises(InputError, match=f"smallest batch is {low}, but Triton sends batches from 1"):
        export_triton(engine, tmp_path / "repo")
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


@pytest.mark.parametrize("dtype", ["FP8", "INT4", "FP4", "E8M0"])
def test_engine_tensor_type_without_a_triton_type_is_refused(tmp_path, dtype):
    engine = write_fake_engine(tmp_path / "m.engine", tiny_info(6, (65, 65)), [1, 3, 65, 65], [4, 3, 65, 65],
                               batch_dynamic_tensors(dtype))
    with pytest.raises(InputError, match=f"tensor 'logits' is TensorRT {dtype}, which Triton cannot carry"):
        export_triton(engine, tmp_path / "repo")
    for known, triton in [("HALF", "TYPE_FP16"), ("BF16", "TYPE_BF16"), ("INT64", "TYPE_INT64")]:
        ok = write_fake_engine(tmp_path / f"{known}.engine", tiny_info(6, (65, 65)), [1, 3, 65, 65],
                               [4, 3, 65, 65], batch_dynamic_tensors(known))
        config = parse_config(export_triton(ok, tmp_path / "repo", name=known).model_dir)
        assert pb2.DataType.Name(config.output[0].data_type) == triton


def test_engine_with_dynamic_size_profile_and_fixed_batch(tmp_path):
    dynamic = write_fake_engine(tmp_path / "d.plan", tiny_info(3, None, dynamic_shape=True),
                                [1, 3, 33, 33], [8, 3, 129, 129])
    assert list(parse_config(export_triton(dynamic, tmp_path / "r").model_dir).input[0].dims) == [3, -1, -1]
    fixed = write_fake_engine(tmp_path / "f.plan", tiny_info(3, (33, 33)), [2, 3, 33, 33], [2, 3, 33, 33])
    config = parse_config(export_triton(fixed, tmp_path / "r", name="fixed").model_dir)
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [2, 3, 33, 33]


def test_engine_without_sidecar_is_refused(tmp_path):
    (tmp_path / "m.engine").write_bytes(b"x")
    with pytest.raises(InputError, match="no sidecar"):
        export_triton(tmp_path / "m.engine", tmp_path / "repo")


def test_cli_writes_the_repository_and_reports_errors_in_one_line(models, tmp_path):
    runner = CliRunner()
    args = [str(models["static"]), "-o", str(tmp_path), "--preferred-batch", "2,4", "--max-batch", "4"]
    result = runner.invoke(triton_command, args)
    assert result.exit_code == 0, result.output
    assert "onnxruntime_onnx, max batch 4" in result.output
    assert list(parse_config(tmp_path / "pspnet").dynamic_batching.preferred_batch_size) == [2, 4]
    again = runner.invoke(triton_command, args)
    assert again.exit_code == 2 and "error:" in again.output and "--force" in again.output
    bad = runner.invoke(triton_command, [*args[:3], "--preferred-batch", "four"])
    assert bad.exit_code == 2 and "comma-separated values (N[,N...]), got 'four'" in bad.output


def test_external_data_travels_with_the_model_and_a_failed_copy_leaves_nothing(tmp_path):
    import onnx

    model = onnx.load(str(make_onnx(tmp_path / "inline.onnx")))
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.weights", size_threshold=0)
    result = export_triton(tmp_path / "ext.onnx", tmp_path / "repo")
    assert (result.model_dir / "1/ext.weights").read_bytes() == (tmp_path / "ext.weights").read_bytes()
    (tmp_path / "ext.weights").unlink()
    with pytest.raises(InputError, match="external data file not found"):
        export_triton(tmp_path / "ext.onnx", tmp_path / "repo", name="broken")
    assert [p.name for p in (tmp_path / "repo").iterdir()] == ["pspnet"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_exported_pspnet_goes_into_the_repository_with_its_metadata(tiny_onnx, tmp_path):
    from pspcore.model_info import read_onnx_info

    path, _ = tiny_onnx
    config = parse_config(export_triton(path, tmp_path).model_dir)
    assert list(config.input[0].dims) == [3, 65, 65] and list(config.output[0].dims) == [5, 65, 65]
    assert info_from_config(config) == read_onnx_info(path)


def test_ensemble_writes_the_steps_and_an_image_to_labels_ensemble(tiny_onnx, tmp_path):
    from google.protobuf import text_format

    from export.triton.repository import model_config_pb2

    result = export_triton(tiny_onnx[0], tmp_path / "repo", name="seg", ensemble=True, platform="python")
    repo = tmp_path / "repo"
    assert sorted(p.name for p in repo.iterdir()) == ["seg", "seg_model", "seg_postprocess", "seg_preprocess"]
    assert result.instance_kind == "cpu" and result.model_dir == repo / "seg"

    def config(name):
        return text_format.Parse((repo / name / "config.pbtxt").read_text(), model_config_pb2().ModelConfig())

    ensemble, model, pre = config("seg"), config("seg_model"), config("seg_preprocess")
    assert ensemble.platform == "ensemble" and ensemble.max_batch_size == 0
    assert (ensemble.input[0].name, list(ensemble.input[0].dims)) == ("image", [-1, -1, 3])
    assert (ensemble.output[0].name, ensemble.output[0].data_type) == ("labels", 2)  # TYPE_UINT8
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == ["seg_preprocess", "seg_model",
                                                                          "seg_postprocess"]
    assert model.backend == "python" and model.max_batch_size == 8 and model.dynamic_batching
    assert list(pre.output[0].dims) == [1, 3, 65, 65]
    assert "from runtime.triton_steps import PreprocessStep" in (repo / "seg_preprocess/1/model.py").read_text()
    assert (repo / "seg_model/1/model.onnx").is_file() and (repo / "seg_model/1/model.py").is_file()
    assert not list(tmp_path.glob(".*partial*")) and not list(repo.glob(".*"))
    with pytest.raises(InputError, match="already exist"):
        export_triton(tiny_onnx[0], repo, name="seg", ensemble=True, platform="python")


def test_python_platform_runs_onnx_only_and_defaults_to_cpu(tiny_onnx, tmp_path):
    result = export_triton(tiny_onnx[0], tmp_path / "repo", platform="python")
    assert (result.platform, result.instance_kind) == ("python", "cpu")
    assert export_triton(tiny_onnx[0], tmp_path / "repo", name="ort").instance_kind == "auto"
    asked = export_triton(tiny_onnx[0], tmp_path / "repo", name="gpu", kind="gpu")
    assert parse_config(asked.model_dir).instance_group[0].kind == pb2.ModelInstanceGroup.KIND_GPU


def test_psp_export_triton_runs_without_torch(models, tmp_path):
    """A runtime-only install (no torch) writes a repository, the ensemble included."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "from export.triton.cli import triton_command\n"
            f"triton_command([{str(models['static'])!r}, '-o', {str(tmp_path / 'repo')!r}, '--ensemble'])\n")
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "repo" / "pspnet" / "config.pbtxt").is_file()
    assert (tmp_path / "repo" / "pspnet_postprocess" / "config.pbtxt").is_file()
