"""The layers of the house, checked on every import statement (module level or inside a function): a small
torch-free base (pspcore) at the bottom; pspnet and runtime side by side on it, neither importing the other;
export above them; psp-bench (benchmarks) on top; the experiments scripts above everything. pspcore names no
upper module even in a string (no "module:Class" tables), and the torch-free parts of pspnet and export
import in a process where torch cannot be imported. Outside experiments/, no modules import each other, even
through a third (a circle is the drawing of a file split by size rather than by concept)."""
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


# ----------------------------------------------------------------------------------------- no import circles

# Circles another change removes (the precision targets of issue 27 restructure export/precision); an entry
# that no longer is a circle fails below, so this list can only shrink.
KNOWN_CIRCLES: set[tuple[str, ...]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(packages=PACKAGES) -> dict[str, set[str]]:
    """module -> the project modules it imports (module level or inside a function, TYPE_CHECKING included:
    each is an arrow of the drawing). `from a.b import c` points at a.b.c when c is a module, else at a.b."""
    modules = {module_name(p): p for package in packages for p in sorted((ROOT / package).rglob("*.py"))}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets |= {full} if full in modules else {node.module} & modules.keys()
        graph[name] = targets - {name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted: every circle of imports,
    two-way or longer."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph.get(module, ()):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                found.append(tuple(sorted(group)))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(found)


def test_no_import_circles_outside_experiments():
    """Split a file by concept, not by size: modules that import each other share a type that belongs below
    both."""
    found = circles(import_graph(tuple(p for p in PACKAGES if p != "experiments")))
    assert [c for c in found if c not in KNOWN_CIRCLES] == []
    assert KNOWN_CIRCLES <= set(found), "a known circle is gone: remove it from KNOWN_CIRCLES"


def test_the_circle_check_notices_a_circle(tmp_path, monkeypatch):
    """Two-way, three-way (through `from package import module` and a TYPE_CHECKING import), not a one-way
    chain."""
    fake = tmp_path / "benchmarks"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "a.py").write_text("from benchmarks import b\n")
    (fake / "b.py").write_text("def f():\n    from benchmarks.a import thing\n")
    (fake / "c.py").write_text("import benchmarks.d\n")
    (fake / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from benchmarks.e import X\n")
    (fake / "e.py").write_text("from benchmarks.c import Y\nimport benchmarks.a\n")
    (fake / "f.py").write_text("from benchmarks.a import thing\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert circles(import_graph(("benchmarks",))) == [("benchmarks.a", "benchmarks.b"),
                                                       ("benchmarks.c", "benchmarks.d", "benchmarks.e")]
