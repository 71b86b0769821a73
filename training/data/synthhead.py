"""Synthetic-contrast whole heads (SynthMorph-style) from the SynthSeg label maps.

Source: ``../shared/data/brain-synthseg-labelmaps/training_seg_XX.nii.gz``: 20 real
whole-head label maps (256^3 at 1 mm, FreeSurfer label values, brain labels < 100 and
non-brain tissue >= 100); no images. Licence Apache-2.0 (the SynthSeg project), so a
model trained only on these carries a permissive licence.

Split (fixed; never tuned on the validation maps):
* train: label maps 01-16, ``pairs`` random ordered pairs of distinct maps;
* validation: label maps 17-20, all 12 ordered pairs.

Preparation of one pair (fixed map F, moving map M), deterministic in the pair's seed:
1. a shared "reference" rendering of both maps (one fixed intensity per label) goes
   through the engine's affine stage (correlation), so pairs arrive as inference
   prepares them (the network grid is centred on F's foreground);
2. both label maps are resampled (nearest) onto the network grid, M through the affine;
3. each image is then rendered on the grid with its *own* random contrast: a random
   mean per label (background included) with per-label Gaussian noise, Gaussian blur,
   a smooth multiplicative bias field, a random gamma, then the engine's percentile
   normalisation. Fixed and moving therefore differ in contrast: the model must learn
   from shape (train with the label Dice term; intensity similarity is off for this task).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from DeepRegLib.affine import AffineConfig
from DeepRegLib.pipeline import InputSpec, prepare_pair
from DeepRegLib.preprocess import resample_to_grid

from . import cache
from .base import PairSet
from .filters import gaussian_filter, resize_linear

DEFAULT_DATA = cache.REPO.parent / "shared" / "data" / "brain-synthseg-labelmaps"
TRAIN_MAPS = list(range(1, 17))
VALIDATION_MAPS = [17, 18, 19, 20]
LICENCE = "Apache-2.0 (SynthSeg label maps, brain-synthseg-labelmaps)"
DESCRIPTION = "synthetic-contrast whole heads rendered from 20 SynthSeg label maps (SynthMorph-style)"
#: labels >= this are non-brain tissue (skull, scalp, eyes, ...); brain Dice is over labels below it
BRAIN_LABEL_LIMIT = 100


def data_root() -> Path:
    return Path(os.environ.get("DEEPREG_SYNTHSEG", DEFAULT_DATA))


def map_path(n: int, root: Optional[Path] = None) -> Path:
    return (root or data_root()) / f"training_seg_{n:02d}.nii.gz"


def render(labels: np.ndarray, rng: np.random.Generator, spacing: float,
           means: Optional[Dict[int, float]] = None) -> np.ndarray:
    """A random-contrast image (float32, [0, 1]) of the label map ``labels`` (z, y, x) on a grid of ``spacing`` mm.

    ``means`` (label value -> mean intensity) replaces the random mean of each label, e.g. a T1-like
    contrast (:func:`t1_like_means`); noise, blur, bias field and gamma stay random."""
    values = np.unique(labels)
    drawn = rng.uniform(0.0, 1.0, len(values)) if means is None else [means[v] for v in values.tolist()]
    lut_mean = dict(zip(values.tolist(), drawn))
    lut_std = dict(zip(values.tolist(), rng.uniform(0.0, 0.08, len(values))))
    index = np.searchsorted(values, labels)
    mean = np.array([lut_mean[v] for v in values], np.float32)[index]
    std = np.array([lut_std[v] for v in values], np.float32)[index]
    img = mean + std * rng.standard_normal(labels.shape).astype(np.float32)
    img = gaussian_filter(img, rng.uniform(0.3, 1.2) * 2.0 / spacing)  # 0.6-2.4 mm
    coarse = rng.normal(0.0, 0.3, (4, 4, 4)).astype(np.float32)
    bias = np.exp(resize_linear(coarse, labels.shape))
    img = np.clip(img * bias, 0, None)
    img = img / max(float(img.max()), 1e-6)
    img = img ** float(np.exp(rng.normal(0.0, 0.25)))
    img = img + rng.uniform(0.0, 0.03) * rng.standard_normal(labels.shape).astype(np.float32)
    return img.astype(np.float32)


#: T1-weighted-like mean intensities of the brain labels (white matter bright, grey matter darker, CSF dark)
T1_BRAIN_MEANS = {
    **dict.fromkeys((2, 41, 7, 46), 0.85), **dict.fromkeys((16, 28, 60, 85), 0.75), **dict.fromkeys((13, 52), 0.72),
    **dict.fromkeys((10, 49), 0.68), **dict.fromkeys((12, 51), 0.62), **dict.fromkeys((11, 50, 26, 58), 0.58),
    **dict.fromkeys((3, 42, 8, 47, 17, 53, 18, 54, 30, 62), 0.52), **dict.fromkeys((4, 5, 14, 15, 24, 43, 44, 72), 0.12)}


def t1_like_means(values) -> Dict[int, float]:
    """Mean intensity per label value for a T1-like rendering: :data:`T1_BRAIN_MEANS` for brain labels,
    background 0, and for non-brain tissue (labels >= 100, unnamed here) one fixed value in [0.1, 0.9) per
    label, the same in every map, so that two heads share one contrast as two scans of one protocol do."""
    out = {}
    for v in (int(x) for x in values):
        if v == 0:
            out[v] = 0.0
        elif v in T1_BRAIN_MEANS:
            out[v] = T1_BRAIN_MEANS[v]
        else:
            out[v] = 0.1 + 0.8 * ((v * 2654435761) % 997) / 997.0
    return out


def reference_lut(labels: np.ndarray) -> np.ndarray:
    """``labels`` (any shape, non-negative ints) as float32 intensities: one fixed value in [0.2, 1.2) per
    label value, the same for every map, background 0."""
    arr = np.asarray(labels).astype(np.int64)
    lut = (np.arange(arr.max() + 1) * 2654435761 % 997).astype(np.float32) / 997.0 + 0.2
    lut[0] = 0.0
    return lut[arr]


def _reference_rendering(lab: sitk.Image) -> sitk.Image:
    """One fixed intensity per label (the same for every map), for the affine stage."""
    img = sitk.GetImageFromArray(reference_lut(sitk.GetArrayViewFromImage(lab)))
    img.CopyInformation(lab)
    return img


def build_pairs(pairs: Sequence[Tuple[int, int]], spec: InputSpec, affine: AffineConfig, seed: int,
                root: Optional[Path] = None, verbose: bool = True) -> PairSet:
    """Prepare the ordered label-map pairs ``(fixed, moving)`` as described in the module docstring."""
    maps = sorted({n for p in pairs for n in p})
    labs = {n: sitk.ReadImage(str(map_path(n, root)), sitk.sitkInt16) for n in maps}
    refs = {n: _reference_rendering(labs[n]) for n in maps}
    out: Dict[str, List] = {"fixed": [], "moving": [], "fl": [], "ml": [], "grids": []}
    for k, (fn, mn) in enumerate(pairs):
        rng = np.random.default_rng([seed, fn, mn, k])
        prep = prepare_pair(refs[fn], refs[mn], spec, affine)
        fl = resample_to_grid(labs[fn], prep.grid, None, sitk.sitkNearestNeighbor).astype(np.int16)
        ml = resample_to_grid(labs[mn], prep.grid, prep.affine, sitk.sitkNearestNeighbor).astype(np.int16)
        out["fixed"].append(spec.normalisation.apply(render(fl, rng, spec.spacing)).astype(np.float16))
        out["moving"].append(spec.normalisation.apply(render(ml, rng, spec.spacing)).astype(np.float16))
        out["fl"].append(fl)
        out["ml"].append(ml)
        out["grids"].append(prep.grid)
        if verbose and (k % 10 == 0 or k == len(pairs) - 1):
            print(f"[data] synthhead pair {k + 1}/{len(pairs)}", flush=True)
    return PairSet(np.stack(out["fixed"]), np.stack(out["moving"]), out["grids"], np.stack(out["fl"]),
                   np.stack(out["ml"]), [tuple(p) for p in pairs])


def split_pairs(split: str, n_pairs: int = 0, seed: int = 0) -> List[Tuple[int, int]]:
    """Train: ``n_pairs`` (default 48) random ordered pairs of maps 01-16; val: all ordered pairs of 17-20."""
    if split == "val":
        return [(a, b) for a in VALIDATION_MAPS for b in VALIDATION_MAPS if a != b]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_pairs or 48):
        a, b = rng.choice(TRAIN_MAPS, 2, replace=False)
        out.append((int(a), int(b)))
    return out


def load(split: str, spec: InputSpec, affine: AffineConfig, cache_dir: Path, n_pairs: int = 0) -> PairSet:
    pairs = split_pairs(split, n_pairs)
    files = [cache.file_identity(map_path(n)) for n in sorted({n for p in pairs for n in p})]
    content = {"task": "synthhead", "split": split, "pairs": pairs, "input": spec.to_dict(),
               "affine": affine.to_dict(), "code": cache.code_version(cache.CODE_FILES + ["training/data/synthhead.py"]),
               "files": files}
    seed = 0 if split == "train" else 1
    return cache.cached(cache_dir, f"synthhead-{split}", content, lambda: build_pairs(pairs, spec, affine, seed))
