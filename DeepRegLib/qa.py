"""Quality checks of a transform: % folding and SDlogJ, measured as an outside evaluator does.

The transform (any ITK transform, as written to file) is sampled with
``SimpleITK.TransformToDisplacementField`` on an **identity-direction** LPS grid of ``spacing`` mm
that covers the reference (fixed) image, and the Jacobian determinant of ``p -> T(p)`` is taken by
central differences along those LPS axes.  (``SimpleITK.DisplacementFieldJacobianDeterminant``
differentiates along index axes and ignores the direction matrix, which is wrong for files with a
permuted direction such as the Mindboggle ones; sampling on an identity-direction grid avoids it.)
The affine stage's Jacobian is constant, so folding comes from the deformable part.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import SimpleITK as sitk
import torch

from .grid import Grid, physical_bounding_box
from .spatial import jacobian_determinant


def evaluation_grid(reference: sitk.Image, spacing: float = 1.0) -> Grid:
    """Identity-direction LPS grid of ``spacing`` mm covering ``reference``'s bounding box."""
    lo, hi = physical_bounding_box(reference)
    size = [int(np.ceil((h - l) / spacing)) + 1 for l, h in zip(lo, hi)]
    return Grid(origin=tuple(float(v) for v in lo), spacing=(float(spacing),) * 3, size=tuple(size))


def sampled_jacobian(transform: sitk.Transform, grid: Grid, slab: int = 24) -> np.ndarray:
    """det J of ``transform`` at the interior nodes of ``grid`` (``(z-2, y-2, x-2)``, float32), in slabs."""
    out = np.empty([n - 2 for n in grid.shape], np.float32)
    nz = grid.shape[0]
    for z0 in range(0, nz - 2, slab):
        z1 = min(z0 + slab + 2, nz)  # nodes z0 .. z1-1 give dets at z0+1 .. z1-2
        sub = Grid(origin=(grid.origin[0], grid.origin[1], grid.origin[2] + z0 * grid.spacing[2]),
                   spacing=grid.spacing, size=(grid.size[0], grid.size[1], z1 - z0))
        f = sitk.TransformToDisplacementFieldFilter()
        f.SetOutputOrigin(sub.origin)
        f.SetOutputSpacing(sub.spacing)
        f.SetSize([int(s) for s in sub.size])
        f.SetOutputPixelType(sitk.sitkVectorFloat64)
        field = sitk.GetArrayFromImage(f.Execute(transform))  # (z, y, x, 3) LPS mm, components (x, y, z)
        sp = grid.spacing
        flow = torch.from_numpy(np.stack([field[..., 2] / sp[2], field[..., 1] / sp[1], field[..., 0] / sp[0]])[None])
        out[z0:z0 + (z1 - z0 - 2)] = jacobian_determinant(flow)[0].numpy()
    return out


def brain_mask_on(grid: Grid, mask: sitk.Image) -> np.ndarray:
    """A mask image (non-zero = inside, any geometry) resampled (nearest) onto ``grid``'s interior nodes."""
    m = sitk.Resample(sitk.Cast(mask != 0, sitk.sitkUInt8), grid.reference(sitk.sitkUInt8), sitk.Transform(),
                      sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(m)[1:-1, 1:-1, 1:-1] > 0


def transform_folding(transform: sitk.Transform, reference: sitk.Image, spacing: float = 1.0,
                      mask: Optional[sitk.Image] = None) -> Dict[str, float]:
    """% of voxels with det J <= 0 and SDlogJ of ``transform`` on an identity-direction grid of ``spacing`` mm.

    ``mask``: an image (non-zero = inside, e.g. the fixed brain or its label map) restricting the count;
    default: the whole grid over ``reference``.
    """
    grid = evaluation_grid(reference, spacing)
    det = sampled_jacobian(transform, grid)
    if mask is not None:
        det = det[brain_mask_on(grid, mask)]
    det = det.ravel().astype(np.float64)
    if det.size == 0:
        return {"folding_percent": 0.0, "sdlogj": 0.0}
    return {"folding_percent": float(100.0 * np.mean(det <= 0)),
            "sdlogj": float(np.std(np.log(np.clip(det, 1e-9, None)), ddof=1))}
