"""Intensity normalisation, foreground detection and resampling onto a network grid."""
from __future__ import annotations

from dataclasses import dataclass, asdict
from typing import Optional, Tuple

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .grid import Grid, centred_grid, index_box_corners_to_physical, physical_bounding_box
from .names import look_up_option


@dataclass(frozen=True)
class Normalisation:
    """How intensities are mapped to [0, 1].

    ``kind='percentile'`` (MR): the ``low``/``high`` percentiles of the foreground
    (voxels above the image minimum) map to 0/1, values clipped.
    ``kind='window'`` (CT): the fixed window ``[low, high]`` (e.g. Hounsfield units) maps to 0/1.
    """

    kind: str = "percentile"
    low: float = 1.0
    high: float = 99.0

    def to_dict(self) -> dict:
        return asdict(self)

    def apply(self, array: np.ndarray, reference: Optional[np.ndarray] = None) -> np.ndarray:
        """Normalise ``array``; percentiles are taken from ``reference`` (default: ``array``)."""
        if self.kind == "window":
            lo, hi = self.low, self.high
        elif self.kind == "percentile":
            ref = array if reference is None else reference
            fg = ref[ref > ref.min()]
            if fg.size == 0:
                raise InputError("cannot normalise an image with no foreground")
            lo, hi = np.percentile(fg, [self.low, self.high])
        else:
            look_up_option(self.kind, ("window", "percentile"), "normalisation kind")
        if hi <= lo:
            hi = lo + 1e-6
        return np.clip((array.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0).astype(np.float32)


def foreground_box(image: sitk.Image, fraction: float = 0.05, step: int = 2) -> Tuple[np.ndarray, np.ndarray]:
    """(min, max) LPS corners (mm) of the physical, axis-aligned box of the centres of the voxels brighter
    than ``fraction`` of the robust range.

    The box is of the voxels' physical positions, not of their index box, so the same physical image on any
    voxel grid gives the same box: exact for axis-aligned grids (permuted, flipped, anisotropic: the
    corners of the index box); for oblique grids from every ``step``-th foreground voxel per axis, widened
    by half the skipped distance.
    """
    arr = sitk.GetArrayViewFromImage(image)
    lo = float(arr.min())
    threshold = lo
    if fraction > 0:  # the robust range is needed only for a threshold above the minimum
        threshold += fraction * (float(np.percentile(arr[:: 2, :: 2, :: 2], 99.5)) - lo)
    mask = arr > threshold
    if not mask.any():
        raise InputError("image has no foreground")
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    if np.allclose(np.abs(direction), np.round(np.abs(direction)), atol=1e-6):
        idx = [np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))[0] for ax in range(3)]
        lower = [idx[2][0], idx[1][0], idx[0][0]]  # (i, j, k) from array axes (k, j, i)
        upper = [idx[2][-1], idx[1][-1], idx[0][-1]]
        corners = index_box_corners_to_physical(image, lower, upper)
        return corners.min(0), corners.max(0)
    sub = mask[::step, ::step, ::step]
    if not sub.any():
        sub, step = mask, 1
    k, j, i = np.nonzero(sub)
    idx3 = np.stack([i, j, k], 1).astype(float) * step
    pts = np.asarray(image.GetOrigin(), float) + idx3 @ (direction * np.asarray(image.GetSpacing(), float)).T
    margin = float(max(image.GetSpacing())) * (step - 1) / 2.0
    return pts.min(0) - margin, pts.max(0) + margin


def foreground_centre(image: sitk.Image, fraction: float = 0.05) -> np.ndarray:
    """LPS centre (mm) of the physical bounding box of voxels brighter than ``fraction`` of the robust range
    (:func:`foreground_box`: the same on any voxel grid of the same physical image)."""
    lo, hi = foreground_box(image, fraction)
    return (lo + hi) / 2.0


def network_grid(fixed: sitk.Image, spacing: float, size: Tuple[int, int, int],
                 placement: str = "foreground") -> Grid:
    """The LPS-aligned network grid of ``size`` voxels, centred on the fixed foreground
    (``placement='foreground'``) or on the centre of the fixed image's box (``'image_centre'``).

    A foreground-centred grid's centre is snapped to the physical lattice of ``spacing`` mm, so that the
    same brain stored on another voxel grid (whose foreground box differs by a fraction of a voxel) is
    sampled at the same points and the network sees the same input."""
    if placement == "foreground":
        centre = np.round(foreground_centre(fixed) / spacing) * spacing
        return centred_grid(centre, spacing, size)
    if placement == "image_centre":
        lo, hi = physical_bounding_box(fixed)
        return centred_grid((lo + hi) / 2.0, spacing, size)
    look_up_option(placement, ("foreground", "image_centre"), "grid placement")
    raise AssertionError("unreachable")


def _antialias(image: sitk.Image, target_spacing: float) -> sitk.Image:
    """Block-average by integer factors so that linear resampling to ``target_spacing`` does not alias."""
    factors = [max(1, int(np.floor(target_spacing / s + 1e-6))) for s in image.GetSpacing()]
    if max(factors) > 1:
        image = sitk.BinShrink(image, factors)
    return image


def resample_to_grid(image: sitk.Image, grid: Grid, transform: Optional[sitk.Transform] = None,
                     interpolator: int = sitk.sitkLinear, default: float = 0.0,
                     antialias: bool = True) -> np.ndarray:
    """Sample ``image`` at ``transform(p)`` for every grid point ``p``; returns the float32 array (z, y, x).

    ``transform`` maps grid (fixed) physical points to ``image`` physical points (ITK convention).
    """
    src = _antialias(image, min(grid.spacing)) if antialias and interpolator != sitk.sitkNearestNeighbor else image
    out = sitk.Resample(src, grid.reference(), transform if transform is not None else sitk.Transform(),
                        interpolator, default, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)
