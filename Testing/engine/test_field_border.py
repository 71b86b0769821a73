"""The written field at the network grid's border: tapered inside the grid (brain models), or every
sample kept and the field continued beyond the grid (tasks whose grid is the whole image: CT crops,
prostate ultrasound; ``field.margin_voxels`` in the card).

Known answers on an anisotropic grid that *is* the fixed image, with a field that is large at the
image's border: the engine's map, the ITK transform written to ``.h5`` (read back by SimpleITK) and,
with slicer-core, the Slicer grid transform node must all give ``p + u(p)`` at every voxel.
"""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from DeepRegLib import transforms as tr
from DeepRegLib.grid import Grid
from DeepRegLib.inference import RegistrationResult

GRID = Grid(origin=(-12.0, 20.0, -30.0), spacing=(1.5, 2.0, 3.0), size=(14, 12, 10))


def u(points: np.ndarray) -> np.ndarray:
    """A smooth LPS mm field, 1.5-3 mm everywhere, including the grid's border."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    return np.stack([2.0 + 0.03 * y, -1.5 + 0.02 * z, 1.0 + 0.04 * x * np.cos(y / 10.0)], axis=-1)


def fixed_image() -> sitk.Image:
    img = GRID.reference()
    arr = np.random.default_rng(0).random(GRID.shape).astype(np.float32)
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    return out


def result(margin: int) -> RegistrationResult:
    disp, grid = tr.border_field(u(GRID.physical_points()), GRID, margin)
    return RegistrationResult(fixed_image(), sitk.AffineTransform(3), disp, grid, "test", "cpu")


def test_continued_field_keeps_every_sample_and_vanishes_outside(tmp_path):
    pts = GRID.physical_points().reshape(-1, 3)
    want = pts + u(pts)
    res = result(4)
    assert res.grid.size == (22, 20, 18) and np.allclose(res.grid.origin, (-18.0, 12.0, -42.0))
    assert np.abs(res.map_points(pts) - want).max() < 1e-9  # every sample, the border's too
    res.write_transform(str(tmp_path / "T.h5"))
    itk = sitk.ReadTransform(str(tmp_path / "T.h5"))
    got = np.array([itk.TransformPoint(tuple(p)) for p in pts])
    assert np.abs(got - want).max() < 1e-6
    # beyond the continued grid: the affine (here the identity), in the engine and in ITK
    far = np.array([np.asarray(res.grid.origin) - 1.0, np.asarray(GRID.origin) + [60.0, 60.0, 60.0]])
    assert np.abs(res.map_points(far) - far).max() == 0.0
    assert np.abs(np.array([itk.TransformPoint(tuple(p)) for p in far]) - far).max() < 1e-12
    # between the grid and the margin's end the field falls off smoothly: 3 mm over 4 voxels, no folding
    assert res.jacobian_determinant().min() > 0.1


def test_tapered_field_loses_the_border():
    """The brain models' rule on the same field: zero on the grid's outer layer, so a whole-image grid
    (CT) loses its border; inside 3 voxels it is exact."""
    pts = GRID.physical_points()
    res = result(0)
    assert res.grid == GRID
    err = np.linalg.norm(res.map_points(pts) - (pts + u(pts)), axis=-1)
    assert err[0].max() > 1.5 and err[3:-3, 3:-3, 3:-3].max() < 1e-9
    with pytest.raises(ValueError, match="margin must be >= 2"):
        tr.extend_field(u(pts), GRID, 1)


def test_warped_image_three_ways(tmp_path):
    """The fixed image's every voxel: the engine's warp, SimpleITK's Resample of the .h5, and g(p + u(p))."""
    def g(p):
        return np.sin(p[..., 0] / 7.0) + np.cos(p[..., 1] / 9.0) + 0.05 * p[..., 2]

    big = Grid(origin=(-30.0, 0.0, -60.0), spacing=(1.0, 1.0, 1.0), size=(60, 60, 70))
    moving = big.image_from_array(g(big.physical_points()).astype(np.float32))
    res = result(4)
    fixed = res.fixed
    res.write_transform(str(tmp_path / "T.h5"))
    itk = sitk.GetArrayFromImage(sitk.Resample(moving, fixed, sitk.ReadTransform(str(tmp_path / "T.h5")),
                                               sitk.sitkLinear, 0.0))
    eng = sitk.GetArrayFromImage(res.warp_image(moving))
    pts = GRID.physical_points()
    want = g(pts + u(pts))
    assert np.abs(itk - want).max() < 0.02 and np.abs(eng - itk).max() < 1e-3


def test_slicer_grid_node_maps_the_border_alike(tmp_path):
    slicer = pytest.importorskip("slicer", reason="headless MRML tests need the slicer-core wheel")
    from DeepRegLib.slicer_adapter import mrml
    scene = slicer.vtkMRMLScene()
    res = result(4)
    node = mrml.result_to_grid_transform_node(res, scene, "T")
    pts = GRID.physical_points().reshape(-1, 3)
    assert np.abs(mrml.transform_node_map_points(node, pts) - (pts + u(pts))).max() < 1e-6
    # Slicer's own .h5 writer and reader: the same mapping
    sn = scene.AddNewNodeByClass("vtkMRMLTransformStorageNode")
    sn.SetFileName(str(tmp_path / "S.h5"))
    assert sn.WriteData(node)
    back = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "back")
    sn2 = scene.AddNewNodeByClass("vtkMRMLTransformStorageNode")
    sn2.SetFileName(str(tmp_path / "S.h5"))
    assert sn2.ReadData(back)
    assert np.abs(mrml.transform_node_map_points(back, pts) - (pts + u(pts))).max() < 1e-6
