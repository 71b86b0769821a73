"""MRML adapter: Slicer volume nodes <-> engine images, engine results -> grid transform nodes.

This is the only engine module that imports Slicer (``slicer`` / MRML / vtk); it works
both inside 3D Slicer and headless with the ``slicer-core`` wheel.  Conventions:

* Slicer's world is RAS, the engine's is LPS: ``RAS = diag(-1, -1, 1) * LPS``.
  :func:`volume_node_to_image` converts a node's ``IJKToRAS`` matrix exactly (any
  direction, spacing, axis flips); the SimpleITK image has the node's voxel order.
* The result node is a ``vtkMRMLGridTransformNode`` whose *transform from parent* is a
  ``vtkOrientedGridTransform`` mapping fixed RAS points to moving RAS points (the
  resampling direction, like ITK).  The full mapping ``T(p) = A(p + u(p))`` -- affine
  included -- is sampled on the engine's own LPS lattice, extended to cover the whole
  fixed image plus a margin.  Because the lattice nodes coincide with the engine's
  displacement grid and the affine part is linear, trilinear interpolation of the
  sampled field reproduces ``T`` exactly (to rounding) everywhere inside that grid.
  Outside the grid VTK extrapolates the edge displacement (constant), so far outside
  the fixed image the mapping is only approximate.
* Parent transforms of the inputs: a *linear* parent transform is folded exactly into
  the image geometry (registration happens in world coordinates, nothing resampled).
  A *non-linear* parent is refused with a message asking to harden it -- except a
  previous DeepReg result above the moving volume, which is ignored (the volume's own
  data are registered, and its parent is replaced when ``set_moving_parent``).
  When ``set_moving_parent`` is asked for and the moving volume sits under another,
  non-DeepReg transform, the call is refused (setting the parent would drop it).
"""
from __future__ import annotations

import datetime
import json
import logging
import time
from typing import Callable, Dict, Optional

import numpy as np
import SimpleITK as sitk

import slicer  # noqa: F401  (Slicer's own module inside Slicer, slicer-core headless)
import vtk

from .errors import DeepRegError, InputError
from .grid import Grid, physical_bounding_box
from .imageio import validate_image

log = logging.getLogger("DeepRegLib")

#: RAS <-> LPS flip (its own inverse).
FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])
FLIP3 = np.array([-1.0, -1.0, 1.0])

ATTR_PREFIX = "DeepReg."
ATTR_RESULT = ATTR_PREFIX + "Result"
GRID_MARGIN_VOXELS = 2


class RegistrationCancelled(DeepRegError):
    """Raised from a progress callback to stop a registration; the scene is left unchanged."""


# ----------------------------------------------------------------------------- matrices
def vtk_to_numpy_matrix(m: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def numpy_to_vtk_matrix(a: np.ndarray) -> vtk.vtkMatrix4x4:
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(a[r, c]))
    return m


def ijk_to_ras(node) -> np.ndarray:
    """The node's own 4x4 ``IJKToRAS`` (ignores parent transforms)."""
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return vtk_to_numpy_matrix(m)


def is_deepreg_result(transform_node) -> bool:
    return transform_node is not None and transform_node.GetAttribute(ATTR_RESULT) == "1"


def world_ijk_to_ras(node, name: str = "volume", ignore_deepreg_parent: bool = False) -> np.ndarray:
    """``IJKToRAS`` in world coordinates: a linear parent transform is folded in exactly."""
    m = ijk_to_ras(node)
    parent = node.GetParentTransformNode()
    if parent is None or (ignore_deepreg_parent and is_deepreg_result(parent)):
        return m
    if not parent.IsTransformToWorldLinear():
        raise InputError(
            f"{name} volume '{node.GetName()}' is under the non-linear transform '{parent.GetName()}'. "
            "Harden it first (Data module: right-click > Harden transform) or remove it.")
    to_world = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(to_world)
    return vtk_to_numpy_matrix(to_world) @ m


