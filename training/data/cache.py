"""Content-hashed on-disk cache of prepared pairs.

The key is a SHA-256 of everything that shapes the arrays: the task and split, the
subjects, the affine-stage settings, the normalisation, the grid, the source code of
the modules that prepare the pairs, and the identity (name, size, mtime) of the input
files. Change any of these, e.g. the affine stage, and the cache is rebuilt instead of
silently reused.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterable

import numpy as np

from DeepRegLib.grid import Grid

from .base import PairSet

REPO = Path(__file__).resolve().parents[2]
#: modules whose code decides what a prepared pair contains
CODE_FILES = ["DeepRegLib/pipeline.py", "DeepRegLib/affine.py", "DeepRegLib/preprocess.py",
              "DeepRegLib/grid.py", "training/data/mindboggle.py", "training/data/cache.py"]


def code_version(files: Iterable[str] = CODE_FILES) -> str:
    h = hashlib.sha256()
    for f in files:
        p = REPO / f
        h.update(f.encode())
        h.update(p.read_bytes() if p.exists() else b"<missing>")
    return h.hexdigest()


def file_identity(path: Path) -> Dict[str, Any]:
    st = os.stat(path)
    return {"name": Path(path).name, "size": st.st_size, "mtime": int(st.st_mtime)}


def cache_key(content: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def save_pairset(data: PairSet, path: Path, content: Dict[str, Any]) -> None:
    """Write ``data`` atomically to ``path`` (``.npz``) with its key content beside it (``.json``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"fixed": data.fixed, "moving": data.moving,
              "origins": np.array([g.origin for g in data.grids]),
              "spacings": np.array([g.spacing for g in data.grids]),
              "sizes": np.array([g.size for g in data.grids])}
    if data.has_labels:
        arrays["fixed_labels"] = data.fixed_labels
        arrays["moving_labels"] = data.moving_labels
    if data.pairs is not None:
        arrays["pairs"] = np.array(data.pairs)
    if data.flows is not None:
        arrays["flows"] = data.flows
    # one temporary name per process: two runs that build the same set at once must not share it
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    meta = path.with_name(f"{path.stem}.{os.getpid()}.tmp.json")
    meta.write_text(json.dumps(content, indent=1, sort_keys=True, default=str))
    os.replace(meta, path.with_suffix(".json"))


def load_pairset(path: Path) -> PairSet:
    z = np.load(path)
    grids = [Grid(tuple(map(float, o)), tuple(map(float, s)), tuple(map(int, n)))
             for o, s, n in zip(z["origins"], z["spacings"], z["sizes"])]
    return PairSet(z["fixed"], z["moving"], grids,
                   z["fixed_labels"] if "fixed_labels" in z else None,
                   z["moving_labels"] if "moving_labels" in z else None,
                   [tuple(int(x) for x in p) for p in z["pairs"]] if "pairs" in z else None,
                   z["flows"] if "flows" in z else None)


def cached(cache_dir: Path, prefix: str, content: Dict[str, Any], build: Callable[[], PairSet]) -> PairSet:
    """Load the pair set keyed by ``content`` from ``cache_dir``, or build and save it."""
    key = cache_key(content)
    path = Path(cache_dir) / f"{prefix}-{key[:16]}.npz"
    if path.exists():
        return load_pairset(path)
    data = build()
    save_pairset(data, path, content)
    return data
