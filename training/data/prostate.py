"""Intra-patient prostate MR (moving) -> transrectal ultrasound (fixed), multimodal.

Source: ``../shared/data/prostate-mr-us/{train,test}/{fixed_images,moving_images,
fixed_labels,moving_labels}/caseNNNNNN.nii.gz`` (Apache-2.0 test
data). Images are stored at 0.4 mm (US 44x59x41, MR 64x64x60); labels are 4D, one channel
per label, channel 0 = the gland and channels 1.. = landmarks that correspond between
fixed and moving by channel index (a few cases have a 3D gland-only label).

Split: train = ``train/`` cases 0-21, validation = ``train/`` cases 22-24; ``test/`` cases
25 and 26 are never used for training or selection (case 25 is the bundled sample pair).

Pairs are prepared as inference prepares them for a prostate bundle
(:data:`SPEC`/:data:`AFFINE`): the affine stage is a centre alignment of the two image boxes
(the stored origins do not align the pair; box centres leave ~3 mm on the gland), the
network grid is centred on the US image's box, both inputs percentile-normalised.

Labels are stored as one int16 map per image with **bit k = channel k** (bit 0 = gland),
so that nearest-neighbour resampling keeps overlapping landmarks exact; each distinct
value is a region of a partition, which is what the label Dice term matches.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from DeepRegLib.affine import AffineConfig
from DeepRegLib.demos.prostate import label_channels, load_case  # noqa: F401 (label_channels: also for scripts)
from DeepRegLib.pipeline import InputSpec, prepare_pair
from DeepRegLib.preprocess import resample_to_grid
from DeepRegLib.bundles.taskspec import builtin_task

from . import cache
from .base import PairSet

DEFAULT_DATA = cache.REPO.parent / "shared" / "data" / "prostate-mr-us"
TRAIN_CASES = list(range(0, 22))
VALIDATION_CASES = [22, 23, 24]
TEST_CASES = [25, 26]
LICENCE = "Apache-2.0 (prostate-mr-us test data, see ../shared/data/README.md)"
DESCRIPTION = "intra-patient prostate MR (moving) -> transrectal US (fixed), gland + landmark labels"
MAX_CHANNELS = 15  # int16 bit-packing
SPEC: InputSpec = builtin_task("prostate").input  # the engine's prostate task (DeepRegLib.bundles.taskspec)
AFFINE: AffineConfig = builtin_task("prostate").affine


def data_root() -> Path:
    return Path(os.environ.get("DEEPREG_PROSTATE", DEFAULT_DATA))


def case_paths(case: int, root: Optional[Path] = None) -> Dict[str, Path]:
    split = "test" if case in TEST_CASES else "train"
    base = (root or data_root()) / split
    name = f"case{case:06d}.nii.gz"
    return {k: base / k / name for k in ("fixed_images", "moving_images", "fixed_labels", "moving_labels")}


def case_files(case: int, root: Optional[Path] = None) -> Dict[str, Path]:
    """The case's files under the names :func:`DeepRegLib.demos.prostate.load_case` reads."""
    p = case_paths(case, root)
    return {"fixed": p["fixed_images"], "moving": p["moving_images"], "fixed_labels": p["fixed_labels"],
            "moving_labels": p["moving_labels"]}


def pack(channels: Sequence[np.ndarray]) -> np.ndarray:
    """Binary masks (channel k) -> one int16 map with bit k set where channel k is."""
    if len(channels) > MAX_CHANNELS:
        raise ValueError(f"{len(channels)} label channels; at most {MAX_CHANNELS} fit in int16")
    out = np.zeros(channels[0].shape, np.int16)
    for k, ch in enumerate(channels):
        out |= (np.asarray(ch) > 0).astype(np.int16) << k
    return out


def unpack(labels: np.ndarray, channel: int) -> np.ndarray:
    """Channel ``channel`` (0 = gland) of a bit-packed label map, as a bool array."""
    return (np.asarray(labels).astype(np.int32) >> channel) & 1 > 0


def build(cases: Sequence[int], spec: InputSpec = SPEC, affine: AffineConfig = AFFINE,
          root: Optional[Path] = None) -> PairSet:
    out: Dict[str, list] = {"fixed": [], "moving": [], "fl": [], "ml": [], "grids": []}
    for case in cases:
        fixed, moving, fch, mch = load_case(case_files(case, root))  # landmarks correspond by channel index
        prep = prepare_pair(fixed, moving, spec, affine)
        fl = [resample_to_grid(c, prep.grid, None, sitk.sitkNearestNeighbor) for c in fch]
        ml = [resample_to_grid(c, prep.grid, prep.affine, sitk.sitkNearestNeighbor) for c in mch]
        out["fixed"].append(prep.fixed.astype(np.float16))
        out["moving"].append(prep.moving.astype(np.float16))
        out["fl"].append(pack(fl))
        out["ml"].append(pack(ml))
        out["grids"].append(prep.grid)
    return PairSet(np.stack(out["fixed"]), np.stack(out["moving"]), out["grids"], np.stack(out["fl"]),
                   np.stack(out["ml"]), [(c, c) for c in cases])


def load(split: str, cache_dir: Path, spec: InputSpec = SPEC, affine: AffineConfig = AFFINE) -> PairSet:
    cases = TRAIN_CASES if split == "train" else VALIDATION_CASES
    files = [cache.file_identity(f) for c in cases for f in case_paths(c).values()]
    content = {"task": "prostate", "split": split, "cases": cases, "input": spec.to_dict(), "affine": affine.to_dict(),
               "code": cache.code_version(cache.CODE_FILES + ["training/data/prostate.py"]), "files": files}
    return cache.cached(cache_dir, f"prostate-{split}", content, lambda: build(cases, spec, affine))
