"""Loading training checkpoints without running code from them.

A checkpoint (``last.pt``/``best.pt``) holds state dicts, the run's config, its history and RNG states
(numpy's among them). ``torch.load(weights_only=True)`` refuses anything but tensors and plain data;
:func:`load_checkpoint` allows exactly the numpy types an RNG state needs besides, so a crafted file
cannot run code when it is loaded (torch >= 2.6, see pyproject.toml).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import numpy as np
import torch


def _numpy_globals() -> list:
    """The numpy objects needed to rebuild arrays and dtypes (an RNG state) under ``weights_only``."""
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed np.core
    names = [core.multiarray._reconstruct, np.ndarray, np.dtype]
    names += [type(np.dtype(t)) for t in (np.uint32, np.int64, np.float64, np.uint8, np.bool_)]
    names += [np.uint32, np.int64, np.float64]
    scalar = getattr(core.multiarray, "scalar", None)
    if scalar is not None:
        names.append(scalar)
    return names


def load_checkpoint(path: Union[str, Path], map_location: str = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with the numpy RNG types allowed (nothing else)."""
    with torch.serialization.safe_globals(_numpy_globals()):
        return torch.load(path, map_location=map_location, weights_only=True)
