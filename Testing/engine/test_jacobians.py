"""Every Jacobian determinant the engine reports, against analytic answers on anisotropic grids.

* :meth:`RegistrationResult.jacobian_determinant` (the engine field on its grid, used by the Slicer
  module's det J map);
* :func:`DeepRegLib.qa.transform_folding` / :func:`~DeepRegLib.qa.sampled_jacobian` (the transform
  as written, sampled at 1 mm on an identity-direction grid, as an outside evaluator does), with an
  analytic field whose folded volume is known, on an image with a permuted direction.
(:func:`DeepRegLib.spatial.jacobian_determinant` itself is tested in ``test_spatial.py``.)
"""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from DeepRegLib.grid import Grid
from DeepRegLib.inference import RegistrationResult
from DeepRegLib.qa import evaluation_grid, sampled_jacobian, transform_folding

# rows x, y, z; columns d/dx, d/dy, d/dz (mm per mm): det(I + G) = (1.5 * 1.0 - 0.3 * 0.2) * 0.8 = 1.152
G = np.array([[0.5, 0.3, 0.0], [0.2, 0.0, 0.0], [0.0, 0.0, -0.2]])


def reference(size=(20, 16, 12), spacing=(2.0, 1.5, 2.5)) -> sitk.Image:
    img = sitk.Image(size, sitk.sitkFloat32)
    img.SetSpacing(spacing)
    img.SetOrigin((30.0, -20.0, 10.0))
    img.SetDirection((0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0, 1.0, 0.0))  # permuted and flipped
    return img


@pytest.mark.parametrize("matrix,det", [(np.diag([0.5, 0.0, 0.0]), 1.5), (G, 1.152)])
def test_result_jacobian_on_anisotropic_grid(matrix, det):
    grid = Grid(origin=(-10.0, 5.0, 2.0), spacing=(1.5, 2.5, 0.8), size=(14, 10, 18))
    pts = grid.physical_points()
    disp = pts @ matrix.T  # u(p) = G p, mm
    res = RegistrationResult(reference(), sitk.AffineTransform(3), disp, grid, "test", "cpu")
    d = res.jacobian_determinant()
    assert d.shape == tuple(n - 2 for n in grid.shape)
    assert np.allclose(d, det, atol=1e-9)


def test_sampled_jacobian_of_linear_field():
    ref = reference()
    g = evaluation_grid(ref, 1.0)
    field = sitk.Image([int(s) for s in g.size], sitk.sitkVectorFloat64)
    field.SetOrigin(g.origin)
    field.SetSpacing(g.spacing)
    arr = g.physical_points() @ G.T
    img = sitk.GetImageFromArray(arr, isVector=True)
    img.CopyInformation(field)
    t = sitk.DisplacementFieldTransform(img)
    det = sampled_jacobian(t, g)
    assert np.allclose(det, 1.152, atol=1e-5)


def test_folded_volume_known_answer_on_permuted_direction():
    """u_x = (2 / w) sin(w x): det J = 1 + 2 cos(w x) (times 1.1 from u_z = 0.1 z) is <= 0 on a third
    of every period, so a third of the grid folds; sampling along the permuted index axes would not see it."""
    ref = reference(size=(40, 36, 30), spacing=(2.0, 1.5, 2.5))
    g = evaluation_grid(ref, 1.0)
    fine = Grid(origin=g.origin, spacing=(0.5, 0.5, 0.5), size=tuple(2 * n - 1 for n in g.size))
    p = fine.physical_points()
    w = 2 * np.pi / 20.0  # 20 mm period
    u = np.stack([2.0 / w * np.sin(w * p[..., 0]), 0.2 * p[..., 2], 0.1 * p[..., 2]], axis=-1)
    img = fine.image_from_array(u, is_vector=True)
    t = sitk.DisplacementFieldTransform(img)
    # the analytic answer at the 1 mm nodes, with the central difference's sinc factor (h = 1 mm)
    x = g.physical_points()[1:-1, 1:-1, 1:-1, 0]
    det = (1.0 + 2.0 * np.cos(w * x) * np.sin(w) / w) * 1.1
    want = 100.0 * np.mean(det <= 0)
    assert 30.0 < want < 36.0
    got = transform_folding(t, ref, 1.0)
    assert got["folding_percent"] == pytest.approx(want, abs=0.5)
    # inside a mask: the half of the image with the larger first index (a slab in -y, given the direction)
    mask = sitk.Image(ref.GetSize(), sitk.sitkUInt8)
    mask.CopyInformation(ref)
    marr = np.zeros(ref.GetSize()[::-1], np.uint8)
    marr[:, :, 20:] = 1
    m = sitk.GetImageFromArray(marr)
    m.CopyInformation(ref)
    half = transform_folding(t, ref, 1.0, mask=m)
    assert half["folding_percent"] == pytest.approx(want, abs=1.5)  # the fold pattern depends on x only
    # and no folding at all for the same field without the sine's folding amplitude
    u2 = u.copy()
    u2[..., 0] *= 0.25
    t2 = sitk.DisplacementFieldTransform(fine.image_from_array(u2, is_vector=True))
    assert transform_folding(t2, ref, 1.0)["folding_percent"] == 0.0
