"""psp-infer as a user runs it: the summary line, notices, one-line errors with exit codes."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from runtime.cli import main
from tests.runtime.test_video import corrupt_frame, count_frames


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_video_with_a_corrupt_frame(tiny_model, tiny_video, tmp_path):
    bad = corrupt_frame(tiny_video, tmp_path / "bad.avi", 3)
    out, js = tmp_path / "out.mp4", tmp_path / "out.json"
    result = run(tiny_model, bad, "-o", out, "--batch", "4", "--json", js, "--codec", "avc1", "-q",
                 "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "29 frames in, 29 out, 1 skipped/corrupt" in result.stdout and "backend onnxruntime" in result.stdout
    assert "notice: backend auto: onnxruntime" in result.stderr
    assert "1 corrupt frame skipped" in result.stderr
    assert count_frames(out) == 29 and js.exists()


@pytest.mark.parametrize("make_input, message", [
    (lambda d: d / "missing.mp4", "video not found"),
    (lambda d: (d / "x.mp4").write_text("text") and d / "x.mp4", "not a video"),
    (lambda d: (d / "empty.avi").write_bytes(b"") or d / "empty.avi", "zero-length"),
])
def test_bad_inputs_are_one_line_errors(tiny_model, tmp_path, make_input, message):
    result = run(tiny_model, make_input(tmp_path), "-o", tmp_path / "out.mp4", "-q")
    assert result.exit_code == 2 and f"{message}" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "out.mp4").exists()


def test_unwritable_output_and_bad_options(tiny_model, tiny_video, tmp_path):
    (tmp_path / "file").write_text("x")
    result = run(tiny_model, tiny_video, "-o", tmp_path / "file" / "out.mp4", "-q")
    assert result.exit_code == 2 and "cannot write" in result.stderr
    result = run(tiny_model, tiny_video, "-o", tmp_path / "o.mp4", "--size", "64x64", "-q")
    assert result.exit_code == 2 and "takes 32x32 inputs only" in result.stderr
    result = run(tiny_model, tiny_video, "-o", tmp_path / "o.mp4", "--backend", "torch", "--threads", "1")
    assert result.exit_code != 0 and "error:" in result.stderr


def test_runtime_never_imports_torch(tiny_model, tiny_video, tmp_path):
    """The whole psp-infer path runs with torch made unimportable. Of pspnet, only the module defining its
    registered runner is read (the registry asks every backend how well it runs the file); no model code."""
    code = f"""
import sys
sys.modules['torch'] = None  # any `import torch` now raises ImportError
import pspcore.registry, runtime.backends.onnxruntime, pspcore.model_info
import pspcore.preprocess, runtime.postprocess, runtime.video, runtime.outputs, runtime.pipeline, runtime.cli
from pspcore.registry import available_backends
assert available_backends()['torch'], 'torch reported available while blocked'
from runtime.cli import main
try:
    main([{str(tiny_model)!r}, {str(tiny_video)!r}, '-o', {str(tmp_path / 'o.mp4')!r}, '-q'])
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'pspnet')
assert loaded in ([], ['pspnet', 'pspnet.gpu', 'pspnet.runner']), loaded  # the runner and its GPU machinery
print('ok')
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr


@pytest.mark.slow
def test_real_ctrl_c_keeps_playable_partials(tmp_path):
    """SIGINT to a running psp-infer: exit 130, `<name>.partial.<ext>` playable, nothing at the final names."""
    import signal
    import time

    from tests.runtime.conftest import make_onnx, write_video

    # A large input size slows the tiny model down enough to interrupt it mid-video.
    model = make_onnx(tmp_path / "dyn.onnx", dynamic_shape=True, num_classes=32)
    video = write_video(tmp_path / "long.avi", frames=300, size=(160, 120))
    out_dir = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli", str(model), str(video), "-o", str(out_dir / "o.mp4"),
                             "--mask-video", str(out_dir / "m.avi"), "--masks-dir", str(tmp_path / "masks"),
                             "--size", "768x768", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # A test run started in the background inherits an ignored SIGINT, which Python then
                            # keeps ignoring: give the child the default, so Ctrl-C reaches it as for a user.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((tmp_path / "masks").glob("*.png"))) >= 2:  # frames are being written
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["m.partial.avi", "o.partial.mp4"]
    assert "kept the frames so far" in err
    frames = {count_frames(out_dir / name) for name in ("m.partial.avi", "o.partial.mp4")}
    assert len(frames) == 1 and 0 < frames.pop() < 300


def test_device_places_the_model_and_json_dash_is_standard_output(tiny_model, tiny_video, tmp_path):
    result = run(tiny_model, tiny_video, "-o", tmp_path / "o.mp4", "--device", "cpu", "--json", "-", "-q")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["frames"]) == 30  # stdout carries only the JSON
    assert "frames in" in result.stderr  # the summary moved to stderr
    refused = run(tiny_model, tiny_video, "-o", tmp_path / "p.mp4", "--backend", "tensorrt", "--device", "cpu")
    assert refused.exit_code == 2 and "CUDA GPU only" in refused.output
