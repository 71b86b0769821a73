"""PNG overlays (DeepRegLib/visualize.py): pictures drawn in physical proportions."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from DeepRegLib.demos.visualize import MIN_PIXELS, display_spacing, overlay_panel


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
    panel = overlay_panel(img, [("zero", zero)], "difference", labels=False, crop=False)
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
    panel = overlay_panel(img, [("same", img)], "checkerboard", labels=False, crop=False)
    assert panel.shape == (210 + 4, 210 + 4 + 190 + 4 + 210 + 4, 3)  # axial 210x200, coronal 190x200, sagittal 190x210


def test_pictures_are_labelled_and_cropped():
    """Row titles, column titles (plane and slice position) and the difference colour bar are drawn; the views
    are cropped to the fixed foreground (here a 60 mm ball in a 200 mm box)."""
    from DeepRegLib.demos.visualize import BAR_WIDTH, LABEL_STRIP, _view_titles
    img = _sphere((200, 210, 190), (1.0, 1.0, 1.0), 60.0)
    plain = overlay_panel(img, [("same", img)], "difference", labels=False, crop=False)
    panel = overlay_panel(img, [("same", img), ("again", img)], "difference")
    assert panel.shape[0] < plain.shape[0] * 2 and panel.shape[1] < plain.shape[1]  # cropped around the ball
    header, first_title = panel[:LABEL_STRIP], panel[LABEL_STRIP:2 * LABEL_STRIP]
    assert (header == 255).sum() > 50 and (first_title == 255).sum() > 20  # white text drawn on the dark strips
    h = overlay_panel(img, [("same", img)], "difference", labels=False).shape[0] - 4  # one row's height
    bar = panel[2 * LABEL_STRIP:2 * LABEL_STRIP + h, -(BAR_WIDTH + 6 + 21) + 2]  # a column inside the colour bar
    assert (bar[0] == 255).all() and (bar[-1] == 0).all()  # white (1) at the top, black (0) at the bottom
    assert (np.diff(bar[:, 0].astype(int)) <= 0).all()  # red never rises going down
    titles = _view_titles((10, 20, 30), np.array([1.0, -2.0, 3.0]), 2.0)
    assert titles == ["axial S 13 mm", "coronal P 18 mm", "sagittal L 31 mm"]
