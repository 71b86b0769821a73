"""Fixed-to-moving mappings in physical space and their ITK representation.

A registration result maps a fixed LPS point ``p`` (mm) to a moving point

    T(p) = A(p + u(p))

where ``u`` is a dense displacement (mm, LPS components) sampled on an LPS-aligned
grid (trilinear, zero outside the grid; the field is tapered to zero at the grid
border so that ``T`` is continuous) and ``A`` is an affine transform.  As an ITK
composite transform this is ``[A, u]`` (ITK applies the last-added transform
first), which is what :func:`to_sitk` builds and ``SimpleITK.Resample`` uses.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import SimpleITK as sitk
import torch

from .grid import Grid
from .spatial import sample


def taper_border(displacement: np.ndarray, width: int = 3) -> np.ndarray:
    """Multiply a ``(z, y, x, 3)`` field by a ramp that is 0 on the outer voxel layer and 1 ``width`` voxels in."""
    out = displacement.copy()
    for axis in range(3):
        n = out.shape[axis]
        ramp = np.clip(np.minimum(np.arange(n), np.arange(n)[::-1]) / float(width), 0.0, 1.0)
        shape = [1, 1, 1, 1]
        shape[axis] = n
        out *= ramp.reshape(shape)
    return out


def flow_to_displacement(flow: torch.Tensor, grid: Grid) -> np.ndarray:
    """Voxel flow ``(1, 3, z, y, x)`` (channels along array axes) on ``grid`` -> LPS mm field ``(z, y, x, 3)``."""
    f = flow.detach().to("cpu", torch.float64)[0].numpy()
    sp = grid.spacing
    return np.stack([f[2] * sp[0], f[1] * sp[1], f[0] * sp[2]], axis=-1)


def displacement_transform(displacement: np.ndarray, grid: Grid) -> sitk.DisplacementFieldTransform:
    """An ITK displacement field transform from an LPS mm field ``(z, y, x, 3)`` on ``grid``."""
    img = grid.image_from_array(np.ascontiguousarray(displacement, dtype=np.float64), is_vector=True)
    return sitk.DisplacementFieldTransform(img)


def to_sitk(affine: sitk.Transform, displacement: Optional[np.ndarray], grid: Optional[Grid]) -> sitk.CompositeTransform:
    """Composite ``T(p) = A(p + u(p))`` (fixed -> moving)."""
    comp = sitk.CompositeTransform(3)
    comp.AddTransform(sitk.AffineTransform(affine) if isinstance(affine, sitk.AffineTransform) else affine)
    if displacement is not None:
        comp.AddTransform(displacement_transform(displacement, grid))
    return comp


def write_transform(transform: sitk.Transform, path: str | os.PathLike) -> str:
    """Write an ITK transform file (``.h5``/``.tfm``/``.txt``); creates the parent folder."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sitk.WriteTransform(transform, path)
    return path


def affine_matrix(affine: sitk.Transform) -> np.ndarray:
    """4x4 homogeneous matrix of a linear ITK transform (LPS, fixed -> moving)."""
    from .affine import to_affine
    a = to_affine(affine)
    m = np.eye(4)
    m[:3, :3] = np.asarray(a.GetMatrix()).reshape(3, 3)
    c = np.asarray(a.GetCenter())
    m[:3, 3] = np.asarray(a.GetTranslation()) + c - m[:3, :3] @ c
    return m


def map_points(points: np.ndarray, affine: sitk.Transform, displacement: Optional[np.ndarray],
               grid: Optional[Grid]) -> np.ndarray:
    """The engine's own evaluation of ``T`` at LPS points ``(..., 3)`` (torch trilinear, zero outside grid)."""
    pts = np.asarray(points, dtype=np.float64)
    flat = pts.reshape(-1, 3)
    if displacement is not None:
        idx = (flat - np.asarray(grid.origin)) / np.asarray(grid.spacing)  # continuous (i, j, k)
        field = torch.from_numpy(np.moveaxis(displacement, -1, 0)[None])  # (1, 3, z, y, x)
        coords = torch.from_numpy(idx[:, ::-1].T.copy()).view(1, 3, -1, 1, 1)  # (k, j, i)
        u = sample(field, coords, mode="bilinear", padding_mode="zeros")[0, :, :, 0, 0].T.numpy()
        flat = flat + u
    m = affine_matrix(affine)
    out = flat @ m[:3, :3].T + m[:3, 3]
    return out.reshape(pts.shape)


def index_to_physical(image: sitk.Image) -> np.ndarray:
    """4x4 matrix mapping (i, j, k, 1) voxel indices of ``image`` to LPS mm."""
    d = np.asarray(image.GetDirection()).reshape(3, 3)
    s = np.asarray(image.GetSpacing())
    m = np.eye(4)
    m[:3, :3] = d * s[None, :]
    m[:3, 3] = image.GetOrigin()
    return m


def engine_warp(moving: sitk.Image, reference: sitk.Image, affine: sitk.Transform,
                displacement: Optional[np.ndarray], grid: Optional[Grid], nearest: bool = False,
                default: float = 0.0) -> sitk.Image:
    """Resample ``moving`` onto ``reference`` through ``T`` with torch (independent of ITK's resampler)."""
    ref_m = index_to_physical(reference)
    size = reference.GetSize()
    kk, jj, ii = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in size[::-1]], indexing="ij")
    ijk = np.stack([ii, jj, kk, np.ones_like(ii)], axis=-1)
    phys = (ijk @ ref_m.T)[..., :3]
    mov_pts = map_points(phys, affine, displacement, grid)
    inv = np.linalg.inv(index_to_physical(moving))
    midx = mov_pts @ inv[:3, :3].T + inv[:3, 3]  # continuous (i, j, k) of moving
    vol = torch.from_numpy(sitk.GetArrayFromImage(moving).astype(np.float32))[None, None]
    coords = torch.from_numpy(np.moveaxis(midx[..., ::-1], -1, 0).astype(np.float32).copy())[None]
    out = sample(vol - default, coords, mode="nearest" if nearest else "bilinear", padding_mode="zeros") + default
    img = sitk.GetImageFromArray(out[0, 0].numpy())
    img.CopyInformation(reference)
    return img
