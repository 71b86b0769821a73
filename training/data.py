"""Mindboggle OASIS-TRT-20 pairs, prepared exactly as inference prepares them, cached on disk.

Every ordered pair (fixed, moving) of a split is affinely aligned with the engine's
affine stage and sampled on the fixed image's network grid (``DeepRegLib.pipeline``).
The cache (float16 ``.npz``) lives in ``training/cache/`` and is rebuilt if missing.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from DeepRegLib.pipeline import InputSpec, prepare_pair
from DeepRegLib.preprocess import resample_to_grid

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "brain-mindboggle-oasis-trt20"
ALL_SUBJECTS = [1, 2, 4, 5, 6, 7, 9, 10, 11, 13, 14, 15, 17, 18, 19]
VALIDATION_SUBJECTS = [17, 18, 19]
TRAIN_SUBJECTS = [s for s in ALL_SUBJECTS if s not in VALIDATION_SUBJECTS]


def data_root() -> Path:
    return Path(os.environ.get("DEEPREG_MINDBOGGLE", DEFAULT_DATA))


def subject_paths(subject: int, root: Optional[Path] = None) -> Dict[str, Path]:
    base = (root or data_root()) / f"OASIS-TRT-20-{subject}"
    return {"image": base / "t1weighted_brain.nii.gz", "labels": base / "labels.DKT31.manual+aseg.nii.gz"}


@dataclass
class PairCache:
    fixed: np.ndarray  # (N, z, y, x) float16
    moving: np.ndarray
    fixed_labels: Optional[np.ndarray]  # (N, z, y, x) int16, nearest on the grid
    moving_labels: Optional[np.ndarray]
    pairs: List[tuple]


def build_cache(subjects: Sequence[int], spec: InputSpec, path: Path, with_labels: bool,
                verbose: bool = True) -> PairCache:
    """Prepare every ordered pair of ``subjects`` and save the arrays to ``path``."""
    images = {s: sitk.ReadImage(str(subject_paths(s)["image"]), sitk.sitkFloat32) for s in subjects}
    labels = {s: sitk.ReadImage(str(subject_paths(s)["labels"])) for s in subjects} if with_labels else {}
    out: Dict[str, list] = {"fixed": [], "moving": [], "fixed_labels": [], "moving_labels": []}
    pairs = list(itertools.permutations(subjects, 2))
    for n, (fs, ms) in enumerate(pairs):
        prep = prepare_pair(images[fs], images[ms], spec)
        out["fixed"].append(prep.fixed.astype(np.float16))
        out["moving"].append(prep.moving.astype(np.float16))
        if with_labels:
            out["fixed_labels"].append(resample_to_grid(labels[fs], prep.grid, None, sitk.sitkNearestNeighbor).astype(np.int16))
            out["moving_labels"].append(resample_to_grid(labels[ms], prep.grid, prep.affine, sitk.sitkNearestNeighbor).astype(np.int16))
        if verbose and (n % 10 == 0 or n == len(pairs) - 1):
            print(f"cache {path.name}: pair {n + 1}/{len(pairs)}", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.stack(v) for k, v in out.items() if v}
    np.savez(path, pairs=np.array(pairs), **arrays)
    return load_cache(path)


def load_cache(path: Path) -> PairCache:
    z = np.load(path)
    return PairCache(z["fixed"], z["moving"], z["fixed_labels"] if "fixed_labels" in z else None,
                     z["moving_labels"] if "moving_labels" in z else None, [tuple(p) for p in z["pairs"]])


def get_cache(split: str, spec: InputSpec, cache_dir: Path) -> PairCache:
    """Cached pairs of ``split`` ('train' or 'val'), built on first use."""
    subjects = TRAIN_SUBJECTS if split == "train" else VALIDATION_SUBJECTS
    tag = f"{split}_{spec.spacing:g}mm_{'x'.join(map(str, spec.size))}.npz"
    path = cache_dir / tag
    if path.exists():
        return load_cache(path)
    return build_cache(subjects, spec, path, with_labels=(split == "val"))
