"""Random affine augmentation of the moving image of a training pair, in physical units.

The fixed image is left as it is; the moving image and its labels are resampled through a random
rotation (degrees, about each axis, about the grid's centre), an isotropic scaling and a
translation (mm), so that the network sees misalignments the few training pairs of a task do not
have. Rotations and translations are physical: on anisotropic grids (spacing differs per axis) they
are converted to each axis's voxel size, not applied to array indices.

``data.augment_affine = (max_rotation_deg, max_scale, max_translation_mm)``; all zero (the default)
turns it off.
"""
from __future__ import annotations

import math
from typing import Dict, Sequence

import numpy as np
import torch
import torch.nn.functional as F


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
