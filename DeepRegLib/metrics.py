"""Registration metrics: per-label Dice, HD95 (mm), % folding and SDlogJ."""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence, Union

import numpy as np
import SimpleITK as sitk

from .errors import InputError

LabelMap = Union[np.ndarray, sitk.Image]


def check_labels(arr: np.ndarray, name: str = "label map") -> None:
    """:class:`InputError` unless ``arr`` holds whole, non-negative label numbers (0 = background)."""
    if arr.size == 0:
        raise InputError(f"{name} is empty")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{name} contains NaN or infinite values: not a label map")
        if not np.array_equal(arr, np.round(arr)):
            raise InputError(f"{name} has non-integer values: not a label map (resample label maps with "
                             "nearest neighbour, e.g. deepreg warp --labels)")
    if arr.dtype.kind in "iuf" and float(arr.min()) < 0:
        raise InputError(f"{name} has negative labels (minimum {arr.min():g}); labels must be >= 0 (0 = background)")
    if arr.dtype.kind not in "iufb":
        raise InputError(f"{name} must hold whole label numbers, not {arr.dtype}")


def read_label_map(path, name: str = "label map") -> sitk.Image:
    """A 3D label map file as an Int32 image, checked by :func:`check_labels`."""
    from .imageio import read_image
    img = read_image(path, None, name)
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{name} must be a scalar label map; it has {img.GetNumberOfComponentsPerPixel()} components")
    check_labels(sitk.GetArrayViewFromImage(img), f"{name} {path}")
    return sitk.Cast(img, sitk.sitkInt32)


def _as_array(labels: LabelMap) -> np.ndarray:
    # np.asarray on a SimpleITK image would iterate it voxel by voxel (minutes, no error)
    return sitk.GetArrayViewFromImage(labels) if isinstance(labels, sitk.Image) else np.asarray(labels)


def _labels(a: np.ndarray, b: np.ndarray, labels: Optional[Iterable[int]]) -> list:
    if labels is not None:
        return [int(l) for l in labels]
    return [int(l) for l in np.intersect1d(np.unique(a), np.unique(b)) if l != 0]


def dice_scores(fixed_labels: LabelMap, warped_labels: LabelMap,
                labels: Optional[Iterable[int]] = None) -> Dict[int, float]:
    """Dice of each label (default: non-zero labels present in both maps). Arrays or images on one grid."""
    a = _as_array(fixed_labels).ravel()
    b = _as_array(warped_labels).ravel()
    if a.shape != b.shape:
        raise InputError(f"label maps differ in size: {a.shape} vs {b.shape}")
    for arr, name in ((a, "fixed label map"), (b, "warped label map")):
        if arr.size and arr.dtype.kind in "if" and float(arr.min()) < 0:
            raise InputError(f"{name} has negative labels (minimum {arr.min():g}); labels must be >= 0")
    labs = _labels(a, b, labels)
    if not labs:
        return {}
    # one pass with bincount over (label index) pairs
    lut_max = int(max(a.max(), b.max(), max(labs))) + 1
    ca = np.bincount(a.astype(np.int64), minlength=lut_max)
    cb = np.bincount(b.astype(np.int64), minlength=lut_max)
    same = a == b
    cab = np.bincount(a[same].astype(np.int64), minlength=lut_max)
    out = {}
    for l in labs:
        denom = ca[l] + cb[l]
        out[l] = float(2.0 * cab[l] / denom) if denom > 0 else float("nan")
    return out


def hd95(fixed_labels: sitk.Image, warped_labels: sitk.Image, labels: Optional[Sequence[int]] = None) -> Dict[int, float]:
    """95th-percentile symmetric surface distance (mm) per label, using physical spacing."""
    fa = sitk.GetArrayViewFromImage(fixed_labels)
    wa = sitk.GetArrayViewFromImage(warped_labels)
    labs = _labels(np.asarray(fa), np.asarray(wa), labels)
    out = {}
    for l in labs:
        a = sitk.Cast(fixed_labels == l, sitk.sitkUInt8)
        b = sitk.Cast(warped_labels == l, sitk.sitkUInt8)
        if not (np.any(sitk.GetArrayViewFromImage(a)) and np.any(sitk.GetArrayViewFromImage(b))):
            out[l] = float("nan")
            continue
        da = sitk.SignedMaurerDistanceMap(a, squaredDistance=False, useImageSpacing=True, insideIsPositive=False)
        db = sitk.SignedMaurerDistanceMap(b, squaredDistance=False, useImageSpacing=True, insideIsPositive=False)
        sa = sitk.GetArrayViewFromImage(sitk.LabelContour(a)) > 0
        sb = sitk.GetArrayViewFromImage(sitk.LabelContour(b)) > 0
        d1 = np.abs(sitk.GetArrayViewFromImage(db)[sa])
        d2 = np.abs(sitk.GetArrayViewFromImage(da)[sb])
        out[l] = float(np.percentile(np.concatenate([d1, d2]), 95))
    return out


def summarise_dice(scores: Dict[int, float]) -> Dict[str, float]:
    """Mean Dice over all labels, subcortical/aseg (< 1000) and cortical DKT (>= 1000) labels."""
    def mean(vals):
        vals = [v for v in vals if np.isfinite(v)]
        return float(np.mean(vals)) if vals else float("nan")
    return {"all": mean(scores.values()),
            "subcortical": mean(v for k, v in scores.items() if k < 1000),
            "cortical": mean(v for k, v in scores.items() if k >= 1000)}


def dice_summary(fixed_labels: LabelMap, warped_labels: LabelMap) -> Dict[str, float]:
    """:func:`summarise_dice` of :func:`dice_scores`: mean Dice over all, subcortical and cortical labels."""
    return summarise_dice(dice_scores(fixed_labels, warped_labels))
