"""Training data: pairs that keep their geometry, one data module per task.

``load_split(cfg.data, split)`` returns a :class:`PairSet` for 'train' or 'val'.
"""
from __future__ import annotations

from .base import PairSet, flip_axis, make_batch
from .registry import load_split

__all__ = ["PairSet", "flip_axis", "make_batch", "load_split"]
