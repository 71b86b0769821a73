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
    centred on the fixed foreground; intensities normalised by ``normalisation``."""

    spacing: float = 2.0
    size: Tuple[int, int, int] = (80, 96, 80)
    normalisation: Normalisation = field(default_factory=Normalisation)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        return cls(spacing=float(d["spacing"]), size=tuple(int(s) for s in d["size"]),
                   normalisation=Normalisation(**d.get("normalisation", {})))


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
                 cancel: Optional[Callable[[], bool]] = None) -> PreparedPair:
    """Affinely align ``moving`` to ``fixed`` (unless ``affine`` is given) and sample both on the network grid.

    Masks (non-zero = inside, in their image's physical space) restrict the affine metric and are
    sampled onto the grid (nearest neighbour) for refinement.  ``progress``/``cancel``: see
    :func:`DeepRegLib.affine.affine_register`.
    """
    t0 = time.perf_counter()
    if affine is None:
        affine = affine_register(fixed, moving, affine_config, fixed_mask, moving_mask, progress, cancel)
    t1 = time.perf_counter()
    grid = network_grid(fixed, spec.spacing, spec.size)
    f = resample_to_grid(fixed, grid)
    m = resample_to_grid(moving, grid, affine)
    f = spec.normalisation.apply(f)
    m = spec.normalisation.apply(m)
    fm = mm = None
    if fixed_mask is not None:
        fm = (resample_to_grid(sitk.Cast(fixed_mask != 0, sitk.sitkFloat32), grid,
                               interpolator=sitk.sitkNearestNeighbor) > 0).astype(np.float32)
    if moving_mask is not None:
        mm = (resample_to_grid(sitk.Cast(moving_mask != 0, sitk.sitkFloat32), grid, affine,
                               interpolator=sitk.sitkNearestNeighbor) > 0).astype(np.float32)
    t2 = time.perf_counter()
    return PreparedPair(grid, affine, f, m, {"affine": t1 - t0, "resample": t2 - t1}, fm, mm)