# ----------------------------------------------------------------------------- volumes
def check_scalar_volume_node(node, name: str = "volume") -> None:
    """Raise :class:`InputError` unless ``node`` is a 3D single-component scalar volume node."""
    if node is None:
        raise InputError(f"no {name} volume selected")
    if not node.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"{name} '{node.GetName()}' is a {node.GetClassName()}, not a scalar volume")
    for cls, what in (("vtkMRMLLabelMapVolumeNode", "a label map"),
                      ("vtkMRMLVectorVolumeNode", "a vector volume"),
                      ("vtkMRMLTensorVolumeNode", "a tensor volume")):
        if node.IsA(cls):
            raise InputError(f"{name} '{node.GetName()}' is {what}; a scalar intensity volume is needed")
    img = node.GetImageData()
    if img is None or img.GetNumberOfPoints() == 0 or img.GetPointData().GetScalars() is None:
        raise InputError(f"{name} '{node.GetName()}' has no image data (empty volume)")
    if img.GetNumberOfScalarComponents() != 1:
        raise InputError(f"{name} '{node.GetName()}' has {img.GetNumberOfScalarComponents()} components "
                         "per voxel; a scalar volume is needed")
    dims = img.GetDimensions()
    if min(dims) < 2:
        raise InputError(f"{name} '{node.GetName()}' is not a 3D volume: its size is {dims} (a 2D slice?)")


def node_array(node) -> np.ndarray:
    """A copy of the node's voxels, numpy ``(k, j, i)``."""
    from vtk.util.numpy_support import vtk_to_numpy
    img = node.GetImageData()
    dims = img.GetDimensions()
    arr = vtk_to_numpy(img.GetPointData().GetScalars())
    return np.array(arr, copy=True).reshape(dims[2], dims[1], dims[0])


def geometry_from_ijk_to_ras(m_ras: np.ndarray):
    """(origin, spacing, direction) of the LPS image whose index -> RAS matrix is ``m_ras``."""
    m = FLIP @ m_ras
    cols = m[:3, :3]
    spacing = np.linalg.norm(cols, axis=0)
    if np.any(spacing <= 0):
        raise InputError("volume has a zero voxel spacing")
    direction = cols / spacing[None, :]
    return m[:3, 3], spacing, direction


def volume_node_to_image(node, name: str = "volume", ignore_deepreg_parent: bool = False,
                         validate: bool = True) -> sitk.Image:
    """A float32 SimpleITK image (LPS) with the node's voxels and exact world geometry."""
    check_scalar_volume_node(node, name)
    origin, spacing, direction = geometry_from_ijk_to_ras(
        world_ijk_to_ras(node, name, ignore_deepreg_parent))
    img = sitk.GetImageFromArray(node_array(node).astype(np.float32))
    img.SetOrigin(tuple(float(v) for v in origin))
    img.SetSpacing(tuple(float(v) for v in spacing))
    img.SetDirection(tuple(float(v) for v in direction.ravel()))
    if validate:
        validate_image(img, f"{name} '{node.GetName()}'")
    return img


def image_ijk_to_ras(image: sitk.Image) -> np.ndarray:
    """4x4 index -> RAS matrix of a SimpleITK image."""
    from .transforms import index_to_physical
    return FLIP @ index_to_physical(image)


def image_to_volume_node(image: sitk.Image, scene, name: str = "volume", node=None,
                         class_name: str = "vtkMRMLScalarVolumeNode"):
    """Put a scalar SimpleITK image into a (new or given) volume node, geometry converted to RAS."""
    from vtk.util.numpy_support import numpy_to_vtk
    arr = np.ascontiguousarray(sitk.GetArrayFromImage(image))
    if node is None:
        node = scene.AddNewNodeByClass(class_name, name)
    data = vtk.vtkImageData()
    data.SetDimensions(arr.shape[2], arr.shape[1], arr.shape[0])
    scalars = numpy_to_vtk(arr.ravel(), deep=True)
    data.GetPointData().SetScalars(scalars)
    node.SetIJKToRASMatrix(numpy_to_vtk_matrix(image_ijk_to_ras(image)))
    node.SetAndObserveImageData(data)
    return node


# ----------------------------------------------------------------------------- transforms
def result_grid(result, margin: int = GRID_MARGIN_VOXELS) -> Grid:
    """The engine's displacement lattice, extended/cropped to the fixed image's bounding box plus ``margin`` voxels."""
    g = result.grid
    lo, hi = physical_bounding_box(result.fixed)
    o, s = np.asarray(g.origin), np.asarray(g.spacing)
    i0 = np.floor((lo - o) / s).astype(int) - margin
    i1 = np.ceil((hi - o) / s).astype(int) + margin
    return Grid(origin=tuple(float(v) for v in o + i0 * s), spacing=tuple(float(v) for v in s),
                size=tuple(int(v) for v in i1 - i0 + 1))


