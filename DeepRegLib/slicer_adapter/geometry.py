"""Slicer-side geometry without Slicer: RAS <-> LPS images and matrices.

Pure numpy/SimpleITK, so that the worker thread (:mod:`DeepRegLib.slicer_adapter.worker`) and the MRML adapter
share it without the worker importing ``slicer`` or touching MRML.  Slicer's world is
RAS, the engine's is LPS: ``RAS = FLIP * LPS`` with ``FLIP = diag(-1, -1, 1)`` (its own inverse).
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..errors import InputError

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


def ras_to_lps_matrix(m_ras: np.ndarray) -> np.ndarray:
    """A RAS 4x4 point mapping expressed in LPS (``FLIP m FLIP``; the same matrix maps LPS to RAS)."""
    return FLIP @ np.asarray(m_ras, dtype=float) @ FLIP


def image_ijk_to_ras(image: sitk.Image) -> np.ndarray:
    """4x4 index -> RAS matrix of a SimpleITK image."""
    d = np.asarray(image.GetDirection()).reshape(3, 3)
    m = np.eye(4)
    m[:3, :3] = d * np.asarray(image.GetSpacing())[None, :]
    m[:3, 3] = image.GetOrigin()
    return FLIP @ m


def affine_ras_matrix(result) -> np.ndarray:
    """The affine part of ``result`` (fixed -> moving) as a RAS 4x4 matrix (a linear node's *from parent*)."""
    from ..transforms import affine_matrix
    return ras_to_lps_matrix(affine_matrix(result.affine))
