"""Should this registration be trusted? A cheap verdict on a finished :class:`RegistrationResult`.

:func:`assess` measures, on a coarse grid (a few mm; well under 0.3 s):

* ``similarity_before`` / ``similarity_after``: the local normalised cross-correlation (squared, so
  0..1, higher is better; windows of ~12 mm) between the fixed image and the moving image warped by the
  affine stage alone / by the whole result, over the fixed image's foreground;
* ``folding_percent``: % of the displacement grid (inside the fixed foreground) where the Jacobian
  determinant of the written mapping ``T(p) = A(p + u(p))`` is <= 0;
* ``max_displacement_mm``: the largest ``|u|`` of the deformable part (0 for an affine-only result);
* the affine part's scales and rotation angle.

and lists, in ``flags``, every reason not to trust the result: folding above ``max_folding_percent``,
the final similarity lower than the affine stage's, a displacement larger than ``max_displacement_mm``
(default :data:`MAX_DISPLACEMENT_MM`), or an implausible affine (a scale outside
:data:`SCALE_RANGE`, one axis stretched :data:`MAX_ANISOTROPY` times as much as another, a rotation over
:data:`MAX_ROTATION_DEG` or a reflection: usually a wrong header spacing, direction or orientation). ``deepreg register`` prints the flags as warnings and
``deepreg batch`` records ``trusted`` and ``quality_flags`` per pair.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import SimpleITK as sitk
import torch

from .similarity.boxfilter import box_mean
from .grid import Grid, physical_bounding_box

__all__ = ["QualityVerdict", "assess", "affine_pose", "local_ncc", "MAX_DISPLACEMENT_MM", "SCALE_RANGE",
           "MAX_ROTATION_DEG", "MAX_ANISOTROPY"]

#: a larger deformable displacement (mm) is flagged; brains of adults differ by ~10 mm after an affine
MAX_DISPLACEMENT_MM = 25.0
#: per-axis scales of the affine part outside this range are flagged
SCALE_RANGE = (0.6, 1.6)
#: a rotation of the affine part larger than this (degrees) is flagged
MAX_ROTATION_DEG = 45.0
#: largest / smallest scale of the affine part above this is flagged. On 8 validation brain pairs at 2 mm
#: it was 1.03-1.12 for correct headers and 1.39-2.5 with the moving header rotated by 90 degrees about
#: either axis or with two axes swapped (the affine stage then stretches instead of rotating; Dice 0.01-0.13)
MAX_ANISOTROPY = 1.3
#: the final similarity may be this much lower than the affine stage's before it is flagged (noise)
SIMILARITY_TOLERANCE = 0.005
#: the coarse similarity grid has at most about this many voxels (and at least 3 mm spacing)
MAX_VOXELS = 48 ** 3
MIN_SPACING_MM = 3.0
WINDOW_MM = 12.0
CHECK_HEADER = "check the header (spacing, direction, orientation) of both images"


@dataclass
class QualityVerdict:
    """How far to trust a registration; ``flags`` are human-readable reasons not to ([] = fine)."""

    similarity_before: float   # local NCC (0..1) of fixed vs moving after the affine stage only, fixed foreground
    similarity_after: float    # the same for the final result
    folding_percent: float     # % of det J <= 0 of the written transform (fixed foreground)
    max_displacement_mm: float  # largest |u| of the deformable part (0 for affine-only)
    flags: List[str] = field(default_factory=list)
    affine_scales: tuple = (1.0, 1.0, 1.0)
    affine_rotation_deg: float = 0.0

    @property
    def trusted(self) -> bool:
        return not self.flags

    def summary(self) -> str:
        """One or two lines for the Slicer panel or stderr."""
        head = (f"quality: similarity {self.similarity_before:.3f} (affine) -> {self.similarity_after:.3f}, "
                f"folding {self.folding_percent:.3f} %, largest displacement {self.max_displacement_mm:.1f} mm")
        if not self.flags:
            return head + ": no problem found"
        return head + "\nNOT TRUSTED: " + "; ".join(self.flags)

    def as_dict(self) -> dict:
        """JSON-friendly fields (for batch records)."""
        return {"trusted": self.trusted, "quality_flags": "; ".join(self.flags),
                "similarity_before": _round(self.similarity_before), "similarity_after": _round(self.similarity_after),
                "folding_percent_grid": _round(self.folding_percent),
                "max_displacement_mm": _round(self.max_displacement_mm)}


def _round(x: float, nd: int = 4) -> Optional[float]:
    return round(float(x), nd) if x is not None and math.isfinite(x) else None


def affine_pose(matrix: np.ndarray) -> tuple:
    """``(scales, rotation degrees, reflection)`` of a 3x3 linear map by polar decomposition ``M = R S``."""
    m = np.asarray(matrix, dtype=np.float64).reshape(3, 3)
    u, s, vt = np.linalg.svd(m)
    reflection = bool(np.linalg.det(m) < 0)
    r = u @ vt
    if reflection:  # the nearest proper rotation, for the angle
        u[:, -1] *= -1
        r = u @ vt
    angle = math.degrees(math.acos(float(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0))))
    return tuple(float(v) for v in sorted(s)), angle, reflection


def _coarse_grid(reference: sitk.Image) -> Grid:
    lo, hi = physical_bounding_box(reference)
    extent = np.maximum(hi - lo, 1e-6)
    spacing = max(MIN_SPACING_MM, float(np.prod(extent) / MAX_VOXELS) ** (1.0 / 3.0), float(extent.max()) / 256)
    size = tuple(int(max(3, math.ceil(e / spacing))) for e in extent)
    origin = tuple(float(l + spacing / 2.0) for l in lo)
    return Grid(origin=origin, spacing=(spacing,) * 3, size=size)


def _sample(image: sitk.Image, grid: Grid, transform: Optional[sitk.Transform] = None) -> np.ndarray:
    img = sitk.Cast(image, sitk.sitkFloat32) if image.GetPixelID() != sitk.sitkFloat32 else image
    out = sitk.Resample(img, grid.reference(sitk.sitkFloat32), transform or sitk.Transform(), sitk.sitkLinear,
                        0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out).astype(np.float64)


def foreground(fixed: np.ndarray) -> np.ndarray:
    """Voxels brighter than 10 % of the way from the 1st to the 99th percentile (all voxels if that is < 1 %)."""
    p1, p99 = np.percentile(fixed, [1, 99])
    mask = fixed > p1 + 0.1 * (p99 - p1)
    return mask if mask.mean() >= 0.01 else np.ones_like(mask)


def local_ncc(a: np.ndarray, b: np.ndarray, window: int, mask: Optional[np.ndarray] = None) -> float:
    """Mean squared local correlation (0..1) of two arrays in cubic windows of ``window`` voxels (odd)."""
    def z(x):  # robust global scaling: outliers (1e30) must not swamp the windows' statistics
        lo, hi = np.percentile(x, [0.5, 99.5])
        return torch.from_numpy(np.clip((x - lo) / max(hi - lo, 1e-12), -1.0, 2.0))[None, None]
    ta, tb = z(a), z(b)
    ma, mb = box_mean(ta, window), box_mean(tb, window)
    va = (box_mean(ta * ta, window) - ma * ma).clamp_min(0)
    vb = (box_mean(tb * tb, window) - mb * mb).clamp_min(0)
    cov = box_mean(ta * tb, window) - ma * mb
    cc = (cov * cov / ((va + 1e-4) * (vb + 1e-4)))[0, 0].numpy()
    cc = np.clip(cc, 0.0, 1.0)
    return float(cc[mask].mean() if mask is not None and mask.any() else cc.mean())


def _folding(result, mask_image: sitk.Image, det_a: float) -> float:
    """% of det J <= 0 of ``A(p + u(p))`` on the displacement grid's interior, inside the fixed foreground."""
    det = result.jacobian_determinant()
    if det is None:
        return 0.0 if det_a > 0 else 100.0
    g = result.grid
    inside = Grid(origin=tuple(o + s for o, s in zip(g.origin, g.spacing)), spacing=g.spacing,
                  size=tuple(int(n) - 2 for n in g.size))
    m = sitk.Resample(mask_image, inside.reference(sitk.sitkUInt8), sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                      sitk.sitkUInt8)
    sel = sitk.GetArrayViewFromImage(m) > 0
    vals = det[sel] if sel.any() else det.ravel()
    folded = vals <= 0 if det_a > 0 else vals >= 0
    return float(100.0 * folded.mean()) if vals.size else 0.0