def ras_displacement(result, grid: Grid) -> np.ndarray:
    """``T(p) - p`` in RAS mm at every point of ``grid`` (``(z, y, x, 3)``, float64).

    When ``grid`` lies on the engine's lattice (as :func:`result_grid` makes it), ``u`` at its nodes
    is the engine's field itself (zero outside), so no interpolation is needed; otherwise the
    engine's :meth:`map_points` is used.
    """
    from .transforms import affine_matrix
    pts = grid.physical_points()
    g = result.grid
    u = np.zeros(pts.shape)
    if result.displacement is not None:
        off = (np.asarray(grid.origin) - np.asarray(g.origin)) / np.asarray(g.spacing)
        if not (np.allclose(grid.spacing, g.spacing) and np.allclose(off, np.round(off), atol=1e-6)):
            return (result.map_points(pts) - pts) * FLIP3
        off = np.round(off).astype(int)[::-1]  # (z, y, x) offset of `grid` in the engine grid
        src = tuple(slice(max(o, 0), min(o + n, m)) for o, n, m in zip(off, grid.shape, g.shape))
        dst = tuple(slice(s.start - o, s.stop - o) for s, o in zip(src, off))
        if all(s.stop > s.start for s in src):
            u[dst] = result.displacement[src]
    m = affine_matrix(result.affine)
    moved = (pts + u) @ m[:3, :3].T + m[:3, 3]
    return (moved - pts) * FLIP3


def grid_transform_from_result(result, margin: int = GRID_MARGIN_VOXELS):
    """The VTK transform (fixed RAS -> moving RAS) holding the whole mapping ``T(p) = A(p + u(p))``.

    The same objects Slicer's ``vtkMRMLTransformStorageNode`` builds when it reads the engine's
    ``.h5`` (an ITK composite ``[A, BSplineTransform]``): a ``vtkGeneralTransform`` applying a
    ``vtkOrientedBSplineTransform`` (the engine's cubic B-spline ``u``, zero outside its grid) and then
    the linear ``A``, both converted to RAS.  So the node, the file, a scene reload and ITK all
    evaluate one formula.  ``margin`` is unused (kept for callers of the earlier grid version).
    """
    from vtk.util.numpy_support import numpy_to_vtk
    from .transforms import affine_matrix, coefficient_grid
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


def result_to_grid_transform_node(result, scene, name: str = "DeepRegTransform", node=None,
                                  fixed_node=None, moving_node=None):
    """A ``vtkMRMLGridTransformNode`` (new, or ``node`` overwritten) holding ``result``; fixed -> moving."""
    t = grid_transform_from_result(result)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", name)
    was = node.StartModify()
    node.SetAndObserveTransformFromParent(t)
    node.SetAttribute(ATTR_RESULT, "1")
    node.SetAttribute(ATTR_PREFIX + "Model", str(result.model))
    node.SetAttribute(ATTR_PREFIX + "Device", str(result.device))
    node.SetAttribute(ATTR_PREFIX + "Time", datetime.datetime.now().isoformat(timespec="seconds"))
    node.SetAttribute(ATTR_PREFIX + "Timings", json.dumps({k: round(v, 4) for k, v in result.timings.items()}))
    if fixed_node is not None:
        node.SetNodeReferenceID(node.GetFixedNodeReferenceRole(), fixed_node.GetID())
        node.SetAttribute(ATTR_PREFIX + "Fixed", fixed_node.GetName())
    if moving_node is not None:
        node.SetNodeReferenceID(node.GetMovingNodeReferenceRole(), moving_node.GetID())
        node.SetAttribute(ATTR_PREFIX + "Moving", moving_node.GetName())
    node.EndModify(was)
    return node


def transform_node_map_points(node, points_lps: np.ndarray) -> np.ndarray:
    """Evaluate a transform node's *from-parent* transform (fixed -> moving) at LPS points."""
    t = node.GetTransformFromParent()
    pts = np.asarray(points_lps, dtype=float).reshape(-1, 3) * FLIP3
    out = np.array([t.TransformPoint(tuple(p)) for p in pts]) * FLIP3
    return out.reshape(np.shape(points_lps))


