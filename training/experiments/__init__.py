"""One file per experiment; each defines ``config() -> ExperimentConfig``.

``python -m training list`` shows them; ``python -m training run NAME`` runs one.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Dict

from ..config import ExperimentConfig
from DeepRegLib.names import look_up_option


def names() -> list:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def load(name: str) -> ExperimentConfig:
    look_up_option(name, names(), "experiment", KeyError)
    cfg = importlib.import_module(f"{__name__}.{name}").config()
    cfg.name = name
    return cfg


def descriptions() -> Dict[str, str]:
    return {n: load(n).description for n in names()}
