"""The shared front half of registration: affine pre-alignment and network inputs.

Used both by inference and by ``training/`` so that a model is trained on exactly
what it will see.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, asdict
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from .affine import AffineConfig, affine_register
from .grid import Grid
from .preprocess import Normalisation, network_grid, resample_to_grid


@dataclass(frozen=True)
class InputSpec:
    """The network's input grid: ``size`` (x, y, z) voxels of ``spacing`` mm, LPS-aligned,
    placed by ``placement`` ('foreground': centred on the fixed foreground's bounding box;
    'image_centre': on the centre of the fixed image's box); intensities normalised by
    ``normalisation`` (the moving image by ``moving_normalisation`` when given, e.g. CT -> MR)."""

    spacing: float = 2.0
    size: Tuple[int, int, int] = (80, 96, 80)
    normalisation: Normalisation = field(default_factory=Normalisation)
    placement: str = "foreground"
    moving_normalisation: Optional[Normalisation] = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size)
        for k, default in (("placement", "foreground"), ("moving_normalisation", None)):
            if d[k] == default:  # cards and cache keys of the brain models stay as they were
                del d[k]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        mn = d.get("moving_normalisation")
        return cls(spacing=float(d["spacing"]), size=tuple(int(s) for s in d["size"]),
                   normalisation=Normalisation(**d.get("normalisation", {})),
                   placement=str(d.get("placement", "foreground")),
                   moving_normalisation=Normalisation(**mn) if mn else None)


@dataclass
class PreparedPair:
    """Network inputs for one pair. ``affine`` maps fixed to moving physical points (LPS mm)."""

    grid: Grid
    affine: sitk.AffineTransform
    fixed: np.ndarray  # (z, y, x) float32 in [0, 1], on ``grid``
    moving: np.ndarray  # moving resampled through ``affine`` onto ``grid``
    timings: Dict[str, float]
    fixed_mask: Optional[np.ndarray] = None  # (z, y, x) float32 0/1 on ``grid`` (nearest neighbour)
    moving_mask: Optional[np.ndarray] = None  # moving mask through ``affine`` onto ``grid``


def _sample(spec: InputSpec, fixed: sitk.Image, moving: sitk.Image, grid: Grid, affine: sitk.Transform,
            fixed_mask: Optional[sitk.Image], moving_mask: Optional[sitk.Image],
            percentiles_on: Optional[Grid] = None):
    """``(fixed, moving, fixed_mask, moving_mask)`` arrays on ``grid``: intensities normalised by ``spec``, the
    moving image and mask through ``affine``, masks 0/1 by nearest neighbour (None where not given).
    ``percentiles_on``: take each image's normalisation percentiles from its samples on that grid instead (the
    network grid, so that a finer grid's pair has the grid pair's intensity mapping exactly)."""
    mn = spec.moving_normalisation or spec.normalisation

    def reference(image, transform=None):
        return None if percentiles_on is None else resample_to_grid(image, percentiles_on, transform)
    f = spec.normalisation.apply(resample_to_grid(fixed, grid), reference(fixed))
    m = mn.apply(resample_to_grid(moving, grid, affine), reference(moving, affine))
    fm = mm = None
    if fixed_mask is not None:
        fm = (resample_to_grid(sitk.Cast(fixed_mask != 0, sitk.sitkFloat32), grid,
                               interpolator=sitk.sitkNearestNeighbor) > 0).astype(np.float32)
    if moving_mask is not None:
        mm = (resample_to_grid(sitk.Cast(moving_mask != 0, sitk.sitkFloat32), grid, affine,
                               interpolator=sitk.sitkNearestNeighbor) > 0).astype(np.float32)
    return f, m, fm, mm


def prepare_pair(fixed: sitk.Image, moving: sitk.Image, spec: InputSpec,
                 affine_config: AffineConfig = AffineConfig(),
                 affine: Optional[sitk.Transform] = None,
                 fixed_mask: Optional[sitk.Image] = None, moving_mask: Optional[sitk.Image] = None,
                 progress: Optional[Callable[[float], None]] = None,
                 cancel: Optional[Callable[[], bool]] = None, kind: str = "affine") -> PreparedPair:
    """Affinely align ``moving`` to ``fixed`` (unless ``affine`` is given) and sample both on the network grid.

    Masks (non-zero = inside, in their image's physical space) restrict the affine metric and are
    sampled onto the grid (nearest neighbour) for refinement.  ``progress``/``cancel``: see
    :func:`DeepRegLib.affine.affine_register`; ``kind``: 'affine' or 'rigid' (its transform kind).
    """
    t0 = time.perf_counter()
    if affine is None:
        affine = affine_register(fixed, moving, affine_config, fixed_mask, moving_mask, progress, cancel, kind)
    t1 = time.perf_counter()
    grid = network_grid(fixed, spec.spacing, spec.size, spec.placement)
    f, m, fm, mm = _sample(spec, fixed, moving, grid, affine, fixed_mask, moving_mask)
    t2 = time.perf_counter()
    return PreparedPair(grid, affine, f, m, {"affine": t1 - t0, "resample": t2 - t1}, fm, mm)


def finer_than_grid(prep: PreparedPair, *images: sitk.Image) -> bool:
    """Whether any of ``images`` has voxels finer than the grid's (smallest spacing below 3/4 of the grid's):
    only then has a refinement at half the grid's spacing more to see than the grid itself."""
    return any(min(im.GetSpacing()) < 0.75 * min(prep.grid.spacing) for im in images)


def prepare_fine(fixed: sitk.Image, moving: sitk.Image, prep: PreparedPair, spec: InputSpec,
                 fixed_mask: Optional[sitk.Image] = None, moving_mask: Optional[sitk.Image] = None) -> tuple:
    """``(grid, fixed, moving, fixed_mask, moving_mask)``: the pair on ``prep.grid`` refined twice
    (:meth:`~DeepRegLib.grid.Grid.refined`; e.g. 1 mm for the 2 mm grid), the moving image through ``prep.affine``,
    normalised by the percentiles of the grid's pair (arrays ``(2z - 1, 2y - 1, 2x - 1)``, masks None where not
    given): the pair of a refinement's fine level (:class:`~DeepRegLib.refine.FinePair`).

    The grid's percentiles, not the fine samples' own: the foreground they are taken over is every voxel above
    the image minimum, and an image compared with itself through an affine stage that is the identity to 1e-8 mm
    gains faint interpolated voxels beside the brain at 1 mm, which moved its 1st percentile and changed its
    normalised intensities by up to 0.1 (an identical pair then looked different to the fine level)."""
    grid = prep.grid.refined(2)
    return (grid,) + _sample(spec, fixed, moving, grid, prep.affine, fixed_mask, moving_mask, percentiles_on=prep.grid)
