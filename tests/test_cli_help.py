"""Every console script a user runs answers --help (as an installed command, in a fresh process)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = [
    ["psp-train"], ["psp-eval"], ["psp-export"], ["psp-export", "onnx"], ["psp-export", "fp16"],
    ["psp-export", "int8"], ["psp-export", "triton"], ["psp-build-engine"], ["psp-infer"], ["psp-bench"],
    ["psp-bench", "accuracy"], ["psp-serve"], ["psp-export", "compare"],
]


def _script(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        pytest.fail(f"{name} is not installed (pip install -e . registers it)")
    return found


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_help(cmd):
    result = subprocess.run([_script(cmd[0]), *cmd[1:], "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage:") and "Traceback" not in result.stderr
