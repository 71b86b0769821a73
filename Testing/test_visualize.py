"""PNG overlays (DeepRegLib/visualize.py): pictures drawn in physical proportions."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from DeepRegLib.visualize import MIN_PIXELS, display_spacing, overlay_panel


def _sphere(size, spacing, radius_mm: float) -> sitk.Image:
    """A ball of ``radius_mm`` at the centre of a box of ``size`` (x, y, z) voxels and ``spacing`` mm."""
    img = sitk.Image(size, sitk.sitkFloat32)
    img.SetSpacing(spacing)
    zz, yy, xx = np.indices(size[::-1]).astype(float)
    pts = [(a + 0.5) * s - n * s / 2 for a, s, n in zip((xx, yy, zz), spacing, size)]
    arr = (sum(p * p for p in pts) <= radius_mm ** 2).astype(np.float32)
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    return out


def test_small_anisotropic_image_is_drawn_large_and_in_proportion():
    """40 x 40 x 10 voxels of 1 x 1 x 4 mm (a 40 mm cube) holding a 15 mm ball: drawn with square pixels,
    at least MIN_PIXELS across, and the ball is as tall as it is wide in the coronal view (it would be 4x
    too flat drawn voxel for voxel)."""
    img = _sphere((40, 40, 10), (1.0, 1.0, 4.0), 15.0)
    assert abs(display_spacing(img) - 40.0 / MIN_PIXELS) < 1e-9
    zero = sitk.Image(img)
    zero *= 0
    panel = overlay_panel(img, [("zero", zero)], "difference")
    n = MIN_PIXELS
    assert panel.shape == (n + 4, 3 * (n + 4), 3)
    coronal = panel[:n, n + 4:2 * n + 4, 0] > 127  # |ball - 0| in the red channel
    rows, cols = np.nonzero(coronal)
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    # the ball's height is quantised by the 4 mm slices (and smeared by the linear resampling): within a slice
    assert abs(width - 30 / (40 / n)) <= 0.06 * width and abs(height - width) <= 4.0 / (40 / n), (height, width)


def test_fine_isotropic_image_is_drawn_voxel_for_voxel():
    img = _sphere((200, 210, 190), (1.0, 1.0, 1.0), 60.0)
    assert display_spacing(img) == 1.0
    panel = overlay_panel(img, [("same", img)], "checkerboard")
    assert panel.shape == (210 + 4, 210 + 4 + 190 + 4 + 210 + 4, 3)  # axial 210x200, coronal 190x200, sagittal 190x210