def jacobian_volume_node(result, scene, name: str = "DeepRegJacobian", node=None):
    """det J of ``p -> p + u(p)`` on the engine grid interior as a scalar volume node (RAS)."""
    det = np.asarray(result.jacobian_determinant(), dtype=np.float32)
    g = result.grid
    img = sitk.GetImageFromArray(det)
    img.SetSpacing(tuple(float(s) for s in g.spacing))
    img.SetOrigin(tuple(float(o + s) for o, s in zip(g.origin, g.spacing)))  # one voxel in
    return image_to_volume_node(img, scene, name, node)


# ----------------------------------------------------------------------------- models
def list_model_cards() -> Dict[str, dict]:
    """``{name: card}`` of the bundled models (works before torch is installed)."""
    from .bundles import list_models
    return {n: b.card for n, b in list_models().items()}


def model_tooltip(card: dict) -> str:
    inp = card.get("input", {})
    lines = [card.get("description", card.get("name", "")),
             f"input: {inp.get('expects', '?')}; grid {inp.get('size', '?')} at {inp.get('spacing', '?')} mm"]
    if card.get("licence"):
        lines.append(f"training data licence: {card['licence']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- one call
Progress = Callable[[str, float], None]


def register_nodes(scene, fixed_node, moving_node, model: Optional[str] = None, device: str = "auto",
                   output_volume=None, progress: Optional[Progress] = None, set_moving_parent: bool = False,
                   output_transform=None, name: Optional[str] = None, jacobian: bool = False):
    """Register ``moving_node`` to ``fixed_node``; returns a new ``vtkMRMLGridTransformNode`` (fixed -> moving).

    ``output_transform``: an existing grid transform node to overwrite (explicit request), else a new
    node is added.  ``output_volume``: a scalar volume node that receives the moving volume resampled
    on the fixed grid (engine/ITK trilinear).  ``set_moving_parent``: put the moving volume under the
    result (the panel does this; the input voxels are never changed).  ``jacobian``: also add a
    ``det J`` volume node, referenced from the result as ``DeepReg.jacobian``.  ``progress(stage,
    fraction)`` may raise :class:`RegistrationCancelled`.  On any error the scene is left unchanged.
    """
    if fixed_node is None or moving_node is None:
        raise InputError("select both a fixed and a moving volume")
    if fixed_node is moving_node or fixed_node.GetID() == moving_node.GetID():
        raise InputError(f"fixed and moving are the same volume ('{fixed_node.GetName()}'); pick two different volumes")
    if output_volume is not None and output_volume in (fixed_node, moving_node):
        raise InputError("the output volume must not be one of the input volumes")
    moving_parent = moving_node.GetParentTransformNode()
    if set_moving_parent and moving_parent is not None and not is_deepreg_result(moving_parent) \
            and moving_parent is not output_transform:
        raise InputError(
            f"moving volume '{moving_node.GetName()}' is already under transform '{moving_parent.GetName()}'; "
            "harden or remove it before registering (setting the result as its parent would drop it)")
    fixed = volume_node_to_image(fixed_node, "fixed")
    moving = volume_node_to_image(moving_node, "moving", ignore_deepreg_parent=True)

    from .inference import register  # imports torch
    t0 = time.perf_counter()
    result = register(fixed, moving, model=model, device=device, progress=progress)
    if progress is not None:
        progress("building transform node", 1.0)

    created = []
    try:
        node = result_to_grid_transform_node(result, scene, name or f"{moving_node.GetName()}_to_{fixed_node.GetName()}",
                                             node=output_transform, fixed_node=fixed_node, moving_node=moving_node)
        if output_transform is None:
            created.append(node)
        if output_volume is not None:
            warped = result.warp_image(moving)
            image_to_volume_node(warped, scene, node=output_volume)
            output_volume.SetAttribute(ATTR_PREFIX + "Transform", node.GetID())
        if jacobian:
            jac = jacobian_volume_node(result, scene, f"{node.GetName()}_jacobian")
            created.append(jac)
            node.SetNodeReferenceID(ATTR_PREFIX + "jacobian", jac.GetID())
        if set_moving_parent:
            moving_node.SetAndObserveTransformNodeID(node.GetID())
    except Exception:
        for n in created:
            scene.RemoveNode(n)
        raise
    result.timings["mrml"] = time.perf_counter() - t0 - result.timings.get("total", 0.0)
    node.SetAttribute(ATTR_PREFIX + "Timings", json.dumps({k: round(v, 4) for k, v in result.timings.items()}))
    global last_result
    last_result = result
    return node


#: The engine result of the last :func:`register_nodes` call (for QA from the Python console).
last_result = None
