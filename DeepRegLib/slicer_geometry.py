"""Slicer-side geometry without Slicer: RAS <-> LPS and the sampled grid of a transform node.

Pure numpy/SimpleITK, so that the worker thread (:mod:`DeepRegLib.worker`) can compute what a
grid transform node will hold without importing ``slicer`` or touching MRML.  Slicer's world is
RAS, the engine's is LPS: ``RAS = FLIP * LPS`` with ``FLIP = diag(-1, -1, 1)`` (its own inverse).
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .grid import Grid, physical_bounding_box

#: RAS <-> LPS flip (its own inverse), homogeneous and 3-vector forms.
FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])
FLIP3 = np.array([-1.0, -1.0, 1.0])
GRID_MARGIN_VOXELS = 2


def geometry_from_ijk_to_ras(m_ras: np.ndarray):
    """(origin, spacing, direction) of the LPS image whose index -> RAS matrix is ``m_ras``."""
    m = FLIP @ np.asarray(m_ras, dtype=float)
    cols = m[:3, :3]
    spacing = np.linalg.norm(cols, axis=0)
    if np.any(spacing <= 0):
        raise InputError("volume has a zero voxel spacing")
    direction = cols / spacing[None, :]
    return m[:3, 3], spacing, direction


def image_from_array(array_kji: np.ndarray, ijk_to_ras: np.ndarray, pixel_type=None) -> sitk.Image:
    """A SimpleITK image (LPS) of a ``(k, j, i)`` array whose index -> RAS matrix is ``ijk_to_ras``."""
    origin, spacing, direction = geometry_from_ijk_to_ras(ijk_to_ras)
    img = sitk.GetImageFromArray(np.ascontiguousarray(array_kji))
    if pixel_type is not None and img.GetPixelID() != pixel_type:
        img = sitk.Cast(img, pixel_type)
    img.SetOrigin(tuple(float(v) for v in origin))
    img.SetSpacing(tuple(float(v) for v in spacing))
    img.SetDirection(tuple(float(v) for v in direction.ravel()))
    return img


def image_ijk_to_ras(image: sitk.Image) -> np.ndarray:
    """4x4 index -> RAS matrix of a SimpleITK image."""
    d = np.asarray(image.GetDirection()).reshape(3, 3)
    m = np.eye(4)
    m[:3, :3] = d * np.asarray(image.GetSpacing())[None, :]
    m[:3, 3] = image.GetOrigin()
    return FLIP @ m


def result_grid(result, margin: int = GRID_MARGIN_VOXELS) -> Grid:
    """The engine's displacement lattice, extended/cropped to the fixed image's bounding box plus ``margin`` voxels."""
    g = result.grid
    lo, hi = physical_bounding_box(result.fixed)
    o, s = np.asarray(g.origin), np.asarray(g.spacing)
    i0 = np.floor((lo - o) / s).astype(int) - margin
    i1 = np.ceil((hi - o) / s).astype(int) + margin
    return Grid(origin=tuple(float(v) for v in o + i0 * s), spacing=tuple(float(v) for v in s),
                size=tuple(int(v) for v in i1 - i0 + 1))


def ras_displacement(result, grid: Grid) -> np.ndarray:
    """``T(p) - p`` in RAS mm at every point of ``grid`` (``(z, y, x, 3)``, float64).

    When ``grid`` lies on the engine's lattice (as :func:`result_grid` makes it), ``u`` at its nodes
    is the engine's field itself (zero outside), so no interpolation is needed; otherwise the
    engine's :meth:`map_points` is used.
    """
    from .transforms import affine_matrix
    pts = grid.physical_points()
    g = result.grid
    u = np.zeros(pts.shape)
    if result.displacement is not None:
        off = (np.asarray(grid.origin) - np.asarray(g.origin)) / np.asarray(g.spacing)
        if not (np.allclose(grid.spacing, g.spacing) and np.allclose(off, np.round(off), atol=1e-6)):
            return (result.map_points(pts) - pts) * FLIP3
        off = np.round(off).astype(int)[::-1]  # (z, y, x) offset of `grid` in the engine grid
        src = tuple(slice(max(o, 0), min(o + n, m)) for o, n, m in zip(off, grid.shape, g.shape))
        dst = tuple(slice(s.start - o, s.stop - o) for s, o in zip(src, off))
        if all(s.stop > s.start for s in src):
            u[dst] = result.displacement[src]
    m = affine_matrix(result.affine)
    moved = (pts + u) @ m[:3, :3].T + m[:3, 3]
    return (moved - pts) * FLIP3


def affine_ras_matrix(result) -> np.ndarray:
    """The affine part of ``result`` (fixed -> moving) as a RAS 4x4 matrix (a linear node's *from parent*)."""
    from .transforms import affine_matrix
    return FLIP @ affine_matrix(result.affine) @ FLIP
