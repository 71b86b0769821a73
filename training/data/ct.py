"""CT with realistic synthetic deformations and a known ground-truth displacement.

Sources (``../shared/data/ct-totalsegmentator``, Apache-2.0, TotalSegmentator test files):
``example_ct_3mm.nii.gz`` (abdomen-pelvis, 3 mm, 104 organ labels) and
``chest_ct_cropped_1p5mm.nii.gz`` (chest, no labels).

Split: there is only one labelled CT, so the split is spatial:
* train: crops of the chest CT, and crops centred in the *superior* half of the labelled
  CT (thorax-abdomen);
* validation: crops centred in the *inferior* half of the labelled CT (pelvis; organ
  labels mostly disjoint from the training crops' centres), with their own deformations.

One pair: a crop (the network grid, :data:`SPEC`, jittered around the region's centre) of
the CT and its labels is the **moving** image; a smooth random displacement ``u`` (cubic
B-spline-like: a random 5^3 control lattice, trilinear upsampling, then Gaussian smoothing;
up to 16 mm at the peak, 2-4.5 mm on average; no folding) warps it into the **fixed** image, ``fixed(x) = moving(x + u(x))`` with
independent noise added to each. ``u`` (voxels, fixed -> moving) is stored as the known
flow, so TRE against it is exact. Intensities: Hounsfield window [-1000, 1000] -> [0, 1].
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk
import torch

from DeepRegLib.grid import Grid, centred_grid, physical_bounding_box
from DeepRegLib.pipeline import InputSpec
from DeepRegLib.preprocess import resample_to_grid
from DeepRegLib.bundles.taskspec import builtin_task
from DeepRegLib.spatial import warp

from . import cache
from .base import PairSet
from .filters import gaussian_filter

DEFAULT_DATA = cache.REPO.parent / "shared" / "data" / "ct-totalsegmentator"
LABELLED = "example_ct_3mm.nii.gz"
LABELS = "example_ct_3mm_seg_v1_104cls.nii.gz"
CHEST = "chest_ct_cropped_1p5mm.nii.gz"
LICENCE = "Apache-2.0 (TotalSegmentator test files, ct-totalsegmentator)"
DESCRIPTION = "CT (abdomen-pelvis, chest) with synthetic smooth deformations of known displacement"
SPEC: InputSpec = builtin_task("ct").input  # the engine's CT task (DeepRegLib.bundles.taskspec)
MAX_DISPLACEMENT_MM = 16.0  # peak; the mean over a crop is then ~2-4.5 mm


def data_root() -> Path:
    return Path(os.environ.get("DEEPREG_CT", DEFAULT_DATA))


def smooth_flow(rng: np.random.Generator, shape: Tuple[int, int, int], amplitude: float) -> np.ndarray:
    """A smooth random flow ``(3, D, H, W)`` in voxels, max norm about ``amplitude`` voxels, zero mean."""
    coarse = torch.from_numpy(rng.normal(0.0, 1.0, (1, 3, 5, 5, 5)).astype(np.float32))
    f = torch.nn.functional.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=True)[0].numpy()
    f = np.stack([gaussian_filter(c, 2.0) for c in f])
    f -= f.mean(axis=(1, 2, 3), keepdims=True)
    peak = float(np.sqrt((f ** 2).sum(0)).max())
    return (f * (amplitude / max(peak, 1e-6))).astype(np.float32)


def region_centres(image: sitk.Image, half: str) -> Tuple[np.ndarray, np.ndarray]:
    """(low, high) LPS corners of the allowed crop centres: 'superior' / 'inferior' half or 'all' of ``image``."""
    lo, hi = physical_bounding_box(image)
    mid = (lo + hi) / 2
    if half == "superior":
        lo = np.array([lo[0], lo[1], mid[2]])
    elif half == "inferior":
        hi = np.array([hi[0], hi[1], mid[2]])
    c = (lo + hi) / 2
    jitter = np.array([15.0, 15.0, 0.25 * (hi[2] - lo[2])])
    return c - jitter, c + jitter


def build(sources: List[Tuple[str, str, int]], spec: InputSpec = SPEC, seed: int = 0,
          root: Optional[Path] = None) -> PairSet:
    """``sources``: (file, region, number of pairs). Deterministic in ``seed``."""
    root = root or data_root()
    rng = np.random.default_rng(seed)
    out: Dict[str, list] = {"fixed": [], "moving": [], "fl": [], "ml": [], "grids": [], "flows": []}
    shape = tuple(int(s) for s in spec.size[::-1])
    for name, region, n in sources:
        img = sitk.ReadImage(str(root / name), sitk.sitkFloat32)
        lab = sitk.ReadImage(str(root / LABELS)) if name == LABELLED else None
        lo, hi = region_centres(img, region)
        for _ in range(n):
            grid = centred_grid(rng.uniform(lo, hi), spec.spacing, spec.size)
            moving = resample_to_grid(img, grid, default=-1024.0)
            ml = (resample_to_grid(lab, grid, None, sitk.sitkNearestNeighbor).astype(np.int16) if lab is not None
                  else np.zeros(shape, np.int16))
            flow = smooth_flow(rng, shape, rng.uniform(0.5, 1.0) * MAX_DISPLACEMENT_MM / spec.spacing)
            tf = torch.from_numpy(flow)[None]
            fixed = warp(torch.from_numpy(moving)[None, None], tf)[0, 0].numpy()
            fl = warp(torch.from_numpy(ml.astype(np.float32))[None, None], tf, mode="nearest")[0, 0].numpy()
            noise = lambda: rng.normal(0.0, 10.0, shape).astype(np.float32)  # HU
            out["fixed"].append(spec.normalisation.apply(fixed + noise()).astype(np.float16))
            out["moving"].append(spec.normalisation.apply(moving + noise()).astype(np.float16))
            out["fl"].append(fl.astype(np.int16))
            out["ml"].append(ml)
            out["grids"].append(grid)
            out["flows"].append(flow.astype(np.float16))
    n = len(out["fixed"])
    return PairSet(np.stack(out["fixed"]), np.stack(out["moving"]), out["grids"], np.stack(out["fl"]),
                   np.stack(out["ml"]), [(i, i) for i in range(n)], np.stack(out["flows"]))


def split_sources(split: str, n_pairs: int = 0) -> List[Tuple[str, str, int]]:
    if split == "train":
        n = n_pairs or 24
        return [(CHEST, "all", n // 2), (LABELLED, "superior", n - n // 2)]
    return [(LABELLED, "inferior", n_pairs or 6)]


def load(split: str, cache_dir: Path, spec: InputSpec = SPEC, n_pairs: int = 0) -> PairSet:
    sources = split_sources(split, n_pairs)
    root = data_root()
    files = [cache.file_identity(root / f) for f in (LABELLED, LABELS, CHEST)]
    content = {"task": "ct", "split": split, "sources": sources, "input": spec.to_dict(),
               "code": cache.code_version(cache.CODE_FILES + ["training/data/ct.py"]), "files": files}
    seed = 0 if split == "train" else 1
    return cache.cached(cache_dir, f"ct-{split}", content, lambda: build(sources, spec, seed))
