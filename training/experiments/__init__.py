"""One file per experiment; each defines ``config() -> ExperimentConfig``.

``python -m training list`` shows them; ``python -m training run NAME`` runs one.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Dict

from ..config import ExperimentConfig


def names() -> list:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def load(name: str) -> ExperimentConfig:
    if name not in names():
        raise KeyError(f"unknown experiment {name!r}; available: {', '.join(names())}")
    cfg = importlib.import_module(f"{__name__}.{name}").config()
    cfg.name = name
    return cfg


def descriptions() -> Dict[str, str]:
    return {n: load(n).description for n in names()}
