"""One file, one mapping, on a real pair (the bundled sample brains 18 -> 17).

What ``deepreg register`` writes must map the fixed brain's voxels to the same moving points
through ``SimpleITK.ReadTransform`` and through Slicer's real ``vtkMRMLTransformStorageNode``
(slicer-core), p99 <= 0.05 mm, for the default model and with refinement; the node that
``DeepRegLib.slicer_adapter.mrml`` builds directly must agree too, before and after a scene save and reload.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="the Slicer side needs the slicer-core wheel (pip install slicer-core)")

from DeepRegLib.slicer_adapter import mrml  # noqa: E402
from DeepRegLib import transforms as tr  # noqa: E402
from DeepRegLib.inference import RefineConfig, register  # noqa: E402

P99_MM = 0.05


def brain_points(fixed: sitk.Image, step: int = 23) -> np.ndarray:
    arr = sitk.GetArrayViewFromImage(fixed)
    kk, jj, ii = np.nonzero(arr > 0)
    idx = np.stack([ii[::step], jj[::step], kk[::step], np.ones(len(ii[::step]))], 1)
    return (idx @ tr.index_to_physical(fixed).T)[:, :3]


def slicer_read(scene, path: str):
    node = scene.AddNewNodeByClass("vtkMRMLTransformNode")
    sn = scene.AddNewNodeByClass("vtkMRMLTransformStorageNode")
    sn.SetFileName(path)
    node.SetAndObserveStorageNodeID(sn.GetID())
    assert sn.ReadData(node), f"Slicer cannot read {path}"
    return node


def itk_map(path: str, pts: np.ndarray) -> np.ndarray:
    t = sitk.ReadTransform(path)
    return np.array([t.TransformPoint(tuple(p)) for p in pts])


def p99(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.percentile(np.linalg.norm(a - b, axis=1), 99))


def test_cli_file_same_in_itk_and_slicer(sample_pair, tmp_path):
    p = sample_pair
    out = tmp_path / "T.h5"
    proc = subprocess.run([sys.executable, "-m", "DeepRegLib.cli", "register", "--fixed", str(p["fixed"]["image"]),
                           "--moving", str(p["moving"]["image"]), "--output-transform", str(out), "--device", "cpu"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert os.path.getsize(out) <= 30e6
    fixed = sitk.ReadImage(str(p["fixed"]["image"]), sitk.sitkFloat32)
    pts = brain_points(fixed)
    scene = slicer.vtkMRMLScene()
    a, b = itk_map(str(out), pts), mrml.transform_node_map_points(slicer_read(scene, str(out)), pts)
    assert np.linalg.norm(a - pts, axis=1).mean() > 5.0  # a real registration, not the identity
    assert p99(a, b) <= P99_MM


@pytest.mark.parametrize("refine", [False, True], ids=["network", "refine"])
def test_engine_file_node_and_reload_agree(sample_pair, tmp_path, refine):
    p = sample_pair
    fixed = sitk.ReadImage(str(p["fixed"]["image"]), sitk.sitkFloat32)
    res = register(fixed, str(p["moving"]["image"]), device="cpu",
                   refine=RefineConfig(max_steps=4, patience=10) if refine else False)
    assert res.refined == refine
    pts = brain_points(fixed)
    engine = res.map_points(pts)
    path = str(tmp_path / "T.h5")
    res.write_transform(path)
    scene = slicer.vtkMRMLScene()
    assert p99(itk_map(path, pts), engine) <= P99_MM
    assert p99(mrml.transform_node_map_points(slicer_read(scene, path), pts), engine) <= P99_MM
    # the node built directly, then saved with the scene and reloaded
    node = mrml.result_to_grid_transform_node(res, scene, "moving_to_fixed")
    assert p99(mrml.transform_node_map_points(node, pts), engine) <= P99_MM
    node.AddDefaultStorageNode()
    node.GetStorageNode().SetFileName(str(tmp_path / "moving_to_fixed.h5"))
    assert node.GetStorageNode().WriteData(node)
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()
    scene2 = slicer.vtkMRMLScene()
    scene2.SetURL(str(tmp_path / "scene.mrml"))
    assert scene2.Connect()
    back = [n for n in (scene2.GetNthNodeByClass(i, "vtkMRMLTransformNode")
                        for i in range(scene2.GetNumberOfNodesByClass("vtkMRMLTransformNode")))
            if n.GetName() == "moving_to_fixed"]
    assert len(back) == 1
    assert p99(mrml.transform_node_map_points(back[0], pts), engine) <= P99_MM


def test_bspline_transform_layout_is_itks():
    """The B-spline built from coefficient images has ITK's documented parameter layout: fixed
    parameters = coefficient-grid size, origin (one node before the samples), spacing, identity
    direction; parameters = the x, then y, then z coefficient arrays, x fastest."""
    from DeepRegLib.grid import Grid
    grid = Grid(origin=(-10.0, 4.0, 30.0), spacing=(2.0, 1.5, 3.0), size=(5, 6, 7))
    coef = np.random.default_rng(3).normal(size=(9, 8, 7, 3))  # (z, y, x, LPS) on the coefficient grid
    bs = tr.bspline_transform(np.zeros((7, 6, 5, 3)), grid, coefficients=coef)
    assert bs.GetFixedParameters() == (7, 8, 9, -12.0, 2.5, 27.0, 2.0, 1.5, 3.0, 1, 0, 0, 0, 1, 0, 0, 0, 1)
    expected = np.concatenate([coef[..., c].ravel() for c in range(3)])
    assert np.array_equal(np.asarray(bs.GetParameters()), expected)
    # and it interpolates: at a sample point the displacement is the B-spline sum of its 27 neighbours
    p = (grid.origin[0] + 2 * 2.0, grid.origin[1] + 3 * 1.5, grid.origin[2] + 1 * 3.0)
    w = np.array([1 / 6, 4 / 6, 1 / 6])
    k, j, i = 1 + 1, 3 + 1, 2 + 1  # sample index + 1 on the coefficient grid
    block = coef[k - 1:k + 2, j - 1:j + 2, i - 1:i + 2]
    u = np.einsum("a,b,c,abcd->d", w, w, w, block)
    assert np.allclose(np.subtract(bs.TransformPoint(p), p), u, atol=1e-9)
