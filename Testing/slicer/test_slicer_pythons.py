"""The module and its engine on the Pythons of the Slicer releases it supports (defect 5).

Slicer 5.6-5.8 ship Python 3.9 (SimpleITK 2.2.1), Slicer 5.10-5.12 Python 3.12 (SimpleITK 2.5).  A
full second stack (numpy, SimpleITK 2.2.1, torch, slicer-core for Python 3.9) could not be installed
quickly where this was written, so this checks what a bare interpreter can: every file of
``DeepReg/`` and ``DeepRegLib/`` compiles under each interpreter found (``pyenv`` versions or
``python3.9`` / ``python3.12`` on PATH; skipped where none is), and, for Python 3.9, no construct
that parses but fails at run time before 3.10 (``zip(strict=)``, ``dataclass(slots=/kw_only=)``,
``X | Y`` type unions evaluated at run time, i.e. outside annotations of a file with ``from
__future__ import annotations``).
"""
from __future__ import annotations

import ast
import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FILES = sorted([str(REPO / "DeepReg" / "DeepReg.py")] + glob.glob(str(REPO / "DeepRegLib" / "**" / "*.py"),
                                                                    recursive=True))


def _interpreter(version: str):
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for cand in sorted(root.glob(f"{version}.*")) if root.is_dir() else []:
        if (cand / "bin" / "python").is_file():
            return str(cand / "bin" / "python")
    return shutil.which(f"python{version}")


@pytest.mark.parametrize("version", ["3.9", "3.12"])
def test_every_file_compiles(version):
    python = _interpreter(version)
    if python is None:
        pytest.skip(f"no Python {version} here")
    code = ("import sys\nbad = []\nfor f in sys.argv[1:]:\n"
            "    try:\n        compile(open(f, encoding='utf-8').read(), f, 'exec')\n"
            "    except SyntaxError as e:\n        bad.append(f'{f}:{e.lineno}: {e.msg}')\nprint('\\n'.join(bad))\n")
    out = subprocess.run([python, "-c", code, *FILES], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def _runtime_310_features(path: str):
    tree = ast.parse(Path(path).read_text())
    future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and
                 any(a.name == "annotations" for a in n.names) for n in tree.body)
    annotations = set()
    for node in ast.walk(tree):
        for ann in [getattr(node, "annotation", None), getattr(node, "returns", None)]:
            if ann is not None:
                annotations.update(id(n) for n in ast.walk(ann))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            kws = {k.arg for k in node.keywords}
            if name == "zip" and "strict" in kws:
                yield node.lineno, "zip(strict=)"
            if name.endswith("dataclass") and kws & {"slots", "kw_only"}:
                yield node.lineno, "dataclass(slots=/kw_only=)"
            if name == "isinstance" and len(node.args) == 2 and isinstance(node.args[1], ast.BinOp):
                yield node.lineno, "isinstance(x, A | B)"
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and id(node) in annotations and not future:
            yield node.lineno, "X | Y annotation evaluated at run time"


def test_no_run_time_310_features_for_python_39():
    found = [f"{Path(f).relative_to(REPO)}:{line}: {what}" for f in FILES for line, what in _runtime_310_features(f)]
    assert not found, "\n".join(found)
