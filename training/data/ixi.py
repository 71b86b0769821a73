"""IXI brains at 2 mm (``../shared/data/brain-ixi-2mm``), skull-stripped by their DLMUSE label mask.

185 healthy adult T1 MRIs (Hammersmith 3T), whole head, stored at 2 mm in their native sagittal
orientation (the direction matrix is permuted: the geometry is always carried, never assumed). The
automatic DLMUSE label maps (MUSE numbering) give the brain mask (labels > 0); the images are
skull-stripped with it so that they look like the engine's expected input (skull-stripped T1).

Split (by sorted file name, fixed): the last :data:`N_VALIDATION` subjects are validation, the rest
training. Inter-subject pairs are prepared exactly as inference prepares them (the engine's affine
stage, the fixed image's network grid, ``DeepRegLib.pipeline``); each training subject is the fixed
image of :data:`PAIRS_PER_SUBJECT` random partners (seeded).

Licence: the images are CC BY-SA 3.0 (brain-development.org); the DLMUSE label maps (used here for
the brain mask) come under the UPenn SBIA Contribution and Software License Agreement (research use).
A model trained on these skull-stripped images therefore carries both (see its card).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import SimpleITK as sitk

from DeepRegLib.affine import AffineConfig
from DeepRegLib.pipeline import InputSpec, prepare_pair

from . import cache
from .base import PairSet

DEFAULT_DATA = cache.REPO.parent / "shared" / "data" / "brain-ixi-2mm"
N_VALIDATION = 15
PAIRS_PER_SUBJECT = 2
LICENCE = ("IXI images: Creative Commons BY-SA 3.0 (brain-development.org); DLMUSE brain masks: UPenn SBIA "
           "Contribution and Software License Agreement (research use), via the CBICA/NiChart_Project repository")
DESCRIPTION = "IXI T1 brains (Hammersmith 3T, 2 mm), skull-stripped by their DLMUSE label mask"


def data_root() -> Path:
    return Path(os.environ.get("DEEPREG_IXI", DEFAULT_DATA))


def subjects(root: Optional[Path] = None) -> List[str]:
    """Subject ids (``IXInnn-HH-nnnn``) that have both an image and a label map, sorted."""
    base = root or data_root()
    if not (base / "images").is_dir():
        return []
    ids = sorted(p.name[: -len("_T1.nii.gz")] for p in (base / "images").glob("*_T1.nii.gz"))
    return [s for s in ids if (base / "labels" / f"{s}_dlmuse.nii.gz").exists()]


def split(name: str, root: Optional[Path] = None) -> List[str]:
    """'train' or 'val' subject ids."""
    ids = subjects(root)
    if name == "val":
        return ids[-N_VALIDATION:]
    if name == "train":
        return ids[:-N_VALIDATION]
    raise ValueError(f"split must be 'train' or 'val', got {name!r}")


def subject_paths(subject: str, root: Optional[Path] = None) -> Dict[str, Path]:
    base = root or data_root()
    return {"image": base / "images" / f"{subject}_T1.nii.gz", "labels": base / "labels" / f"{subject}_dlmuse.nii.gz"}


def load_brain(subject: str, root: Optional[Path] = None) -> sitk.Image:
    """The subject's T1 image (float32) with everything outside its DLMUSE brain mask set to 0."""
    p = subject_paths(subject, root)
    image = sitk.ReadImage(str(p["image"]), sitk.sitkFloat32)
    labels = sitk.ReadImage(str(p["labels"]))
    mask = sitk.Cast(labels > 0, sitk.sitkFloat32)
    mask.CopyInformation(image)
    return image * mask


def pair_list(ids: List[str], per_subject: int, seed: int = 0) -> List[tuple]:
    """``per_subject`` random partners (moving) for every subject (fixed), as index pairs into ``ids``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(len(ids)):
        others = [j for j in range(len(ids)) if j != i]
        out += [(i, int(j)) for j in rng.choice(others, size=min(per_subject, len(others)), replace=False)]
    return out


def build(ids: List[str], spec: InputSpec, affine: AffineConfig, per_subject: int,
          verbose: bool = True) -> PairSet:
    """Inter-subject pairs of ``ids`` through the engine's affine stage, on the fixed image's network grid."""
    images = {}
    out: Dict[str, list] = {"fixed": [], "moving": [], "grids": []}
    pairs = pair_list(ids, per_subject)
    for n, (fi, mi) in enumerate(pairs):
        for i in (fi, mi):
            if i not in images:
                images[i] = load_brain(ids[i])
        prep = prepare_pair(images[fi], images[mi], spec, affine)
        out["fixed"].append(prep.fixed.astype(np.float16))
        out["moving"].append(prep.moving.astype(np.float16))
        out["grids"].append(prep.grid)
        if verbose and (n % 25 == 0 or n == len(pairs) - 1):
            print(f"[data] ixi pair {n + 1}/{len(pairs)}", flush=True)
    return PairSet(np.stack(out["fixed"]), np.stack(out["moving"]), out["grids"], pairs=pairs)


def load(split_name: str, spec: InputSpec, affine: AffineConfig, cache_dir: Path,
         per_subject: int = PAIRS_PER_SUBJECT, limit: int = 0) -> PairSet:
    """The cached inter-subject pairs of ``split_name`` (rebuilt when anything that shapes them changes).

    ``limit`` > 0 uses only the first ``limit`` subjects of the split (smoke runs)."""
    ids = split(split_name)
    if limit:
        ids = ids[:limit]
    if len(ids) < 2:
        raise FileNotFoundError(f"fewer than 2 IXI subjects under {data_root()} (expected ../shared/data/brain-ixi-2mm)")
    files = [cache.file_identity(p) for s in ids for p in subject_paths(s).values()]
    content = {"task": "ixi", "split": split_name, "subjects": ids, "per_subject": per_subject,
               "input": spec.to_dict(), "affine": affine.to_dict(),
               "code": cache.code_version(cache.CODE_FILES + ["training/data/ixi.py"]), "files": files}
    return cache.cached(cache_dir, f"ixi-{split_name}", content, lambda: build(ids, spec, affine, per_subject))
