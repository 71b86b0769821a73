"""Classical affine pre-alignment at coarse resolution (SimpleITK).

Why classical and not a learned affine network: brains arrive in native scanner
position (unregistered Dice ~0.03), a moments initialisation plus a two-level
correlation-driven affine at ~4 mm needs no training data and does not fail silently
on poses a network never saw.  The metric is evaluated on a fixed-seed random 15 % of
the coarse voxels: on 18 Mindboggle pairs this cut the median time from 0.60 s to 0.16 s
(2 cores) for a change in affine-only Dice of 0.544 -> 0.539 (subcortical), and the
result is deterministic because the seed is fixed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk

from .errors import Cancelled, InputError


@dataclass(frozen=True)
class AffineConfig:
    """Parameters of the coarse affine stage (spacing in mm)."""

    spacing: float = 4.0
    shrink_levels: tuple = (2, 1)
    smoothing_sigmas: tuple = (1.0, 0.0)
    iterations: int = 200
    learning_rate: float = 1.0
    sampling_fraction: float = 0.15  # of coarse voxels, random; 1.0 = all voxels
    sampling_seed: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_card(cls, stage: Optional[dict]) -> "AffineConfig":
        """The settings recorded in a model card's ``affine_stage`` (unknown keys ignored)."""
        names = {f.name for f in fields(cls)}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in (stage or {}).items() if k in names}
        return cls(**kw)


def _coarse(image: sitk.Image, spacing: float) -> sitk.Image:
    factors = [max(1, int(round(spacing / s))) for s in image.GetSpacing()]
    return sitk.BinShrink(image, factors) if max(factors) > 1 else image


def _coarse_mask(mask: sitk.Image, coarse: sitk.Image, name: str) -> sitk.Image:
    """A binary UInt8 mask on ``coarse``'s grid: a coarse voxel is inside if any of its fine voxels is."""
    m = sitk.Cast(mask != 0, sitk.sitkFloat32)
    m = sitk.Resample(m, coarse, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    out = sitk.Cast(m > 0.0, sitk.sitkUInt8)
    if not np.any(sitk.GetArrayViewFromImage(out)):
        raise InputError(f"{name} mask has no voxel inside its image")
    return out


def affine_register(fixed: sitk.Image, moving: sitk.Image, config: AffineConfig = AffineConfig(),
                    fixed_mask: Optional[sitk.Image] = None, moving_mask: Optional[sitk.Image] = None,
                    progress: Optional[Callable[[float], None]] = None,
                    cancel: Optional[Callable[[], bool]] = None) -> sitk.AffineTransform:
    """Affine transform mapping fixed physical points to moving physical points (LPS, mm).

    ``fixed_mask``/``moving_mask`` (non-zero = inside, physical space of their image) restrict the
    metric.  ``progress(fraction)`` is called every few optimiser iterations; when ``cancel()``
    returns True the optimiser is stopped and :class:`DeepRegLib.errors.Cancelled` raised.
    """
    f = sitk.Cast(_coarse(fixed, config.spacing), sitk.sitkFloat32)
    m = sitk.Cast(_coarse(moving, config.spacing), sitk.sitkFloat32)
    init = sitk.CenteredTransformInitializer(
        f, m, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsCorrelation()
    if config.sampling_fraction >= 1.0:
        reg.SetMetricSamplingStrategy(reg.NONE)
    else:
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(config.sampling_fraction, config.sampling_seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(config.learning_rate, 1e-4, config.iterations,
                                                 relaxationFactor=0.7)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(config.shrink_levels))
    reg.SetSmoothingSigmasPerLevel(list(config.smoothing_sigmas))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(init, inPlace=False)
    if fixed_mask is not None:
        reg.SetMetricFixedMask(_coarse_mask(fixed_mask, f, "fixed"))
    if moving_mask is not None:
        reg.SetMetricMovingMask(_coarse_mask(moving_mask, m, "moving"))
    state = {"cancelled": False, "n": 0}
    levels = len(config.shrink_levels)

    def on_iteration() -> None:
        state["n"] += 1
        if cancel is not None and cancel():
            state["cancelled"] = True
            reg.StopRegistration()
        elif progress is not None and state["n"] % 10 == 0:
            level = reg.GetCurrentLevel()
            progress(min(1.0, (level + min(1.0, reg.GetOptimizerIteration() / config.iterations)) / levels))

    if progress is not None or cancel is not None:
        reg.AddCommand(sitk.sitkIterationEvent, on_iteration)
    if cancel is not None and cancel():
        raise Cancelled("registration cancelled")
    result = reg.Execute(f, m)
    if state["cancelled"]:
        raise Cancelled("registration cancelled during the affine stage")
    return to_affine(result)


def to_affine(transform: sitk.Transform) -> sitk.AffineTransform:
    """Flatten a (composite of) linear transform(s) into one :class:`SimpleITK.AffineTransform`."""
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float) * 100.0
    mapped = np.array([transform.TransformPoint(tuple(p)) for p in pts])
    offset = mapped[0]
    matrix = (mapped[1:] - offset).T / 100.0
    out = sitk.AffineTransform(3)
    out.SetMatrix(tuple(matrix.ravel()))
    out.SetTranslation(tuple(offset))
    return out
