"""The architecture as a test: the import graph of DeepRegLib and training (``ast`` of every module,
imports inside functions included)."""
import ast
from pathlib import Path
from typing import Dict, Set

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("DeepRegLib", "training")
SLICER_MODULES = {"slicer", "qt", "ctk", "vtk", "mrml", "vtkmodules"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> Dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for p in (REPO / pkg).rglob("*.py"):
            if not {"runs", "cache", "__pycache__"} & set(p.relative_to(REPO).parts):
                found[_module_name(p)] = p
    return found


def _imports(name: str, path: Path, modules: Dict[str, Path]):
    """``(internal modules, top-level external names)`` that ``name`` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    internal: Set[str] = set()
    external: Set[str] = set()

    def add(target: str) -> None:
        while target and target not in modules:  # an attribute of a module: the module
            target = target.rpartition(".")[0]
        if target and target != name:
            internal.add(target)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                (add if a.name.split(".")[0] in PACKAGES else lambda n: external.add(n.split(".")[0]))(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] not in PACKAGES:
                external.add(mod.split(".")[0])
                continue
            for a in node.names:
                add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod)
    return internal, external


def _graph():
    modules = _modules()
    return modules, {n: _imports(n, p, modules) for n, p in modules.items()}


def _cycles(edges: Dict[str, Set[str]]):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_loop():
    _, graph = _graph()
    assert _cycles({n: internal for n, (internal, _) in graph.items()}) == []


def test_the_cycle_finder_finds_a_loop():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_only_the_slicer_adapter_imports_slicer():
    _, graph = _graph()
    offenders = {n: sorted(ext & SLICER_MODULES) for n, (_, ext) in graph.items()
                 if n.startswith("DeepRegLib") and not n.startswith("DeepRegLib.slicer_adapter")
                 and ext & SLICER_MODULES}
    assert offenders == {}
    assert any(ext & SLICER_MODULES for n, (_, ext) in graph.items() if n.startswith("DeepRegLib.slicer_adapter"))


def test_batch_and_demos_sit_on_top():
    """Nothing in the engine imports the Dask batch or the demos (only the command line that runs them)."""
    _, graph = _graph()
    for top in ("DeepRegLib.batch", "DeepRegLib.demos"):
        users = sorted(n for n, (internal, _) in graph.items() if n.startswith("DeepRegLib")
                       and not n.startswith(top) and any(m == top or m.startswith(top + ".") for m in internal))
        assert users in ([], ["DeepRegLib.cli"]), (top, users)


def test_the_engine_never_imports_training():
    _, graph = _graph()
    assert {n: sorted(m for m in internal if m.startswith("training"))
            for n, (internal, _) in graph.items() if n.startswith("DeepRegLib")
            and any(m.startswith("training") for m in internal)} == {}


def test_the_wheel_ships_the_engine_only():
    """pyproject's package list takes every DeepRegLib package and nothing of training/ (run from a checkout)."""
    import fnmatch
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import pytest
        pytest.skip("tomllib needs Python >= 3.11")
    conf = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = sorted({n for n, p in _modules().items() if p.name == "__init__.py"})

    def shipped(name):
        return any(fnmatch.fnmatchcase(name, pat) for pat in conf["include"]) and \
            not any(fnmatch.fnmatchcase(name, pat) for pat in conf.get("exclude", []))

    assert [n for n in packages if n.startswith("DeepRegLib") and not shipped(n)] == []
    assert [n for n in packages if n.startswith("training") and shipped(n)] == []
