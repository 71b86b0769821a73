"""Random augmentation of training pairs, in physical units: an affine of the moving image, a
smooth warp of the fixed image.

**Affine of the moving image** (``data.augment_affine``).

The fixed image is left as it is; the moving image and its labels are resampled through a random
rotation (degrees, about each axis, about the grid's centre), an isotropic scaling and a
translation (mm), so that the network sees misalignments the few training pairs of a task do not
have. Rotations and translations are physical: on anisotropic grids (spacing differs per axis) they
are converted to each axis's voxel size, not applied to array indices.

``data.augment_affine = (max_rotation_deg, max_scale, max_translation_mm)``; all zero (the default)
turns it off.

**Free-form warp of the moving image** (``data.free_form = (max_fraction, control_points)``): RCN's
augmentation, a random cubic B-spline deformation of the moving image and labels (:func:`free_form_field`).

**Smooth warp of the fixed image** (``data.warp_fixed = (amplitude_mm, control_spacing_mm)``): the
fixed image and labels are resampled through ``id + psi``, ``psi`` a random displacement (independent
Gaussian values of standard deviation ``amplitude_mm`` per axis on control points ``control_spacing_mm``
apart, interpolated trilinearly), which makes a new anatomy from a real one. A registration of the
original pair, ``phi`` (fixed -> moving), gives the new pair's exactly: ``compose(phi, psi)``, i.e.
``psi(x) + phi(x + psi(x))``; the distillation strategy uses that, so a cached teacher flow (and a
refined one) serves every warped copy of its pair without running the teacher again.
"""
from __future__ import annotations

import math
from typing import Dict, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from DeepRegLib.spatial import warp


def rotation_matrix(angles_rad: Sequence[float]) -> np.ndarray:
    """``R = Rz @ Ry @ Rx`` for rotations about the x, y, z axes (radians), a 3x3 matrix in (x, y, z)."""
    ax, ay, az = angles_rad
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def physical_to_theta(matrix: np.ndarray, translation_mm: Sequence[float], shape: Sequence[int],
                      spacing_zyx: Sequence[float]) -> torch.Tensor:
    """The ``(3, 4)`` ``affine_grid`` matrix (``align_corners=False``) of the physical mapping
    ``p_in = matrix @ p_out + translation`` (mm, axes x, y, z, origin at the grid's centre) on a grid
    of ``shape`` (D, H, W) voxels with ``spacing_zyx`` (mm, array order)."""
    d, h, w = (int(s) for s in shape)
    sz, sy, sx = (float(s) for s in spacing_zyx)
    half = np.diag([w * sx / 2, h * sy / 2, d * sz / 2])  # normalised coordinate -> mm, per axis (x, y, z)
    inv = np.linalg.inv(half)
    theta = np.concatenate([inv @ np.asarray(matrix, float) @ half, (inv @ np.asarray(translation_mm, float))[:, None]], 1)
    return torch.tensor(theta, dtype=torch.float32)


def random_theta(rng: np.random.Generator, shape: Sequence[int], spacing_zyx: Sequence[float],
                 max_rotation_deg: float, max_scale: float, max_translation_mm: float) -> torch.Tensor:
    """One random ``(3, 4)`` ``affine_grid`` matrix: angles ``U(-max, max)`` per axis, scale
    ``U(1 - max, 1 + max)``, translation ``U(-max, max)`` mm per axis."""
    angles = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg, 3)) if max_rotation_deg else np.zeros(3)
    scale = rng.uniform(1 - max_scale, 1 + max_scale) if max_scale else 1.0
    shift = rng.uniform(-max_translation_mm, max_translation_mm, 3) if max_translation_mm else np.zeros(3)
    return physical_to_theta(rotation_matrix(angles) * scale, shift, shape, spacing_zyx)


def warp_affine(x: torch.Tensor, theta: torch.Tensor, mode: str) -> torch.Tensor:
    """Resample ``x`` ``(B, C, D, H, W)`` through ``theta`` ``(B, 3, 4)`` (border values held; labels: ``nearest``)."""
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x.float(), grid, mode=mode, padding_mode="border", align_corners=False)


def augment_moving(batch: Dict[str, torch.Tensor], rng: np.random.Generator,
                   params: Sequence[float]) -> Dict[str, torch.Tensor]:
    """``batch`` with ``moving`` (and ``moving_labels``) resampled by one random affine per pair.

    ``params = (max_rotation_deg, max_scale, max_translation_mm)``; all zero returns ``batch``
    untouched. Sets ``batch['augmented']`` so that per-pair caches (teacher flows) are bypassed.
    """
    rot, scale, shift = (float(p) for p in params)
    if not (rot or scale or shift):
        return batch
    moving = batch["moving"]
    shape = moving.shape[2:]
    theta = torch.stack([random_theta(rng, shape, batch["spacing"].tolist(), rot, scale, shift)
                         for _ in range(moving.shape[0])])
    batch["moving"] = warp_affine(moving, theta, "bilinear").to(moving.dtype)
    if "moving_labels" in batch:
        labels = batch["moving_labels"]
        batch["moving_labels"] = warp_affine(labels, theta, "nearest").round().to(labels.dtype)
    batch["augmented"] = torch.tensor(True)
    return batch


