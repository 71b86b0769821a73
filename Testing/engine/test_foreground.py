"""The network grid is centred on the fixed foreground: known answer with a permuted direction."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from DeepRegLib.preprocess import foreground_centre, network_grid


def test_foreground_centre_permuted_direction_off_centre_blob():
    size = (50, 40, 30)  # (i, j, k)
    img = sitk.Image(size, sitk.sitkFloat32)
    img.SetSpacing((1.5, 2.5, 3.5))
    img.SetDirection((0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0, -1.0, 0.0))  # i -> -P... a permuted, flipped frame
    img.SetOrigin((12.0, -30.0, 40.0))
    arr = np.zeros(size[::-1], np.float32)
    i0, i1, j0, j1, k0, k1 = 5, 14, 22, 37, 2, 11  # off-centre box, different extent per axis
    arr[k0:k1 + 1, j0:j1 + 1, i0:i1 + 1] = 100.0
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    want = np.asarray(out.TransformContinuousIndexToPhysicalPoint(((i0 + i1) / 2, (j0 + j1) / 2, (k0 + k1) / 2)))
    got = foreground_centre(out)
    assert np.abs(got - want).max() < 1e-6, (got, want)
    g = network_grid(out, 2.0, (20, 24, 16))
    centre = np.asarray(g.origin) + (np.asarray(g.size) - 1) * np.asarray(g.spacing) / 2
    # centred on the foreground, snapped to the 2 mm physical lattice (the same grid on any voxel grid)
    assert np.abs(centre - np.round(want / 2.0) * 2.0).max() < 1e-6 and np.abs(centre - want).max() <= 1.0
