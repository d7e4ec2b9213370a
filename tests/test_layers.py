"""The layers of the house, checked on every import statement (module level or inside a function): a small
torch-free base (pspcore) at the bottom; pspnet and runtime side by side on it, neither importing the other;
export above them; psp-bench (benchmarks) on top; the experiments scripts above everything."""
from __future__ import annotations

import ast
import sys
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
