"""Engine results -> Slicer transform nodes (grid / B-spline + linear, or linear) and the Jacobian volume.

Result transform nodes map fixed world RAS points to moving *local* RAS points (their *transform
from parent*, the resampling direction, like ITK): a ``vtkMRMLTransformNode`` holding the engine's
mapping ``T(p) = A(p + u(p))`` as the VTK objects Slicer builds when it reads the engine's ``.h5``
(:func:`grid_transform_from_result`), or a ``vtkMRMLLinearTransformNode`` (affine only).
"""
from __future__ import annotations

import datetime
import json
from typing import Optional

import numpy as np
import SimpleITK as sitk

import slicer  # noqa: F401  (Slicer's own module inside Slicer, slicer-core headless)
import vtk

from .geometry import FLIP, FLIP3, GRID_MARGIN_VOXELS, affine_ras_matrix
from .nodes import (ATTR_PREFIX, ATTR_RESULT, is_deepreg_result, image_to_volume_node, numpy_to_vtk_matrix,
                    vtk_to_numpy_matrix)

#: The class of a new deformable result node.  Slicer reads a B-spline + linear ``.h5`` back (File > Add Data,
#: ``vtkSlicerTransformLogic::AddTransform``) as a plain ``vtkMRMLTransformNode`` (no specialised class for a
#: composite); storing it in that class from the start, it reloads as itself and the panel's output selector
#: (``vtkMRMLTransformNode``) offers it again.
DEFORMABLE_NODE_CLASS = "vtkMRMLTransformNode"


# ----------------------------------------------------------------------------- transforms
def grid_transform_from_result(result, margin: int = GRID_MARGIN_VOXELS, **_unused):
    """The VTK transform (fixed RAS -> moving RAS) holding the whole mapping ``T(p) = A(p + u(p))``.

    The same objects Slicer's ``vtkMRMLTransformStorageNode`` builds when it reads the engine's
    ``.h5`` (an ITK composite ``[A, BSplineTransform]``): a ``vtkGeneralTransform`` applying a
    ``vtkOrientedBSplineTransform`` (the engine's cubic B-spline ``u``, zero outside its grid) and then
    the linear ``A``, both converted to RAS.  So the node, the file, a scene reload and ITK all
    evaluate one formula.  ``margin`` and other keyword arguments are unused (kept for callers of the
    earlier grid version).
    """
    from vtk.util.numpy_support import numpy_to_vtk
    from ..transforms import affine_matrix, coefficient_grid
    del margin
    lin = vtk.vtkTransform()
    lin.SetMatrix(numpy_to_vtk_matrix(FLIP @ affine_matrix(result.affine) @ FLIP))
    t = vtk.vtkGeneralTransform()
    t.PostMultiply()
    if result.displacement is not None:
        cg = coefficient_grid(result.grid)
        coef = np.ascontiguousarray(result.coefficients() * FLIP3)  # LPS -> RAS components
        data = vtk.vtkImageData()
        data.SetDimensions(*cg.size)
        data.SetSpacing(*cg.spacing)
        data.SetOrigin(*(np.asarray(cg.origin) * FLIP3))  # LPS origin -> RAS; index axes stay L, P, S
        vectors = numpy_to_vtk(coef.reshape(-1, 3), deep=True)
        vectors.SetName("coefficients")
        data.GetPointData().SetScalars(vectors)
        bs = slicer.vtkOrientedBSplineTransform()
        bs.SetBorderModeToZero()
        bs.SetCoefficientData(data)
        bs.SetGridDirectionMatrix(numpy_to_vtk_matrix(FLIP))
        t.Concatenate(bs)
    t.Concatenate(lin)
    return t


