"""The layers of the house, checked on every import statement (module level or inside a function): a small
torch-free base (pspcore) at the bottom; pspnet and runtime side by side on it, neither importing the other;
export above them; psp-bench (benchmarks) on top; the experiments scripts above everything. pspcore names no
upper module even in a string (no "module:Class" tables), and the torch-free parts of pspnet and export
import in a process where torch cannot be imported."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pspcore", "pspnet", "runtime", "export", "benchmarks", "experiments")
# What each package may import of the others (itself always).
ALLOWED = {
    "pspcore": set(),
    "pspnet": {"pspcore"},
    "runtime": {"pspcore"},
    "export": {"pspcore", "pspnet", "runtime"},
    "benchmarks": {"pspcore", "pspnet", "runtime", "export"},
    "experiments": {"pspcore", "pspnet", "runtime", "export", "benchmarks"},
}
TORCH_FREE = ("pspcore", "runtime")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def violations(package: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module in imported_modules(path):
            top = module.split(".")[0]
            if top in PACKAGES and top != package and top not in ALLOWED[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
            if package in TORCH_FREE and top == "torch":
                bad.append(f"{path.relative_to(ROOT)}:{line} imports torch")
    return bad


@pytest.mark.parametrize("package", PACKAGES)
def test_layers(package):
    assert violations(package) == []


def test_the_check_notices_a_forbidden_import(tmp_path, monkeypatch):
    """The walk finds imports inside functions too (a lazy import is still an arrow up)."""
    fake = tmp_path / "runtime"
    fake.mkdir()
    (fake / "sneaky.py").write_text("def f():\n    from pspnet.checkpoint import load_model\n    import torch\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert violations("runtime") == ["runtime/sneaky.py:2 imports pspnet.checkpoint",
                                     "runtime/sneaky.py:3 imports torch"]


# ------------------------------------------------------------------------------ upper modules in pspcore strings

UPPER = ("runtime", "pspnet", "export", "benchmarks", "experiments")
# A dotted module path ("runtime.backends.onnxruntime:OnnxRuntimeRunner", "pspnet.runner") or a string that is
# exactly an upper package's name ("pspnet" given to find_spec). Plain words ("ONNX Runtime", "pspnet metadata",
# the "pspnet." metadata prefix) are not module names.
MODULE_PATH = re.compile(rf"\b(?:{'|'.join(UPPER)})\.[A-Za-z_]\w*")
MODULE_NAME = re.compile(rf"^(?:{'|'.join(UPPER)})(?::\w+)?$")


def upper_module_strings(path: Path) -> list[str]:
    """`file:line: 'text'` for every string literal (docstrings and f-string parts too) naming an upper module."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr):  # an f-string: its parts joined, a placeholder per {field}
            text = "".join(v.value if isinstance(v, ast.Constant) else "x" for v in node.values)
        else:
            continue
        if MODULE_PATH.search(text) or MODULE_NAME.match(text.strip()):
            bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text.strip()[:60]!r}")
    return bad


PSPCORE_FILES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "pspcore").rglob("*.py"))
@pytest.mark.parametrize("path", PSPCORE_FILES)
def test_pspcore_names_no_upper_module_in_a_string(path):
    assert upper_module_strings(ROOT / path) == []


def test_the_string_check_notices_a_named_module(tmp_path, monkeypatch):
    fake = tmp_path / "pspcore"
    fake.mkdir()
    (fake / "table.py").write_text(textwrap.dedent('''
        """Reads the ONNX Runtime session and pspnet metadata."""  # words, not modules
        PREFIX = "pspnet."
        BACKENDS = {"onnxruntime": "runtime.backends.onnxruntime:OnnxRuntimeRunner"}
        NEEDS = ("torch", "pspnet")
        def where(name):
            return f"see export.{name} for details"
    '''))
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert [line.split(":")[1] for line in upper_module_strings(fake / "table.py")] == ["4", "5", "7"]


# ---------------------------------------------------------------------------------- torch-free imports

TORCH_FREE_MODULES = ("pspnet.labels", "pspnet.data", "pspnet.data.datasets", "export.triton.repository",
                      "export.triton.ensemble")
BLOCK_TORCH = "import sys; sys.modules['torch'] = None  # any `import torch` now raises ImportError\n"


def import_without_torch(*modules: str) -> subprocess.CompletedProcess:
    code = BLOCK_TORCH + "".join(f"import {m}\n" for m in modules)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_torch_free_parts_import_without_torch():
    result = import_without_torch(*TORCH_FREE_MODULES)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_torch_block_works():
    """The same subprocess fails on a module that does need torch, so a pass above means something."""
    result = import_without_torch("pspnet.pspnet")
    assert result.returncode != 0 and "torch" in result.stderr


def test_the_triton_ensemble_builds_on_the_triton_export_one_way():
    """export.triton.repository writes the ensemble with export.triton.ensemble; the ensemble needs nothing of it (both
    share export.triton.config), so the two do not import each other."""
    ensemble = {module for _, module in imported_modules(ROOT / "export" / "triton_ensemble.py")}
    assert "export.triton.repository" not in ensemble
    assert "export.triton.ensemble" in {module for _, module in imported_modules(ROOT / "export" / "triton.py")}
