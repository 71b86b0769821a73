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
    f = resample_to_grid(fixed, grid)
    m = resample_to_grid(moving, grid, affine)
    f = spec.normalisation.apply(f)
    m = (spec.moving_normalisation or spec.normalisation).apply(m)
    fm = mm = None
    if fixed_mask is not None:
        fm = (resample_to_grid(sitk.Cast(fixed_mask != 0, sitk.sitkFloat32), grid,
                               interpolator=sitk.sitkNearestNeighbor) > 0).astype(np.float32)
    if moving_mask is not None:
        mm = (resample_to_grid(sitk.Cast(moving_mask != 0, sitk.sitkFloat32), grid, affine,
                               interpolator=sitk.sitkNearestNeighbor) > 0).astype(np.float32)
    t2 = time.perf_counter()
    return PreparedPair(grid, affine, f, m, {"affine": t1 - t0, "resample": t2 - t1}, fm, mm)
