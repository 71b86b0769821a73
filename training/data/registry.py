"""One entry point for every task's data: ``load_split(data_config, split)``."""
from __future__ import annotations

from pathlib import Path

from DeepRegLib.affine import AffineConfig
from DeepRegLib.preprocess import Normalisation

from . import cache, mindboggle, synthetic
from .base import PairSet


def affine_config(data_cfg) -> AffineConfig:
    """The engine's affine-stage settings used to prepare this data (recorded in the model card)."""
    return AffineConfig(**getattr(data_cfg, "affine", {}) or {})


def normalisation(data_cfg) -> Normalisation:
    return Normalisation(kind=data_cfg.normalisation)


def load_split(data_cfg, split: str) -> PairSet:
    """Pairs of ``split`` ('train' | 'val') for ``data_cfg.task``."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', not {split!r}")
    if data_cfg.task == "synthetic":
        n = data_cfg.synthetic_pairs if split == "train" else max(2, data_cfg.synthetic_pairs // 4)
        return synthetic.build(n, data_cfg.size, data_cfg.spacing, seed=0 if split == "train" else 1)
    if data_cfg.task == "mindboggle":
        subjects = data_cfg.train_subjects if split == "train" else data_cfg.validation_subjects
        cache_dir = Path(data_cfg.cache_dir)
        if not cache_dir.is_absolute():
            cache_dir = cache.REPO / cache_dir
        return mindboggle.load(split, data_cfg.spacing, data_cfg.size, normalisation(data_cfg),
                               affine_config(data_cfg), cache_dir, subjects)
    raise ValueError(f"unknown task {data_cfg.task!r}; choose 'mindboggle' or 'synthetic'")