def random_smooth_field(rng: np.random.Generator, shape: Sequence[int], spacing_zyx: Sequence[float],
                        amplitude_mm: float, control_mm: float) -> torch.Tensor:
    """A random smooth displacement ``(1, 3, D, H, W)`` in voxels (channel k along array axis k).

    Independent ``N(0, amplitude_mm^2)`` values per axis on a lattice of control points about
    ``control_mm`` apart covering the grid (corners included), trilinear in between; converted to
    each axis's voxel size (physical, so anisotropic grids get the same warp in mm).
    """
    sp = [float(s) for s in spacing_zyx]
    n = [max(2, int(math.ceil((int(d) - 1) * s / float(control_mm))) + 1) for d, s in zip(shape, sp)]
    coarse = torch.tensor(rng.normal(0.0, float(amplitude_mm), (1, 3, *n)), dtype=torch.float32)
    field = F.interpolate(coarse, size=tuple(int(d) for d in shape), mode="trilinear", align_corners=True)
    return field / torch.tensor(sp, dtype=torch.float32).view(1, 3, 1, 1, 1)


def _warp_image_and_labels(batch: Dict[str, torch.Tensor], key: str, psi: torch.Tensor) -> None:
    """``batch[key]`` (linear) and ``batch[key + '_labels']`` if present (nearest) resampled through ``id + psi``
    (``psi`` ``(B, 3, D, H, W)`` voxels), in place, each keeping its dtype."""
    image = batch[key]
    batch[key] = warp(image.float(), psi).to(image.dtype)
    if f"{key}_labels" in batch:
        labels = batch[f"{key}_labels"]
        batch[f"{key}_labels"] = warp(labels.float(), psi, mode="nearest").round().to(labels.dtype)


def augment_fixed_warp(batch: Dict[str, torch.Tensor], rng: np.random.Generator,
                       params: Sequence[float]) -> Dict[str, torch.Tensor]:
    """``batch`` with ``fixed`` (and ``fixed_labels``) resampled through ``id + psi``, one random smooth
    ``psi`` per pair (:func:`random_smooth_field`), stored as ``batch['fixed_warp']`` ``(B, 3, D, H, W)``
    voxels; the original fixed image is kept as ``batch['fixed_unwarped']`` (for teachers whose flows
    are cached per original pair). ``params = (amplitude_mm, control_spacing_mm)``; a zero amplitude
    returns ``batch`` untouched."""
    amplitude, control = (float(p) for p in params)
    if not amplitude:
        return batch
    if control <= 0:
        raise ValueError(f"data.warp_fixed: the control-point spacing must be positive, got {control} mm")
    fixed = batch["fixed"]
    shape, spacing = fixed.shape[2:], batch["spacing"].tolist()
    psi = torch.cat([random_smooth_field(rng, shape, spacing, amplitude, control)
                     for _ in range(fixed.shape[0])]).to(fixed.device)
    batch["fixed_unwarped"] = fixed
    _warp_image_and_labels(batch, "fixed", psi)
    batch["fixed_warp"] = psi
    return batch


def cubic_bspline(t: torch.Tensor) -> torch.Tensor:
    """The cubic B-spline kernel ``B3(t)`` (support ``|t| < 2``; ``B3(0) = 2/3``; its integer shifts sum to 1)."""
    a = t.abs()
    return torch.where(a < 1, 2.0 / 3.0 - a.pow(2) + a.pow(3) / 2.0,
                       torch.where(a < 2, (2.0 - a).pow(3) / 6.0, torch.zeros_like(a)))


def sample_power(rng: np.random.Generator, lo: float, hi: float, k: float, size) -> np.ndarray:
    """RCN's ``sample_power``: ``u ~ U(-r, r)`` with ``r = ((hi - lo) / 2)^(1/k)``, returned as
    ``|u|^k sign(u) + (hi + lo) / 2``: values in ``(lo, hi)``, most of them near the centre."""
    r = ((hi - lo) / 2.0) ** (1.0 / k)
    u = (rng.random(size) - 0.5) * 2.0 * r
    return np.abs(u) ** k * np.sign(u) + (hi + lo) / 2.0


