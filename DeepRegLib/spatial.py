"""Dense spatial operations in torch.

Convention used throughout the engine (VoxelMorph style):

* Volumes are tensors ``(B, C, D, H, W)``; the three spatial axes are the axes of
  the numpy array of a SimpleITK image, i.e. ``(k, j, i)`` = (z, y, x) voxel index.
* A displacement ``flow`` is ``(B, 3, D, H, W)`` in **voxel units**; channel ``c``
  is the displacement along spatial axis ``c``.  Warping samples the moving
  volume at ``p + flow(p)``: the flow maps fixed-grid points to moving points
  (the ITK resampling convention).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def identity_grid(shape: Sequence[int], device=None, dtype=torch.float32) -> torch.Tensor:
    """Voxel coordinates ``(1, 3, *shape)`` of every grid point (channel c = index along axis c)."""
    vectors = [torch.arange(s, device=device, dtype=dtype) for s in shape]
    grids = torch.meshgrid(*vectors, indexing="ij")
    return torch.stack(grids).unsqueeze(0)


def _normalise(coords: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Voxel coordinates ``(B, 3, D, H, W)`` -> grid_sample grid ``(B, D, H, W, 3)`` (x, y, z order)."""
    parts = []
    for c, s in enumerate(shape):
        parts.append(2.0 * coords[:, c] / max(s - 1, 1) - 1.0)
    return torch.stack(parts[::-1], dim=-1)


def sample(volume: torch.Tensor, coords: torch.Tensor, mode: str = "bilinear",
           padding_mode: str = "border") -> torch.Tensor:
    """Sample ``volume`` at voxel coordinates ``coords`` ``(B, 3, ...)`` (of ``volume``'s grid)."""
    grid = _normalise(coords, volume.shape[2:])
    return F.grid_sample(volume, grid, mode=mode, padding_mode=padding_mode, align_corners=True)


def warp(volume: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear",
         padding_mode: str = "border") -> torch.Tensor:
    """Warp ``volume`` by ``flow`` (voxels): ``out(p) = volume(p + flow(p))``.

    ``mode='bilinear'`` is trilinear for 3D; use ``'nearest'`` for label maps.
    """
    if flow.shape[2:] != volume.shape[2:]:
        raise ValueError(f"flow grid {tuple(flow.shape[2:])} != volume grid {tuple(volume.shape[2:])}")
    coords = identity_grid(flow.shape[2:], flow.device, flow.dtype) + flow
    return sample(volume, coords, mode=mode, padding_mode=padding_mode)


def compose(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Displacement of applying ``second`` and then ``first`` to the sampling point.

    If ``W1 = M o (id + first)`` and ``W2 = W1 o (id + second)`` then
    ``W2 = M o (id + compose(first, second))``: this is how recursive cascades chain.
    """
    return second + warp(first, second, mode="bilinear", padding_mode="border")


def resize_flow(flow: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Resample a voxel-unit flow to another grid covering the same extent (corner-aligned).

    Voxel displacements are rescaled by the change of voxel size along each axis.
    """
    old = flow.shape[2:]
    out = F.interpolate(flow, size=tuple(shape), mode="trilinear", align_corners=True)
    scale = torch.tensor([(n - 1) / max(o - 1, 1) for n, o in zip(shape, old)],
                         dtype=flow.dtype, device=flow.device).view(1, 3, 1, 1, 1)
    return out * scale


def integrate_velocity(velocity: torch.Tensor, steps: int = 7) -> torch.Tensor:
    """Scaling and squaring: the displacement of ``exp(velocity)`` (diffeomorphic variant)."""
    flow = velocity / (2 ** steps)
    for _ in range(steps):
        flow = compose(flow, flow)
    return flow


def gaussian_smooth(flow: torch.Tensor, sigma: float) -> torch.Tensor:
    """``flow`` ``(B, C, D, H, W)`` smoothed by a Gaussian of standard deviation ``sigma`` voxels per axis.

    Separable, truncated at 3 sigma, replicate padding (a constant field stays constant, so does a field
    that is linear along an axis away from the border). ``sigma <= 0`` returns ``flow`` itself.
    """
    if sigma <= 0:
        return flow
    if flow.dim() != 5:
        raise ValueError(f"expected a (B, C, D, H, W) tensor, got shape {tuple(flow.shape)}")
    radius = max(1, int(3.0 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=flow.dtype, device=flow.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = flow.shape[1]
    out = flow
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        pad = [0, 0, 0, 0, 0, 0]  # F.pad order: x, y, z (last axis first)
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        out = F.conv3d(F.pad(out, pad, mode="replicate"), kernel.view(shape).expand(channels, -1, -1, -1, -1),
                       groups=channels)
    return out


def jacobian_determinant(flow: torch.Tensor, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> torch.Tensor:
    """Determinant of the Jacobian of ``p -> p + flow(p)``, ``(B, D-2, H-2, W-2)`` (central differences).

    ``spacing`` only matters for anisotropic grids: the determinant is of the map in
    physical units, which equals the voxel-unit one when the flow is expressed in voxels
    of the same grid; it is accepted for clarity and ignored otherwise.
    """
    del spacing  # det of d(p+u)/dp is invariant to a diagonal change of units on both sides
    grads = []
    for axis in range(3):
        sl_hi = [slice(1, -1)] * 3
        sl_lo = [slice(1, -1)] * 3
        sl_hi[axis] = slice(2, None)
        sl_lo[axis] = slice(None, -2)
        d = (flow[(slice(None), slice(None), *sl_hi)] - flow[(slice(None), slice(None), *sl_lo)]) / 2.0
        grads.append(d)  # derivative of each component along ``axis``
    # J[c][a] = delta_ca + d flow_c / d x_a
    J = [[grads[a][:, c] + (1.0 if a == c else 0.0) for a in range(3)] for c in range(3)]
    return (J[0][0] * (J[1][1] * J[2][2] - J[1][2] * J[2][1])
            - J[0][1] * (J[1][0] * J[2][2] - J[1][2] * J[2][0])
            + J[0][2] * (J[1][0] * J[2][1] - J[1][1] * J[2][0]))


def folding_percent(flow: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Percentage of voxels with ``det J <= 0`` (optionally inside ``mask``, cropped like the det)."""
    det = jacobian_determinant(flow)
    if mask is not None:
        m = mask[:, 0, 1:-1, 1:-1, 1:-1] > 0
        return float(100.0 * (det[m] <= 0).float().mean()) if m.any() else 0.0
    return float(100.0 * (det <= 0).float().mean())


def sd_log_jacobian(flow: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Standard deviation of ``log(det J)`` with the determinant clipped at 1e-9."""
    det = jacobian_determinant(flow).clamp_min(1e-9).log()
    if mask is not None:
        det = det[mask[:, 0, 1:-1, 1:-1, 1:-1] > 0]
    return float(det.std())