def record_result(node, result, fixed_node=None, moving_node=None, extra: Optional[dict] = None) -> None:
    node.SetAttribute(ATTR_RESULT, "1")
    node.SetAttribute(ATTR_PREFIX + "Model", str(result.model))
    node.SetAttribute(ATTR_PREFIX + "Device", str(result.device))
    node.SetAttribute(ATTR_PREFIX + "Time", datetime.datetime.now().isoformat(timespec="seconds"))
    node.SetAttribute(ATTR_PREFIX + "Timings", json.dumps({k: round(v, 4) for k, v in result.timings.items()}))
    for k, v in (extra or {}).items():
        node.SetAttribute(ATTR_PREFIX + k, str(v))
    if fixed_node is not None:
        node.SetNodeReferenceID(node.GetFixedNodeReferenceRole(), fixed_node.GetID())
        node.SetAttribute(ATTR_PREFIX + "Fixed", fixed_node.GetName())
    if moving_node is not None:
        node.SetNodeReferenceID(node.GetMovingNodeReferenceRole(), moving_node.GetID())
        node.SetAttribute(ATTR_PREFIX + "Moving", moving_node.GetName())


def result_to_grid_transform_node(result, scene, name: str = "DeepRegTransform", node=None,
                                  fixed_node=None, moving_node=None, transform=None):
    """A ``vtkMRMLGridTransformNode`` (new, or ``node`` overwritten) holding ``result``; fixed -> moving."""
    t = transform if transform is not None else grid_transform_from_result(result)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", name)
    was = node.StartModify()
    node.SetAndObserveTransformFromParent(t)
    record_result(node, result, fixed_node, moving_node)
    node.EndModify(was)
    return node


def result_to_linear_transform_node(result, scene, name: str = "DeepRegAffine", node=None,
                                    fixed_node=None, moving_node=None):
    """A ``vtkMRMLLinearTransformNode`` holding the affine part of ``result`` (fixed -> moving, from parent)."""
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    was = node.StartModify()
    node.SetMatrixTransformFromParent(numpy_to_vtk_matrix(affine_ras_matrix(result)))
    record_result(node, result, fixed_node, moving_node)
    node.EndModify(was)
    return node


def transform_node_map_points(node, points_lps: np.ndarray) -> np.ndarray:
    """Evaluate a transform node's *from-parent* transform (fixed -> moving) at LPS points."""
    t = node.GetTransformFromParent()
    pts = np.asarray(points_lps, dtype=float).reshape(-1, 3) * FLIP3
    out = np.array([t.TransformPoint(tuple(p)) for p in pts]) * FLIP3
    return out.reshape(np.shape(points_lps))


def transform_node_has_content(node) -> bool:
    """Whether overwriting ``node`` would lose something: a DeepReg result, a grid with data, a non-identity matrix.

    (A new ``vtkMRMLGridTransformNode`` already holds an empty grid transform, so "has a transform"
    is no test.)
    """
    if node is None:
        return False
    if is_deepreg_result(node):
        return True
    t = node.GetTransformFromParent()
    if t is None:
        return False
    if t.IsA("vtkGridTransform") or t.IsA("vtkOrientedGridTransform"):
        from vtk.util.numpy_support import vtk_to_numpy
        g = t.GetDisplacementGrid()  # a new node holds a 1-voxel grid with a zero vector
        if g is None or g.GetNumberOfPoints() == 0 or g.GetPointData().GetScalars() is None:
            return False
        return bool(np.any(vtk_to_numpy(g.GetPointData().GetScalars()) != 0))
    if node.IsLinear():
        m = vtk.vtkMatrix4x4()
        node.GetMatrixTransformFromParent(m)
        return not np.allclose(vtk_to_numpy_matrix(m), np.eye(4))
    if t.IsA("vtkGeneralTransform"):  # a DeepReg-style [B-spline, linear] chain, e.g. loaded from a file
        return t.GetNumberOfConcatenatedTransforms() > 0
    return True


def jacobian_volume_node(result, scene, name: str = "DeepRegJacobian", node=None, det: Optional[np.ndarray] = None):
    """det J of ``p -> p + u(p)`` on the engine grid interior as a scalar volume node (RAS)."""
    return image_to_volume_node(jacobian_image(result, det), scene, name, node)


def jacobian_image(result, det: Optional[np.ndarray] = None) -> sitk.Image:
    det = np.asarray(result.jacobian_determinant() if det is None else det, dtype=np.float32)
    g = result.grid
    img = sitk.GetImageFromArray(det)
    img.SetSpacing(tuple(float(s) for s in g.spacing))
    img.SetOrigin(tuple(float(o + s) for o, s in zip(g.origin, g.spacing)))  # one voxel in
    return img