def free_form_field(rng: np.random.Generator, shape: Sequence[int], max_fraction: float = 0.4,
                    control: int = 5) -> torch.Tensor:
    """RCN's random free-form deformation ``(1, 3, D, H, W)`` in voxels (channel ``c`` along array axis ``c``).

    ``control^3`` control points span the grid (corners included; a ring of zero points outside it),
    their displacements along axis ``c`` are :func:`sample_power` ``(-max_fraction, max_fraction, 3)``
    times ``side_c // 4`` voxels (the reference: ``0.4``, ``5`` points, ``(128 // 4) = 32`` voxels), and
    the field is their cubic B-spline interpolation.
    """
    if control < 2:
        raise ValueError(f"data.free_form: expected at least 2 control points per axis, got {control}")
    sides = [int(d) for d in shape]
    values = torch.tensor(sample_power(rng, -max_fraction, max_fraction, 3, (3, control, control, control)),
                          dtype=torch.float32) * torch.tensor([d // 4 for d in sides], dtype=torch.float32).view(3, 1, 1, 1)
    weights = []
    for d in sides:
        step = max(d - 1, 1) / (control - 1)
        knots = torch.arange(-1, control + 1, dtype=torch.float32) * step         # zero ring at -1 and control
        weights.append(cubic_bspline((torch.arange(d, dtype=torch.float32)[:, None] - knots[None]) / step))
    padded = F.pad(values, (1, 1, 1, 1, 1, 1))
    field = torch.einsum("ai,bj,ck,nijk->nabc", weights[0], weights[1], weights[2], padded)
    return field.unsqueeze(0)


def augment_free_form(batch: Dict[str, torch.Tensor], rng: np.random.Generator,
                      params: Sequence[float]) -> Dict[str, torch.Tensor]:
    """``batch`` with ``moving`` (and ``moving_labels``) resampled through ``id + psi``, one RCN free-form
    field ``psi`` per pair (:func:`free_form_field`), as RCN augments its training pairs.
    ``params = (max_fraction, control_points)``; ``max_fraction = 0`` returns ``batch`` untouched (and
    draws nothing). Sets ``batch['augmented']`` so that per-pair caches (teacher flows) are bypassed."""
    fraction, control = float(params[0]), int(params[1])
    if not fraction:
        return batch
    moving = batch["moving"]
    psi = torch.cat([free_form_field(rng, moving.shape[2:], fraction, control)
                     for _ in range(moving.shape[0])]).to(moving.device)
    _warp_image_and_labels(batch, "moving", psi)
    batch["augmented"] = torch.tensor(True)
    return batch


def rerender_batch(batch: Dict[str, torch.Tensor], rng: np.random.Generator, spec,
                   random_share: float = 1.0) -> Dict[str, torch.Tensor]:
    """``batch`` (from :func:`training.data.make_batch`) with ``fixed`` and ``moving`` rendered anew from its
    label maps, each with its own random contrast (:func:`training.data.synthhead.render`, then
    ``spec.normalisation``; ``spec`` a :class:`DeepRegLib.pipeline.InputSpec`), as SynthMorph draws a new
    image pair every step. Labels, flips and geometry are unchanged.

    ``random_share`` < 1 (a contrast curriculum) blends each image with the one shared contrast of
    :func:`training.data.synthhead.reference_lut` (the same for both images):
    ``(1 - random_share) * shared + random_share * random``, both normalised."""
    from .data.synthhead import reference_lut, render
    out = dict(batch)
    for key, labels in (("fixed", "fixed_labels"), ("moving", "moving_labels")):
        lab = batch[labels][:, 0].cpu().numpy()
        imgs = [spec.normalisation.apply(render(lab[b], rng, spec.spacing)) for b in range(lab.shape[0])]
        if random_share < 1.0:
            imgs = [random_share * img + (1.0 - random_share) * spec.normalisation.apply(reference_lut(lab[b]))
                    for b, img in enumerate(imgs)]
        out[key] = torch.from_numpy(np.stack(imgs).astype(np.float32))[:, None].to(batch[key].device)
    return out


def same_anatomy_pairs(batch: Dict[str, torch.Tensor], rng: np.random.Generator, share: float
                       ) -> Dict[str, torch.Tensor]:
    """``batch`` with, for a random ``share`` of its pairs, the moving label map replaced by the fixed one
    (before :func:`rerender_batch` renders both in their own contrasts): pairs of one anatomy in two
    contrasts, which ``data.warp_fixed`` (:func:`augment_fixed_warp`) then deforms by a known smooth field,
    as SynthMorph also trains on. ``share=0`` returns ``batch`` untouched."""
    if share <= 0:
        return batch
    pick = torch.from_numpy(rng.random(batch["fixed_labels"].shape[0]) < share).to(batch["fixed_labels"].device)
    if not bool(pick.any()):
        return batch
    out = dict(batch)
    view = pick.view(-1, *([1] * (batch["fixed_labels"].dim() - 1)))
    out["moving_labels"] = torch.where(view, batch["fixed_labels"], batch["moving_labels"])
    return out
