"""Quality checks of a transform: % folding and SDlogJ of its deformable part, sampled on a grid."""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import SimpleITK as sitk
import torch

from .spatial import folding_percent, sd_log_jacobian


def transform_folding(transform: sitk.Transform, reference: sitk.Image, spacing: float = 2.0,
                      mask: Optional[np.ndarray] = None) -> Dict[str, float]:
    """% of voxels with det J <= 0 and SDlogJ of ``transform`` on an LPS grid of ``spacing`` mm over ``reference``.

    The Jacobian of an affine stage is constant, so folding comes from the deformable part; the
    whole composite is evaluated, through SimpleITK's TransformToDisplacementField.
    """
    from .grid import physical_bounding_box
    lo, hi = physical_bounding_box(reference)
    size = [int(np.ceil((h - l) / spacing)) + 1 for l, h in zip(lo, hi)]
    f = sitk.TransformToDisplacementFieldFilter()
    f.SetOutputOrigin(tuple(float(v) for v in lo))
    f.SetOutputSpacing((spacing,) * 3)
    f.SetSize(size)
    f.SetOutputPixelType(sitk.sitkVectorFloat64)
    field = sitk.GetArrayFromImage(f.Execute(transform))  # (z, y, x, 3) LPS mm
    flow = torch.from_numpy(np.stack([field[..., 2], field[..., 1], field[..., 0]])[None] / spacing)
    m = None if mask is None else torch.from_numpy(mask)[None, None]
    return {"folding_percent": folding_percent(flow, m), "sdlogj": sd_log_jacobian(flow, m)}
