"""Pairs whose true mapping is known: a brain under a known motion (for precision checks).

The question a registration tool must answer precisely is "where did this point go?". Dice between
different people cannot tell; a pair made from one image by a known transform can. Here

    fixed(p) = moving(T(p))       (``SimpleITK.Resample(moving, moving, T)``)

so ``T`` is exactly the fixed -> moving mapping a registration should return (the engine's and ITK's
convention), and the error of a result ``R`` at a fixed point ``p`` is ``|R(p) - T(p)|`` in mm. No
inversion is involved. The fixed image then gets its own acquisition changes (noise, an intensity
scale, a smooth multiplicative bias field), as a second scan of the same brain would.

All coordinates are LPS millimetres; transforms are SimpleITK transforms on physical points.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from .grid import physical_bounding_box
from .preprocess import foreground_centre


def rigid_motion(angles_deg: Sequence[float], shift_mm: Sequence[float], centre: Sequence[float]) -> sitk.Euler3DTransform:
    """Rotation by ``angles_deg`` (about x, y, z) about ``centre`` (LPS mm), then a shift of ``shift_mm``."""
    t = sitk.Euler3DTransform()
    t.SetCenter(tuple(float(c) for c in centre))
    t.SetRotation(*(float(np.deg2rad(a)) for a in angles_deg))
    t.SetTranslation(tuple(float(s) for s in shift_mm))
    return t


def smooth_deformation(reference: sitk.Image, amplitude_mm: float, control_mm: float = 30.0, seed: int = 0,
                       spacing_mm: float = 2.0, squarings: int = 6) -> sitk.DisplacementFieldTransform:
    """A smooth invertible random displacement ``p -> p + d(p)`` over ``reference``'s physical box.

    A velocity with independent Gaussian values (standard deviation ``amplitude_mm`` per axis) on control
    points ``control_mm`` apart, cubic-B-spline interpolated onto a ``spacing_mm`` grid, is integrated
    by scaling and squaring (``squarings``), so the deformation is a diffeomorphism. Returned as a
    displacement-field transform (linear interpolation between the ``spacing_mm`` samples; zero outside).
    """
    rng = np.random.default_rng(seed)
    lo, hi = physical_bounding_box(reference)
    size = [int(np.ceil((h - l) / spacing_mm)) + 1 for l, h in zip(lo, hi)]
    grid = sitk.Image(size, sitk.sitkVectorFloat64, 3)
    grid.SetOrigin(tuple(float(v) for v in lo))
    grid.SetSpacing((spacing_mm,) * 3)
    n_ctrl = [max(4, int(np.ceil((h - l) / control_mm)) + 1) for l, h in zip(lo, hi)]
    bspline = sitk.BSplineTransformInitializer(_scalar_like(grid), [n - 3 for n in n_ctrl], 3)
    params = rng.normal(0.0, amplitude_mm, len(bspline.GetParameters()))
    bspline.SetParameters(tuple(params))
    velocity = sitk.TransformToDisplacementField(bspline, sitk.sitkVectorFloat64, grid.GetSize(), grid.GetOrigin(),
                                                 grid.GetSpacing(), grid.GetDirection())
    v = sitk.GetArrayFromImage(velocity) / (2.0 ** squarings)  # (z, y, x, 3) mm
    field = _as_field(v, grid)
    for _ in range(squarings):  # d <- d + d o (id + d)
        t = sitk.DisplacementFieldTransform(sitk.Image(field))
        moved = sitk.Resample(field, field, t, sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64)
        field = _as_field(sitk.GetArrayFromImage(field) + sitk.GetArrayFromImage(moved), grid)
    return sitk.DisplacementFieldTransform(field)


def compose(first: sitk.Transform, then: sitk.Transform) -> sitk.CompositeTransform:
    """``p -> then(first(p))`` as one composite transform."""
    c = sitk.CompositeTransform(3)
    c.AddTransform(then)
    c.AddTransform(first)  # ITK applies the last added first
    return c


@dataclass
class KnownPair:
    """``fixed(p) = moving(truth(p))`` plus acquisition changes; ``truth`` maps fixed to moving points."""

    fixed: sitk.Image
    moving: sitk.Image
    truth: sitk.Transform
    name: str = ""
    deformation_mm: float = 0.0  # mean displacement of the non-rigid part over the brain (mm), where known


def make_pair(moving: sitk.Image, truth: sitk.Transform, seed: int = 0, noise: float = 0.02,
              intensity_scale: float = 1.3, bias: float = 0.1, name: str = "") -> KnownPair:
    """The fixed image ``moving o truth`` on ``moving``'s own grid with acquisition changes.

    ``noise``: Gaussian standard deviation as a fraction of the 99th intensity percentile (inside the
    image's support, so a skull-stripped background stays 0); ``intensity_scale``: multiplies every
    intensity; ``bias``: standard deviation of a smooth log bias field (control points ~60 mm apart).
    All zero: the exact ``moving o truth``.
    """
    m = sitk.Cast(moving, sitk.sitkFloat32)
    fixed = sitk.Resample(m, m, truth, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(fixed)
    rng = np.random.default_rng(seed)
    support = arr > 0
    if bias:
        field = smooth_deformation(fixed, bias, 60.0, seed=seed + 1, spacing_mm=8.0, squarings=0)
        disp = sitk.TransformToDisplacementField(field, sitk.sitkVectorFloat64, fixed.GetSize(), fixed.GetOrigin(),
                                                 fixed.GetSpacing(), fixed.GetDirection())
        arr = arr * np.exp(sitk.GetArrayViewFromImage(disp)[..., 0]).astype(np.float32)
    if noise:
        scale = float(np.percentile(arr[support], 99)) if support.any() else 1.0
        arr = np.where(support, arr + rng.normal(0.0, noise * scale, arr.shape).astype(np.float32), 0.0)
        arr = np.clip(arr, 0.0, None)
    arr = arr * np.float32(intensity_scale)
    out = sitk.GetImageFromArray(arr.astype(np.float32))
    out.CopyInformation(fixed)
    return KnownPair(out, m, truth, name)


def brain_points(image: sitk.Image, step: int = 2, threshold: float = 0.0) -> np.ndarray:
    """LPS points ``(N, 3)`` of every ``step``-th voxel (per axis) of ``image`` above ``threshold``."""
    arr = sitk.GetArrayViewFromImage(image)[::step, ::step, ::step]
    k, j, i = np.nonzero(arr > threshold)
    idx = np.stack([i * step, j * step, k * step], 1).astype(float)
    origin = np.asarray(image.GetOrigin())
    d = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    return origin + idx @ d.T


def map_points(transform: sitk.Transform, points: np.ndarray) -> np.ndarray:
    """``transform`` applied to every LPS point of ``points`` ``(N, 3)``."""
    return np.array([transform.TransformPoint(tuple(p)) for p in points])


def distance_stats(err: np.ndarray) -> dict:
    """``mean``, ``p95`` and ``max`` of distances ``err`` (mm)."""
    return {"mean": float(err.mean()), "p95": float(np.percentile(err, 95)), "max": float(err.max())}


def mapping_error(mapped: np.ndarray, truth: sitk.Transform, points: np.ndarray) -> dict:
    """``mean``, ``p95`` and ``max`` of ``|mapped - truth(points)|`` (mm)."""
    return distance_stats(np.linalg.norm(np.asarray(mapped) - map_points(truth, points), axis=1))


def mean_displacement(truth: sitk.Transform, points: np.ndarray) -> float:
    """Mean ``|truth(p) - p|`` (mm) over ``points``: how far the known mapping moves the brain."""
    return float(np.linalg.norm(map_points(truth, points) - points, axis=1).mean())


def centre_of(image: sitk.Image) -> np.ndarray:
    """The LPS centre of the image's foreground bounding box (mm)."""
    return foreground_centre(image)


def _scalar_like(grid: sitk.Image) -> sitk.Image:
    ref = sitk.Image(grid.GetSize(), sitk.sitkFloat32)
    ref.SetOrigin(grid.GetOrigin())
    ref.SetSpacing(grid.GetSpacing())
    return ref


def _as_field(array: np.ndarray, grid: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(array.astype(np.float64), isVector=True)
    out.CopyInformation(grid)
    return out
