"""Network grids: axis-aligned boxes in physical LPS space.

A :class:`Grid` is an image geometry with identity direction, so its index axes are
the LPS axes (i = L, j = P, k = S).  The engine's networks always work on such a grid,
centred on the fixed image's foreground, so that a model sees every input in one
canonical orientation whatever the input files' direction matrices are.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class Grid:
    """Identity-direction grid. ``size`` is ITK order (x, y, z); array shape is reversed."""

    origin: Tuple[float, float, float]
    spacing: Tuple[float, float, float]
    size: Tuple[int, int, int]

    @property
    def shape(self) -> Tuple[int, int, int]:
        """Numpy / torch array shape (z, y, x)."""
        return tuple(int(s) for s in self.size[::-1])

    def reference(self, pixel_type: int = sitk.sitkFloat32) -> sitk.Image:
        """An empty SimpleITK image with this geometry (for ``sitk.Resample``)."""
        ref = sitk.Image([int(s) for s in self.size], pixel_type)
        ref.SetOrigin(tuple(float(o) for o in self.origin))
        ref.SetSpacing(tuple(float(s) for s in self.spacing))
        return ref

    def image_from_array(self, array: np.ndarray, is_vector: bool = False) -> sitk.Image:
        """Wrap an array of shape ``self.shape`` (plus a trailing component axis) with this geometry."""
        img = sitk.GetImageFromArray(array, isVector=is_vector)
        img.SetOrigin(tuple(float(o) for o in self.origin))
        img.SetSpacing(tuple(float(s) for s in self.spacing))
        return img

    def refined(self, factor: int = 2) -> "Grid":
        """The same lattice ``factor`` times finer, corner-aligned: the same origin, ``spacing / factor`` and
        ``factor * (n - 1) + 1`` voxels per axis, so that voxel ``factor * i`` is this grid's voxel ``i``."""
        if int(factor) != factor or factor < 1:
            raise ValueError(f"expected an integer refinement factor >= 1, got {factor}")
        return Grid(origin=self.origin, spacing=tuple(s / factor for s in self.spacing),
                    size=tuple(int(factor) * (n - 1) + 1 for n in self.size))

    def physical_points(self) -> np.ndarray:
        """LPS coordinates (mm) of every voxel, array ``(z, y, x, 3)`` with components (x, y, z)."""
        axes = [self.origin[a] + self.spacing[a] * np.arange(self.size[a]) for a in range(3)]
        zz, yy, xx = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
        return np.stack([xx, yy, zz], axis=-1)


def centred_grid(centre: Sequence[float], spacing: float, size: Sequence[int]) -> Grid:
    """Grid of ``size`` (x, y, z) voxels of ``spacing`` mm whose centre is at ``centre`` (LPS mm)."""
    size = tuple(int(s) for s in size)
    origin = tuple(float(c) - spacing * (n - 1) / 2.0 for c, n in zip(centre, size))
    return Grid(origin=origin, spacing=(float(spacing),) * 3, size=size)


def index_box_corners_to_physical(image: sitk.Image, lower: Sequence[float], upper: Sequence[float]) -> np.ndarray:
    """Physical (LPS) coordinates of the 8 corners of the continuous index box ``[lower, upper]``."""
    corners = []
    for cx in (lower[0], upper[0]):
        for cy in (lower[1], upper[1]):
            for cz in (lower[2], upper[2]):
                corners.append(image.TransformContinuousIndexToPhysicalPoint((float(cx), float(cy), float(cz))))
    return np.asarray(corners)


def physical_bounding_box(image: sitk.Image) -> Tuple[np.ndarray, np.ndarray]:
    """(min, max) LPS corners of the axis-aligned box enclosing the whole image (voxel edges)."""
    size = image.GetSize()
    pts = index_box_corners_to_physical(image, [-0.5] * 3, [s - 0.5 for s in size])
    return pts.min(0), pts.max(0)
