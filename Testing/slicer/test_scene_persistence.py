"""Scene persistence with real MRML (slicer-core): the DeepReg transform node and the module's parameter
node, saved with the scene (``.mrml`` + storage nodes, and ``.mrb``), reload with the same mapping and
references.

The parameter node is stored the way Slicer's ``parameterNodeWrapper`` stores it: a
``vtkMRMLScriptedModuleNode`` with attribute ``ModuleName=DeepReg``, plain values as parameters and
nodes as node references named after the fields of ``DeepRegParameterNode``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="headless MRML tests need the slicer-core wheel (pip install slicer-core)")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_conventions import CASES, build, physical_points  # noqa: E402
from test_mrml_adapter import node_from_image  # noqa: E402

from DeepRegLib.slicer_adapter import mrml  # noqa: E402

# The node holds the engine's cubic B-spline (+ affine), which the .h5 stores as an ITK composite that
# Slicer reads back as the same B-spline: the reloaded mapping is the same formula (rounding only).
RELOAD_TOL_MM = 1e-6


def _save_scene(tmp_path, name="oblique"):
    fixed, moving, result, *_ = build(CASES[name])
    scene = slicer.vtkMRMLScene()
    f = node_from_image(scene, fixed, "fixed")
    m = node_from_image(scene, moving, "moving")
    node = mrml.result_to_grid_transform_node(result, scene, "moving_to_fixed", fixed_node=f, moving_node=m)
    m.SetAndObserveTransformNodeID(node.GetID())  # as the panel does
    param = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "DeepReg")
    param.SetAttribute("ModuleName", "DeepReg")
    param.SetNodeReferenceID("fixedVolume", f.GetID())
    param.SetNodeReferenceID("movingVolume", m.GetID())
    param.SetNodeReferenceID("resultTransform", node.GetID())
    param.SetParameter("model", "ldr_brain_v1")
    param.SetParameter("device", "CPU")
    param.SetParameter("opacity", "0.35")
    for n, fname in ((f, "fixed.nrrd"), (m, "moving.nrrd"), (node, "moving_to_fixed.h5")):
        n.AddDefaultStorageNode()
        n.GetStorageNode().SetFileName(str(tmp_path / fname))
        assert n.GetStorageNode().WriteData(n)
    pts = physical_points(fixed)[::3, ::3, ::3].reshape(-1, 3)
    return scene, node, pts, mrml.transform_node_map_points(node, pts), result


def _check_reloaded(scene2, node, pts, before, result):
    params = [n for n in _nodes(scene2, "vtkMRMLScriptedModuleNode") if n.GetAttribute("ModuleName") == "DeepReg"]
    assert len(params) == 1
    p = params[0]
    assert p.GetParameter("model") == "ldr_brain_v1" and p.GetParameter("device") == "CPU"
    assert float(p.GetParameter("opacity")) == 0.35
    t = p.GetNodeReference("resultTransform")
    assert t is not None and t.IsA("vtkMRMLGridTransformNode") and t.GetName() == "moving_to_fixed"
    f, m = p.GetNodeReference("fixedVolume"), p.GetNodeReference("movingVolume")
    assert f.GetName() == "fixed" and m.GetName() == "moving"
    assert m.GetParentTransformNode() is t
    assert t.GetNodeReference(t.GetFixedNodeReferenceRole()) is f
    assert t.GetNodeReference(t.GetMovingNodeReferenceRole()) is m
    assert t.GetAttribute("DeepReg.Model") == node.GetAttribute("DeepReg.Model")
    assert t.GetAttribute("DeepReg.Time") == node.GetAttribute("DeepReg.Time")
    after = mrml.transform_node_map_points(t, pts)
    assert np.abs(after - before).max() < RELOAD_TOL_MM
    assert np.abs(after - result.map_points(pts)).max() < RELOAD_TOL_MM
    # the moving volume resolves through the reloaded transform like before (world -> local)
    assert np.allclose(slicer.util.arrayFromVolume(m).shape[::-1], m.GetImageData().GetDimensions())


def _nodes(scene, cls):
    return [scene.GetNthNodeByClass(i, cls) for i in range(scene.GetNumberOfNodesByClass(cls))]


def test_mrml_scene_round_trip(tmp_path):
    scene, node, pts, before, result = _save_scene(tmp_path)
    url = str(tmp_path / "scene.mrml")
    scene.SetURL(url)
    assert scene.Commit()
    scene2 = slicer.vtkMRMLScene()
    scene2.SetURL(url)
    assert scene2.Connect()
    _check_reloaded(scene2, node, pts, before, result)


def test_mrb_round_trip(tmp_path):
    (tmp_path / "src").mkdir()
    scene, node, pts, before, result = _save_scene(tmp_path / "src", "anisotropic")
    mrb = str(tmp_path / "scene.mrb")
    scene.SetURL(str(tmp_path / "src" / "scene.mrml"))
    assert scene.WriteToMRB(mrb)
    scene2 = slicer.vtkMRMLScene()
    # headless: give the scene the cache/data-IO managers that the Slicer application provides
    cache = slicer.vtkCacheManager()
    (tmp_path / "cache").mkdir()
    cache.SetRemoteCacheDirectory(str(tmp_path / "cache"))
    dio = slicer.vtkDataIOManager()
    dio.SetCacheManager(cache)
    scene2.SetCacheManager(cache)
    scene2.SetDataIOManager(dio)
    assert scene2.ReadFromMRB(mrb)
    _check_reloaded(scene2, node, pts, before, result)


def test_deformable_result_class_survives_a_scene_round_trip(tmp_path):
    """The class a deformable result is written in (mrml.DEFORMABLE_NODE_CLASS) reloads as itself, same mapping."""
    fixed, moving, result, *_ = build(CASES["oblique"])
    scene = slicer.vtkMRMLScene()
    node = getattr(slicer, mrml.DEFORMABLE_NODE_CLASS)()
    node.SetName("result")
    node.SetAndObserveTransformFromParent(mrml.grid_transform_from_result(result))
    scene.AddNode(node)
    node.AddDefaultStorageNode()
    node.GetStorageNode().SetFileName(str(tmp_path / "result.h5"))
    assert node.GetStorageNode().WriteData(node)
    pts = physical_points(fixed)[::4, ::4, ::4].reshape(-1, 3)
    before = mrml.transform_node_map_points(node, pts)
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()
    scene2 = slicer.vtkMRMLScene()
    scene2.SetURL(str(tmp_path / "scene.mrml"))
    assert scene2.Connect()
    back = scene2.GetFirstNodeByName("result")
    assert back.GetClassName() == mrml.DEFORMABLE_NODE_CLASS
    assert np.abs(mrml.transform_node_map_points(back, pts) - before).max() < RELOAD_TOL_MM
