"""One entry point for every task's data: ``load_split(data_config, split)``."""
from __future__ import annotations

from pathlib import Path

from DeepRegLib.affine import AffineConfig
from DeepRegLib.pipeline import InputSpec
from DeepRegLib.preprocess import Normalisation

from . import cache, ct, mindboggle, prostate, synthetic, synthhead
from .base import PairSet
from DeepRegLib.names import look_up_option


def affine_config(data_cfg) -> AffineConfig:
    """The engine's affine-stage settings used to prepare this data (recorded in the model card)."""
    return AffineConfig(**getattr(data_cfg, "affine", {}) or {})


def normalisation(data_cfg) -> Normalisation:
    return Normalisation(kind=data_cfg.normalisation)


def load_split(data_cfg, split: str) -> PairSet:
    """Pairs of ``split`` ('train' | 'val') for ``data_cfg.task``."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', not {split!r}")
    if data_cfg.task in SYNTHETIC_VARIANTS:  # smoke tasks: seconds, no files
        n = data_cfg.synthetic_pairs if split == "train" else max(2, data_cfg.synthetic_pairs // 4)
        offset, amplitude, invert = SYNTHETIC_VARIANTS[data_cfg.task]
        data = synthetic.build(n, data_cfg.size, data_cfg.spacing, seed=offset + (0 if split == "train" else 1),
                               amplitude=amplitude)
        if invert:
            data.fixed, data.moving = (1 - data.fixed) * (data.fixed > 0), (1 - data.moving) * (data.moving > 0)
        return data
    if data_cfg.task in ("synthhead", "prostate", "ct"):
        return _task_split(data_cfg, split)
    if data_cfg.task == "mindboggle":
        subjects = data_cfg.train_subjects if split == "train" else data_cfg.validation_subjects
        cache_dir = Path(data_cfg.cache_dir)
        if not cache_dir.is_absolute():
            cache_dir = cache.REPO / cache_dir
        return mindboggle.load(split, data_cfg.spacing, data_cfg.size, normalisation(data_cfg),
                               affine_config(data_cfg), cache_dir, subjects)
    look_up_option(data_cfg.task, sorted(['mindboggle', 'synthhead', 'prostate', 'ct', *SYNTHETIC_VARIANTS]), "task")
    raise AssertionError("unreachable")


#: smoke variants of the synthetic task: (seed offset, deformation amplitude in voxels, inverted contrast)
SYNTHETIC_VARIANTS = {"synthetic": (0, 2.0, False), "synthetic_inverted": (10, 2.0, True),
                      "synthetic_large": (20, 3.5, False)}


def load_ixi(data_cfg, split: str) -> PairSet:
    """IXI inter-subject pairs of ``split`` on ``data_cfg``'s grid (training/data/ixi.py)."""
    from . import ixi
    spec, affine = task_input(data_cfg)
    return ixi.load(split, spec, affine, _cache_dir(data_cfg), limit=data_cfg.ixi_limit)


def _cache_dir(data_cfg) -> Path:
    d = Path(data_cfg.cache_dir)
    return d if d.is_absolute() else cache.REPO / d


def task_input(data_cfg):
    """``(InputSpec, AffineConfig)`` the pairs of ``data_cfg.task`` are prepared with (what a bundle's card records)."""
    from DeepRegLib.bundles.taskspec import builtin_task

    from .tasks import normalisation_of
    size = tuple(int(s) for s in data_cfg.size)
    if data_cfg.task in ("prostate", "ct"):
        spec = InputSpec(float(data_cfg.spacing), size, normalisation_of(data_cfg), placement="image_centre")
        return spec, builtin_task(data_cfg.task).affine
    return InputSpec(float(data_cfg.spacing), size, normalisation_of(data_cfg)), affine_config(data_cfg)


def _task_split(data_cfg, split: str):
    """The real-data tasks of the continual-learning issue (each module documents its split)."""
    spec, affine = task_input(data_cfg)
    if data_cfg.task == "synthhead":
        return synthhead.load(split, spec, affine, _cache_dir(data_cfg), data_cfg.pairs if split == "train" else 0)
    if data_cfg.task == "prostate":
        return prostate.load(split, _cache_dir(data_cfg), spec, affine)
    return ct.load(split, _cache_dir(data_cfg), spec, data_cfg.pairs if split == "train" else 0)
