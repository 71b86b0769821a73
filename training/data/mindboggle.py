"""Mindboggle-101 OASIS-TRT-20 pairs, prepared exactly as inference prepares them.

Every ordered pair (fixed, moving) of a split is affinely aligned with the engine's
affine stage and sampled on the fixed image's network grid (``DeepRegLib.pipeline``);
labels are resampled nearest-neighbour through the same affine. Training subjects
carry their manual labels too (for evaluation and label-aware losses).
Licence of the data: CC BY-NC-SA 3.0 (see ``../shared/data/README.md``).
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from DeepRegLib.affine import AffineConfig
from DeepRegLib.pipeline import InputSpec, prepare_pair
from DeepRegLib.preprocess import Normalisation, resample_to_grid

from . import cache
from .base import PairSet

DEFAULT_DATA = cache.REPO.parent / "shared" / "data" / "brain-mindboggle-oasis-trt20"
ALL_SUBJECTS = [1, 2, 4, 5, 6, 7, 9, 10, 11, 13, 14, 15, 17, 18, 19]
VALIDATION_SUBJECTS = [17, 18, 19]
TRAIN_SUBJECTS = [s for s in ALL_SUBJECTS if s not in VALIDATION_SUBJECTS]
LICENCE = ("Creative Commons BY-NC-SA 3.0, (c) 2012 Mindboggle team; OASIS data terms apply. "
           "Cite Klein & Tourville 2012, Front. Neurosci. 6:171, doi:10.3389/fnins.2012.00171.")
DESCRIPTION = "Mindboggle-101 OASIS-TRT-20 T1 brains (skull-stripped, 1 mm)"


def data_root() -> Path:
    return Path(os.environ.get("DEEPREG_MINDBOGGLE", DEFAULT_DATA))


def subject_paths(subject: int, root: Optional[Path] = None) -> Dict[str, Path]:
    base = (root or data_root()) / f"OASIS-TRT-20-{subject}"
    return {"image": base / "t1weighted_brain.nii.gz", "labels": base / "labels.DKT31.manual+aseg.nii.gz"}


def build(subjects: Sequence[int], spec: InputSpec, affine: AffineConfig, verbose: bool = True) -> PairSet:
    """Prepare every ordered pair of ``subjects`` (fixed first) with images and labels."""
    images = {s: sitk.ReadImage(str(subject_paths(s)["image"]), sitk.sitkFloat32) for s in subjects}
    labels = {s: sitk.ReadImage(str(subject_paths(s)["labels"])) for s in subjects}
    out: Dict[str, list] = {"fixed": [], "moving": [], "fixed_labels": [], "moving_labels": [], "grids": []}
    pairs = list(itertools.permutations(subjects, 2))
    for n, (fs, ms) in enumerate(pairs):
        prep = prepare_pair(images[fs], images[ms], spec, affine)
        out["fixed"].append(prep.fixed.astype(np.float16))
        out["moving"].append(prep.moving.astype(np.float16))
        out["fixed_labels"].append(resample_to_grid(labels[fs], prep.grid, None, sitk.sitkNearestNeighbor).astype(np.int16))
        out["moving_labels"].append(
            resample_to_grid(labels[ms], prep.grid, prep.affine, sitk.sitkNearestNeighbor).astype(np.int16))
        out["grids"].append(prep.grid)
        if verbose and (n % 10 == 0 or n == len(pairs) - 1):
            print(f"[data] mindboggle pair {n + 1}/{len(pairs)}", flush=True)
    return PairSet(np.stack(out["fixed"]), np.stack(out["moving"]), out["grids"],
                   np.stack(out["fixed_labels"]), np.stack(out["moving_labels"]), pairs)


def load(split: str, spacing: float, size: Sequence[int], normalisation: Normalisation, affine: AffineConfig,
         cache_dir: Path, subjects: Optional[List[int]] = None) -> PairSet:
    """The cached pairs of ``split`` ('train' | 'val'), rebuilt whenever anything that shapes them changes."""
    if subjects is None:
        subjects = TRAIN_SUBJECTS if split == "train" else VALIDATION_SUBJECTS
    spec = InputSpec(spacing=float(spacing), size=tuple(int(s) for s in size), normalisation=normalisation)
    files = [cache.file_identity(p) for s in subjects for p in subject_paths(s).values()]
    content = {"task": "mindboggle", "split": split, "subjects": list(subjects), "input": spec.to_dict(),
               "affine": affine.to_dict(), "code": cache.code_version(), "files": files}
    return cache.cached(cache_dir, f"mindboggle-{split}", content, lambda: build(subjects, spec, affine))