def assess(result, fixed: sitk.Image, moving: sitk.Image, *, max_folding_percent: float = 0.5,
           max_displacement_mm: Optional[float] = None) -> QualityVerdict:
    """The :class:`QualityVerdict` of ``result`` (a :class:`DeepRegLib.inference.RegistrationResult`) for the
    pair ``fixed``, ``moving`` (SimpleITK images, as registered)."""
    from .transforms import affine_matrix
    limit = MAX_DISPLACEMENT_MM if max_displacement_mm is None else float(max_displacement_mm)
    grid = _coarse_grid(fixed)
    f = _sample(fixed, grid)
    mask = foreground(f)
    window = max(3, int(round(WINDOW_MM / grid.spacing[0])) | 1)
    before = local_ncc(f, _sample(moving, grid, result.affine_transform()), window, mask)
    after = before if result.displacement is None else local_ncc(f, _sample(moving, grid, result.transform()),
                                                                 window, mask)
    lin = affine_matrix(result.affine)[:3, :3]
    det_a = float(np.linalg.det(lin))
    mask_img = grid.image_from_array(mask.astype(np.uint8))
    folding = _folding(result, mask_img, det_a)
    disp = result.displacement
    max_u = 0.0 if disp is None else float(np.sqrt((np.asarray(disp) ** 2).sum(-1).max()))
    scales, angle, reflection = affine_pose(lin)
    flags: List[str] = []
    if reflection:
        flags.append(f"the affine stage mirrors the image (a reflection): {CHECK_HEADER}")
    if scales[0] < SCALE_RANGE[0] or scales[-1] > SCALE_RANGE[1]:
        flags.append(f"the affine stage scales by {scales[0]:.2f}-{scales[-1]:.2f} (plausible: "
                     f"{SCALE_RANGE[0]}-{SCALE_RANGE[1]}): {CHECK_HEADER}")
    if scales[-1] > MAX_ANISOTROPY * scales[0]:
        flags.append(f"the affine stage stretches one axis {scales[-1] / scales[0]:.2f} times as much as another "
                     f"(plausible: up to {MAX_ANISOTROPY}; a wrongly oriented image does this): {CHECK_HEADER}")
    if angle > MAX_ROTATION_DEG:
        flags.append(f"the affine stage rotates by {angle:.0f} degrees (plausible: up to {MAX_ROTATION_DEG:.0f}): "
                     f"{CHECK_HEADER}, or whether the images show the same anatomy")
    if folding > max_folding_percent:
        flags.append(f"the mapping folds {folding:.2f} % of the fixed foreground (limit {max_folding_percent:g} %): "
                     "try --refine, or check that the images show the same anatomy")
    if max_u > limit:
        flags.append(f"the deformable part moves points by up to {max_u:.1f} mm (limit {limit:g} mm): "
                     "check that the images show the same anatomy and field of view")
    if after < before - SIMILARITY_TOLERANCE:
        flags.append(f"the result matches the fixed image worse than the affine stage alone (local NCC "
                     f"{after:.3f} < {before:.3f}): try --mode affine or --refine, and check the inputs")
    return QualityVerdict(before, after, folding, max_u, flags, scales, angle)
