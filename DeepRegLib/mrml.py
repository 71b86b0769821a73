"""MRML adapter: Slicer nodes <-> engine images, engine results -> transform, volume and segmentation nodes.

This is the only engine module that imports Slicer (``slicer`` / MRML / vtk); it works both inside
3D Slicer and headless with the ``slicer-core`` wheel.  Conventions:

* Slicer's world is RAS, the engine's is LPS: ``RAS = diag(-1, -1, 1) * LPS``.
  :func:`volume_node_to_image` converts a node's ``IJKToRAS`` matrix exactly (any direction,
  spacing, axis flips); the SimpleITK image has the node's voxel order.
* A registration has three phases, so that the panel can run the middle one in a worker thread
  and touch MRML only on the main thread: :func:`gather_inputs` (nodes -> a
  :class:`~DeepRegLib.worker.RegistrationRequest` of SimpleITK copies), :func:`DeepRegLib.worker.compute`
  (no MRML), :func:`apply_outputs` (new nodes; chosen existing nodes are filled only once every
  output exists).  :func:`register_nodes` runs the three in the caller's thread.
* Result transform nodes map fixed world RAS points to moving *local* RAS points (their *transform
  from parent*, the resampling direction, like ITK): a ``vtkMRMLTransformNode`` holding the
  engine's mapping ``T(p) = A(p + u(p))`` as the VTK objects Slicer builds when it reads the
  engine's ``.h5`` (a ``vtkGeneralTransform``: the cubic B-spline ``u`` then the linear ``A``, see
  :func:`grid_transform_from_result`; deformable modes), or a ``vtkMRMLLinearTransformNode``
  (affine only, and the optional affine part of a deformable result).
* Parent transforms.  Fixed side: a *linear* parent is folded exactly into the geometry (world
  coordinates).  Moving side: a linear parent (or an explicitly chosen initial transform) ``I``
  (moving local -> world) is the *initial transform*: the engine registers the moving image placed
  by ``I`` and the result node holds ``I^-1 o T_world``, i.e. it composes with the initial transform
  and replaces it as the moving volume's parent (the initial transform node itself is kept and
  recorded on the result).  A *non-linear* parent raises :class:`NonLinearParentError` (the panel
  offers "harden and continue", :func:`harden_parent`), except a previous DeepReg result above
  the moving volume, which is ignored (its recorded initial transform, if any, is used again).
"""
from __future__ import annotations

import datetime
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import SimpleITK as sitk

import slicer  # noqa: F401  (Slicer's own module inside Slicer, slicer-core headless)
import vtk

from .errors import DeepRegError, InputError
from .imageio import validate_image
from .slicer_geometry import (FLIP, FLIP3, GRID_MARGIN_VOXELS, affine_ras_matrix, geometry_from_ijk_to_ras,  # noqa: F401
                              image_from_array, image_ijk_to_ras)
from .worker import LINEAR_MODES, Cancelled, RegistrationOutputs, RegistrationRequest, SyncContext, compute

log = logging.getLogger("DeepRegLib")

ATTR_PREFIX = "DeepReg."
ATTR_RESULT = ATTR_PREFIX + "Result"
ATTR_INITIAL = ATTR_PREFIX + "InitialTransform"   # node ID of the initial transform (moving's previous parent)
ATTR_PREVIOUS_PARENT = ATTR_PREFIX + "PreviousParent"
MODES = ("affine", "rigid", "deformable")
#: The class of a new deformable result node.  Slicer reads a B-spline + linear ``.h5`` back (File > Add Data,
#: ``vtkSlicerTransformLogic::AddTransform``) as a plain ``vtkMRMLTransformNode`` (no specialised class for a
#: composite); storing it in that class from the start, it reloads as itself and the panel's output selector
#: (``vtkMRMLTransformNode``) offers it again.
DEFORMABLE_NODE_CLASS = "vtkMRMLTransformNode"

#: Raised to stop a registration (alias of the engine's cancellation error); the scene is left unchanged.
RegistrationCancelled = Cancelled


class NonLinearParentError(InputError):
    """An input volume sits under a non-linear transform; :func:`harden_parent` resolves it."""

    def __init__(self, message: str, node=None, transform_node=None) -> None:
        super().__init__(message)
        self.node = node
        self.transform_node = transform_node


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


def transform_to_world(transform_node, what: str = "transform") -> np.ndarray:
    """RAS 4x4 *to world* matrix of a transform node (its whole parent chain); must be linear."""
    if transform_node is None:
        return np.eye(4)
    if not transform_node.IsTransformToWorldLinear():
        raise InputError(f"{what} '{transform_node.GetName()}' is not linear (or sits under a non-linear "
                         "transform); choose a linear transform or harden it first")
    m = vtk.vtkMatrix4x4()
    transform_node.GetMatrixTransformToWorld(m)
    return vtk_to_numpy_matrix(m)


def world_ijk_to_ras(node, name: str = "volume", ignore_deepreg_parent: bool = False) -> np.ndarray:
    """``IJKToRAS`` in world coordinates: a linear parent transform is folded in exactly."""
    m = ijk_to_ras(node)
    parent = node.GetParentTransformNode()
    if parent is None or (ignore_deepreg_parent and is_deepreg_result(parent)):
        return m
    if not parent.IsTransformToWorldLinear():
        raise NonLinearParentError(
            f"The {name} volume '{node.GetName()}' is under the non-linear transform '{parent.GetName()}'. "
            "Harden it (Data module: right-click > Harden transform, or 'Harden and continue'), or remove it.",
            node=node, transform_node=parent)
    to_world = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(to_world)
    return vtk_to_numpy_matrix(to_world) @ m


def harden_parent(node) -> bool:
    """Harden ``node``'s parent transform into it (Slicer's own resampling); the user's explicit choice."""
    if node is None or node.GetParentTransformNode() is None:
        return False
    return bool(slicer.vtkSlicerTransformLogic().hardenTransform(node))


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
    _check_image_data(node, name)


def _check_image_data(node, name: str) -> None:
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


def volume_node_to_image(node, name: str = "volume", ignore_deepreg_parent: bool = False,
                         validate: bool = True, ijk_to_ras_matrix: Optional[np.ndarray] = None) -> sitk.Image:
    """A float32 SimpleITK image (LPS) with the node's voxels and exact world geometry.

    ``ijk_to_ras_matrix``: use this index -> RAS matrix instead of the node's world one (the moving
    volume placed by its initial transform).
    """
    check_scalar_volume_node(node, name)
    m = ijk_to_ras_matrix if ijk_to_ras_matrix is not None else world_ijk_to_ras(node, name, ignore_deepreg_parent)
    arr = node_array(node).astype(np.float32)
    img = image_from_array(arr, m)
    if validate:  # the header's geometry: an affine initial transform may shear the placed image's direction
        validate_image(img if ijk_to_ras_matrix is None else image_from_array(arr, ijk_to_ras(node)),
                       f"{name} '{node.GetName()}'")
    return img


def image_to_volume_node(image: sitk.Image, scene, name: str = "volume", node=None,
                         class_name: str = "vtkMRMLScalarVolumeNode"):
    """Put a scalar SimpleITK image into a (new or given) volume node, geometry converted to RAS."""
    data = image_data_from_image(image)
    if node is None:
        node = scene.AddNewNodeByClass(class_name, name)
    node.SetIJKToRASMatrix(numpy_to_vtk_matrix(image_ijk_to_ras(image)))
    node.SetAndObserveImageData(data)
    return node


def image_data_from_image(image: sitk.Image) -> vtk.vtkImageData:
    """The voxels of a scalar SimpleITK image as ``vtkImageData`` (no geometry; IJK order kept)."""
    from vtk.util.numpy_support import numpy_to_vtk
    arr = np.ascontiguousarray(sitk.GetArrayFromImage(image))
    data = vtk.vtkImageData()
    data.SetDimensions(arr.shape[2], arr.shape[1], arr.shape[0])
    data.GetPointData().SetScalars(numpy_to_vtk(arr.ravel(), deep=True))
    return data


# ----------------------------------------------------------------------------- label maps, segmentations, masks
def _moving_side_matrix(node, moving_node, initial_ras: np.ndarray, what: str) -> np.ndarray:
    """Index -> RAS of a node that belongs to the moving image, placed like the moving image (``I``)."""
    parent = node.GetParentTransformNode()
    mparent = moving_node.GetParentTransformNode()
    same = parent is None or is_deepreg_result(parent) or (mparent is not None and parent.GetID() == mparent.GetID())
    if not same:
        raise InputError(f"{what} '{node.GetName()}' is under the transform '{parent.GetName()}', but the moving "
                         f"volume '{moving_node.GetName()}' is not: put it under the same transform (or none), "
                         "or harden it")
    return initial_ras


def label_node_to_image(node, ijk_to_ras_matrix: np.ndarray, name: str = "label map") -> sitk.Image:
    """An integer SimpleITK label image of a label-map volume node with the given index -> RAS."""
    _check_image_data(node, name)
    arr = node_array(node)
    if not np.issubdtype(arr.dtype, np.integer):
        arr = np.rint(arr).astype(np.int32)
    return image_from_array(arr, ijk_to_ras_matrix @ ijk_to_ras(node))


@dataclass
class SegmentInfo:
    segment_id: str
    name: str
    color: tuple
    label_value: int


@dataclass
class LayerLabels:
    """One binary-labelmap layer of a segmentation: a label image and the segments it holds."""

    image: sitk.Image
    segments: List[SegmentInfo]


def segmentation_layers(seg_node, ras_matrix: np.ndarray = np.eye(4)) -> List[LayerLabels]:
    """The binary-labelmap representation of a segmentation, one label image per layer (segments of a
    layer do not overlap), geometry ``ras_matrix @ image-to-world``.  Converts to binary labelmap first."""
    from vtk.util.numpy_support import vtk_to_numpy
    seg = seg_node.GetSegmentation()
    name = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    if seg.GetNumberOfSegments() == 0:
        raise InputError(f"segmentation '{seg_node.GetName()}' has no segments")
    if not seg.ContainsRepresentation(name):
        if not seg.CreateRepresentation(name):
            raise InputError(f"segmentation '{seg_node.GetName()}' cannot be converted to a binary labelmap")
    layers = []
    for layer in range(seg.GetNumberOfLayers()):
        data = seg.GetLayerDataObject(layer)
        seg_ids = [i for i in _segment_ids(seg) if seg.GetLayerIndex(i) == layer]
        if data is None or not seg_ids:
            continue
        ext = data.GetExtent()
        if ext[1] < ext[0] or ext[3] < ext[2] or ext[5] < ext[4]:
            arr = np.zeros((2, 2, 2), np.int16)
            ext = (0, 1, 0, 1, 0, 1)
        else:
            dims = (ext[1] - ext[0] + 1, ext[3] - ext[2] + 1, ext[5] - ext[4] + 1)
            arr = np.array(vtk_to_numpy(data.GetPointData().GetScalars()), copy=True).reshape(dims[::-1])
        m = vtk.vtkMatrix4x4()
        data.GetImageToWorldMatrix(m)
        i2w = vtk_to_numpy_matrix(m)
        shift = np.eye(4)
        shift[:3, 3] = (ext[0], ext[2], ext[4])
        infos = [SegmentInfo(i, seg.GetSegment(i).GetName(), tuple(seg.GetSegment(i).GetColor()),
                             int(seg.GetSegment(i).GetLabelValue())) for i in seg_ids]
        layers.append(LayerLabels(image_from_array(arr.astype(np.int32), ras_matrix @ i2w @ shift), infos))
    return layers


def _segment_ids(seg) -> List[str]:
    return [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())]


def mask_to_image(node, reference: sitk.Image, ras_matrix: np.ndarray, name: str) -> sitk.Image:
    """A uint8 0/1 mask on ``reference``'s grid from a label map (non-zero) or a segmentation (any segment)."""
    if node.IsA("vtkMRMLSegmentationNode"):
        parts = [lay.image for lay in segmentation_layers(node, ras_matrix)]
    elif node.IsA("vtkMRMLLabelMapVolumeNode") or node.IsA("vtkMRMLScalarVolumeNode"):
        parts = [label_node_to_image(node, ras_matrix, name)]
    else:
        raise InputError(f"{name} '{node.GetName()}' must be a label map or a segmentation")
    out = np.zeros(sitk.GetArrayViewFromImage(reference).shape, np.uint8)
    for p in parts:
        on_ref = sitk.Resample(sitk.Cast(p != 0, sitk.sitkUInt8), reference, sitk.Transform(),
                               sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        out |= sitk.GetArrayFromImage(on_ref)
    if not out.any():
        raise InputError(f"{name} '{node.GetName()}' does not overlap its image (empty mask)")
    img = sitk.GetImageFromArray(out)
    img.CopyInformation(reference)
    return img


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


def _record(node, result, fixed_node=None, moving_node=None, extra: Optional[dict] = None) -> None:
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
    _record(node, result, fixed_node, moving_node)
    node.EndModify(was)
    return node


def result_to_linear_transform_node(result, scene, name: str = "DeepRegAffine", node=None,
                                    fixed_node=None, moving_node=None):
    """A ``vtkMRMLLinearTransformNode`` holding the affine part of ``result`` (fixed -> moving, from parent)."""
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    was = node.StartModify()
    node.SetMatrixTransformFromParent(numpy_to_vtk_matrix(affine_ras_matrix(result)))
    _record(node, result, fixed_node, moving_node)
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


# ----------------------------------------------------------------------------- models
def list_model_cards(problems: Optional[List[str]] = None) -> Dict[str, dict]:
    """``{name: card}`` of the bundled models (works before torch is installed); a model made for
    several tasks is listed once per task, ``NAME`` (its default task) and ``NAME:TASK``.

    A bad card (unreadable JSON, missing fields) is skipped and described in ``problems`` (and the
    log) instead of emptying the whole list.
    """
    from .bundles import list_models
    try:
        models = list_models(problems=problems if problems is not None else [], task_views=True)
    except TypeError:  # an engine without the ``problems`` argument
        models = list_models()
    for p in problems or []:
        log.warning("DeepReg: %s", p)
    return {n: b.card for n, b in models.items()}


def model_tooltip(card: dict) -> str:
    """The panel's tooltip for a model: description, kind, grids, parameters, measured accuracy and speed, licence."""
    from .bundles import ModelBundle
    inp = card.get("input", {})
    lines = [card.get("description", card.get("name", "")), f"input: {inp.get('expects', '?')}"]
    try:
        lines += ModelBundle(card.get("name", "?"), Path("."), card).details()
    except (KeyError, TypeError, ValueError):  # an incomplete card: what it has is shown above
        lines.append(f"grid {inp.get('size', '?')} at {inp.get('spacing', '?')} mm")
    dice = card.get("accuracy", {}).get("dice_deformable", {})
    if dice:
        lines.append(f"validation Dice: subcortical {dice.get('subcortical', float('nan')):.3f}, "
                     f"cortical {dice.get('cortical', float('nan')):.3f}")
    if card.get("licence"):
        lines.append(f"licence (weights and sample data): {card['licence']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- names
def unique_name(scene, base: str) -> str:
    """``base``, or ``base_1``, ``base_2``, ... : never a name already used in ``scene``."""
    if scene.GetFirstNodeByName(base) is None:
        return base
    i = 1
    while scene.GetFirstNodeByName(f"{base}_{i}") is not None:
        i += 1
    return f"{base}_{i}"


def result_names(moving_name: str, fixed_name: str) -> Dict[str, str]:
    """Base names of the result nodes: what each holds (the transform maps the moving image onto the fixed)."""
    base = f"{moving_name} to {fixed_name}"
    return {"transform": f"{base} (DeepReg)", "affine": f"{base} (DeepReg affine)",
            "jacobian": f"{base} (DeepReg det J)", "volume": f"{moving_name} warped to {fixed_name}"}


# ----------------------------------------------------------------------------- phase 1: gather (main thread)
@dataclass
class NodeInputs:
    """The nodes of one registration and what :func:`apply_outputs` needs to write the results."""

    fixed: object
    moving: object
    initial_node: object = None        # the linear transform used as the initial transform (or None)
    previous_parent: object = None     # the moving volume's parent before the run
    labels: object = None              # label map or segmentation node belonging to the moving image
    label_layers: List[LayerLabels] = field(default_factory=list)
    mode: str = "deformable"
    output_transform: object = None
    output_volume: object = None


def initial_transform_of(moving_node, explicit=None):
    """(``I``, node): the initial transform (moving local RAS -> world RAS) and where it came from.

    ``explicit`` (a transform node) wins; else the moving volume's linear parent; a DeepReg result
    above the moving volume is ignored, but the initial transform it recorded is used again.
    Raises :class:`NonLinearParentError` for a non-linear parent that is not a DeepReg result.
    """
    if explicit is not None:
        return transform_to_world(explicit, "initial transform"), explicit
    parent = moving_node.GetParentTransformNode()
    if parent is None:
        return np.eye(4), None
    if is_deepreg_result(parent):
        scene = moving_node.GetScene()
        rec = parent.GetAttribute(ATTR_INITIAL)
        init = scene.GetNodeByID(rec) if (scene is not None and rec) else None
        if init is not None and init.IsTransformToWorldLinear():
            return transform_to_world(init), init
        return np.eye(4), None
    if not parent.IsTransformToWorldLinear():
        raise NonLinearParentError(
            f"The moving volume '{moving_node.GetName()}' is under the non-linear transform '{parent.GetName()}'. "
            "Only a linear transform can be used as the initial transform: harden it into the volume "
            "('Harden and continue'), or remove it.", node=moving_node, transform_node=parent)
    return transform_to_world(parent), parent


def place_moving(node, initial_ras: np.ndarray, name: str = "moving", max_growth: float = 4.0) -> sitk.Image:
    """The moving image where the initial transform ``I`` (moving local RAS -> world RAS) puts it.

    A rigid ``I`` is folded into the image geometry exactly (no resampling).  An ``I`` with scaling or
    shear would give a direction matrix that is not a rotation, which images may not have: the image is
    then resampled (linear) through ``I`` onto an axis-aligned grid covering it, at its finest spacing
    (coarser if that grid would hold more than ``max_growth`` times its voxels).
    """
    from .worker import affine_from_matrix
    m = np.asarray(initial_ras, dtype=float) @ ijk_to_ras(node)
    _, spacing, direction = geometry_from_ijk_to_ras(m)
    if np.allclose(direction.T @ direction, np.eye(3), atol=1e-6):
        return volume_node_to_image(node, name, ijk_to_ras_matrix=m)
    local = volume_node_to_image(node, name, ijk_to_ras_matrix=ijk_to_ras(node))
    size = np.asarray(local.GetSize())
    corners = np.array([[i, j, k, 1.0] for i in (0, size[0] - 1) for j in (0, size[1] - 1) for k in (0, size[2] - 1)])
    pts = (FLIP @ m @ corners.T).T[:, :3]  # placed corners, LPS
    lo, hi = pts.min(0), pts.max(0)
    sp = float(min(spacing))
    sp = max(sp, float((np.prod(hi - lo) / (max_growth * np.prod(size))) ** (1.0 / 3.0)))
    ref = sitk.Image([int(np.ceil((h - l) / sp)) + 1 for l, h in zip(lo, hi)], sitk.sitkFloat32)
    ref.SetSpacing((sp, sp, sp))
    ref.SetOrigin(tuple(float(v) for v in lo))
    to_local = affine_from_matrix(FLIP @ np.linalg.inv(initial_ras) @ FLIP)  # placed world LPS -> local LPS
    return sitk.Resample(local, ref, to_local, sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def check_output_transform(node, mode: str) -> None:
    """Raise :class:`InputError` unless ``node`` can hold a ``mode`` result: a linear node (or a plain
    ``vtkMRMLTransformNode``) for a linear result, any transform node but a linear one for a deformable one."""
    linear_node = node.IsA("vtkMRMLLinearTransformNode")
    if mode in LINEAR_MODES and not (linear_node or node.GetClassName() == "vtkMRMLTransformNode"):
        raise InputError(f"the output transform '{node.GetName()}' is a {node.GetClassName()}; the {mode} result "
                         "needs a vtkMRMLLinearTransformNode (choose 'Create new transform' or a linear transform)")
    if mode not in LINEAR_MODES and linear_node:
        raise InputError(f"the output transform '{node.GetName()}' is a vtkMRMLLinearTransformNode; the deformable "
                         f"result needs a non-linear one, e.g. a {DEFORMABLE_NODE_CLASS} (choose 'Create new "
                         "transform' or a transform that is not linear)")


def gather_inputs(fixed_node, moving_node, *, model: Optional[str] = None, device: str = "auto",
                  mode: str = "deformable", refine: Optional[bool] = None, initial_transform=None,
                  skip_affine_stage: bool = False, fixed_mask=None, moving_mask=None, moving_labels=None,
                  output_transform=None, output_volume=None, jacobian: bool = False, affine_part: bool = False,
                  set_moving_parent: bool = False):
    """Check the nodes and copy everything the worker needs: ``(RegistrationRequest, NodeInputs)``.

    Main thread only.  Raises :class:`InputError` (or :class:`NonLinearParentError`) with a message
    for the user; changes nothing in the scene.
    """
    if fixed_node is None or moving_node is None:
        raise InputError("select both a fixed and a moving volume")
    if fixed_node is moving_node or fixed_node.GetID() == moving_node.GetID():
        raise InputError(f"fixed and moving are the same volume ('{fixed_node.GetName()}'); pick two different volumes")
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    if output_volume is not None and output_volume in (fixed_node, moving_node):
        raise InputError("the output volume must not be one of the input volumes")
    if output_transform is not None:
        check_output_transform(output_transform, mode)
    fixed = volume_node_to_image(fixed_node, "fixed")
    initial_ras, initial_node = initial_transform_of(moving_node, initial_transform)
    if skip_affine_stage and initial_node is None:
        raise InputError("'skip the affine stage' keeps the initial transform as the affine, but there is no initial "
                         "transform (none chosen and no linear transform above the moving volume): untick it, or "
                         "choose an initial transform")
    check_scalar_volume_node(moving_node, "moving")
    moving = place_moving(moving_node, initial_ras)
    req = RegistrationRequest(fixed=fixed, moving=moving, model=model, device=device, mode=mode, refine=refine,
                              initial_ras=initial_ras, skip_affine_stage=skip_affine_stage,
                              warped_volume=output_volume is not None,
                              jacobian=jacobian and mode not in LINEAR_MODES,
                              affine_part=affine_part and mode not in LINEAR_MODES)
    if fixed_mask is not None:
        req.fixed_mask = mask_to_image(fixed_mask, fixed, transform_to_world(fixed_mask.GetParentTransformNode(),
                                                                              "fixed mask's transform"), "fixed mask")
    if moving_mask is not None:
        req.moving_mask = mask_to_image(moving_mask, moving,
                                        _moving_side_matrix(moving_mask, moving_node, initial_ras, "moving mask"),
                                        "moving mask")
    info = NodeInputs(fixed=fixed_node, moving=moving_node, initial_node=initial_node,
                      previous_parent=moving_node.GetParentTransformNode(), labels=moving_labels, mode=mode,
                      output_transform=output_transform, output_volume=output_volume)
    if moving_labels is not None:
        m = _moving_side_matrix(moving_labels, moving_node, initial_ras, "moving labels")
        if moving_labels.IsA("vtkMRMLSegmentationNode"):
            info.label_layers = segmentation_layers(moving_labels, m)
            req.moving_labels = {f"layer{i}": lay.image for i, lay in enumerate(info.label_layers)}
        elif moving_labels.IsA("vtkMRMLLabelMapVolumeNode"):
            req.moving_labels = {"labelmap": label_node_to_image(moving_labels, m, "moving label map")}
        else:
            raise InputError(f"'{moving_labels.GetName()}' is a {moving_labels.GetClassName()}; moving labels must "
                             "be a label map volume or a segmentation")
    return req, info


# ----------------------------------------------------------------------------- phase 3: apply (main thread)
@dataclass
class ResultNodes:
    """The nodes a registration wrote (new ones, or the chosen output nodes)."""

    transform: object = None
    affine: object = None
    warped_volume: object = None
    warped_labels: object = None
    jacobian: object = None
    outputs: Optional[RegistrationOutputs] = None
    quality: object = None  # DeepRegLib.quality.QualityVerdict (None when it could not be computed)


def _labels_on_fixed(info: NodeInputs, outputs: RegistrationOutputs, scene, fixed_name: str):
    """Build the warped label map / segmentation node content (not yet in the scene)."""
    lab = info.labels
    name = unique_name(scene, f"{lab.GetName()} warped to {fixed_name}")
    if lab.IsA("vtkMRMLLabelMapVolumeNode"):
        img = outputs.warped_labels["labelmap"]
        node = slicer.vtkMRMLLabelMapVolumeNode()
        node.SetName(name)
        node.SetIJKToRASMatrix(numpy_to_vtk_matrix(image_ijk_to_ras(img)))
        node.SetAndObserveImageData(image_data_from_image(img))
        color = lab.GetDisplayNode().GetColorNodeID() if lab.GetDisplayNode() is not None else None
        return node, color
    node = slicer.vtkMRMLSegmentationNode()
    node.SetName(name)
    seg = node.GetSegmentation()
    rep = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    if hasattr(seg, "SetSourceRepresentationName"):
        seg.SetSourceRepresentationName(rep)
    else:  # Slicer < 5.4
        seg.SetMasterRepresentationName(rep)
    for i, layer in enumerate(info.label_layers):
        img = outputs.warped_labels[f"layer{i}"]
        oriented = slicer.vtkOrientedImageData()
        oriented.ShallowCopy(image_data_from_image(sitk.Cast(img, sitk.sitkInt16)))
        oriented.SetImageToWorldMatrix(numpy_to_vtk_matrix(image_ijk_to_ras(img)))
        for s in layer.segments:
            segment = slicer.vtkSegment()
            segment.SetName(s.name)
            segment.SetColor(*s.color)
            segment.SetLabelValue(s.label_value)
            segment.AddRepresentation(rep, oriented)
            seg.AddSegment(segment, s.segment_id)
    return node, None


def apply_outputs(scene, info: NodeInputs, outputs: RegistrationOutputs, *, set_moving_parent: bool = False,
                  name: Optional[str] = None) -> ResultNodes:
    """Write a finished registration into the scene (main thread).

    Everything is built first (transforms, image data, segmentations) outside the scene; then new
    nodes are added and chosen existing output nodes filled.  On error every added node is removed.
    """
    fixed_node, moving_node = info.fixed, info.moving
    names = result_names(moving_node.GetName(), fixed_node.GetName())
    res = outputs.result
    extra = {"Mode": outputs.mode, "Refined": int(outputs.refined), "Refinement": outputs.refinement,
             "InitialTransformName": info.initial_node.GetName() if info.initial_node is not None else ""}
    # build (no scene change)
    if outputs.mode in LINEAR_MODES or res.displacement is None:
        tnode_new = slicer.vtkMRMLLinearTransformNode()
        tnode_new.SetMatrixTransformFromParent(numpy_to_vtk_matrix(affine_ras_matrix(res)))
        tname = names["affine"]
    else:
        tnode_new = getattr(slicer, DEFORMABLE_NODE_CLASS)()
        tnode_new.SetAndObserveTransformFromParent(
            grid_transform_from_result(res))
        tname = names["transform"]
    affine_new = None
    if outputs.mode not in LINEAR_MODES and res.displacement is not None and outputs.affine_part:
        affine_new = slicer.vtkMRMLLinearTransformNode()
        affine_new.SetMatrixTransformFromParent(numpy_to_vtk_matrix(affine_ras_matrix(res)))
    labels_new, label_color = (None, None)
    if info.labels is not None and outputs.warped_labels:
        labels_new, label_color = _labels_on_fixed(info, outputs, scene, fixed_node.GetName())
    jac_img = jacobian_image(res, outputs.jacobian) if outputs.jacobian is not None else None
    vol_data = vol_matrix = None
    if info.output_volume is not None:
        if outputs.warped_volume is None:
            raise DeepRegError("internal: the warped volume was not computed")
        vol_data = image_data_from_image(outputs.warped_volume)
        vol_matrix = numpy_to_vtk_matrix(image_ijk_to_ras(outputs.warped_volume))

    # commit 1: add the new nodes (removed again on any error)
    added = []
    out = ResultNodes(outputs=outputs, quality=getattr(outputs, "quality", None))
    target = info.output_transform if info.output_transform is not None else tnode_new
    try:
        if info.output_transform is None:
            tnode_new.SetName(unique_name(scene, name or tname))
            scene.AddNode(tnode_new)
            added.append(tnode_new)
        if affine_new is not None:
            affine_new.SetName(unique_name(scene, names["affine"]))
            scene.AddNode(affine_new)
            added.append(affine_new)
            _record(affine_new, res, fixed_node, moving_node, dict(extra, Mode="affine part"))
            out.affine = affine_new
        if labels_new is not None:
            scene.AddNode(labels_new)
            added.append(labels_new)
            labels_new.CreateDefaultDisplayNodes()
            if label_color and labels_new.GetDisplayNode() is not None:
                labels_new.GetDisplayNode().SetAndObserveColorNodeID(label_color)
            if labels_new.IsA("vtkMRMLSegmentationNode"):
                labels_new.SetReferenceImageGeometryParameterFromVolumeNode(fixed_node)
            out.warped_labels = labels_new
        if jac_img is not None:
            out.jacobian = image_to_volume_node(jac_img, scene, unique_name(scene, names["jacobian"]))
            added.append(out.jacobian)
    except Exception:
        for n in added:
            scene.RemoveNode(n)
        raise

    # commit 2: the chosen existing nodes and the moving volume's parent, last (plain setters)
    if info.output_transform is not None:
        was = target.StartModify()
        target.SetAndObserveTransformFromParent(tnode_new.GetTransformFromParent())
        target.EndModify(was)
    out.transform = target
    _record(target, res, fixed_node, moving_node, extra)
    record_quality(target, out.quality)
    target.SetAttribute(ATTR_INITIAL, info.initial_node.GetID() if info.initial_node is not None else "")
    prev = info.previous_parent
    if prev is not None and is_deepreg_result(prev):  # a re-run: keep what was under the previous result
        prev_id = prev.GetAttribute(ATTR_PREVIOUS_PARENT) or ""
    else:
        prev_id = prev.GetID() if prev is not None else ""
    target.SetAttribute(ATTR_PREVIOUS_PARENT, "" if prev_id == target.GetID() else prev_id)
    for role, node in (("affine", out.affine), ("jacobian", out.jacobian), ("labels", out.warped_labels)):
        target.RemoveNodeReferenceIDs(ATTR_PREFIX + role)
        if node is not None:
            target.SetNodeReferenceID(ATTR_PREFIX + role, node.GetID())
            node.SetAttribute(ATTR_PREFIX + "Transform", target.GetID())
    if info.output_volume is not None:
        vol = info.output_volume
        if vol.GetImageData() is None:  # an empty node (e.g. just created in the selector): name it
            vol.SetName(unique_name(scene, names["volume"]))
        vol.SetIJKToRASMatrix(vol_matrix)
        vol.SetAndObserveImageData(vol_data)
        if vol.GetDisplayNode() is None:  # e.g. made by the selector's "Create new Volume": else it is not shown
            vol.CreateDefaultDisplayNodes()
        vol.SetAttribute(ATTR_PREFIX + "Transform", target.GetID())
        out.warped_volume = vol
    if set_moving_parent:
        moving_node.SetAndObserveTransformNodeID(target.GetID())
    return out


def record_quality(node, verdict) -> None:
    """The quality verdict on the result node (``DeepReg.Quality``: its summary; ``DeepReg.Trusted``: 1/0)."""
    if verdict is None:
        node.RemoveAttribute(ATTR_PREFIX + "Quality")
        node.RemoveAttribute(ATTR_PREFIX + "Trusted")
        return
    node.SetAttribute(ATTR_PREFIX + "Quality", verdict.summary())
    node.SetAttribute(ATTR_PREFIX + "Trusted", "1" if verdict.trusted else "0")


def load_table(scene, path, name: str = "table", node=None):
    """A CSV file (e.g. a batch's ``summary.csv``) read into a (new or given) ``vtkMRMLTableNode``."""
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", unique_name(scene, name))
    storage = node.GetStorageNode()
    if storage is None:
        storage = scene.AddNewNodeByClass("vtkMRMLTableStorageNode")
        node.SetAndObserveStorageNodeID(storage.GetID())
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        raise InputError(f"cannot read the table {path}")
    return node


# ----------------------------------------------------------------------------- one call (caller's thread)
Progress = Callable[[str, float], None]


def register_nodes_full(scene, fixed_node, moving_node, model: Optional[str] = None, device: str = "auto",
                        output_volume=None, progress: Optional[Progress] = None, set_moving_parent: bool = False,
                        output_transform=None, name: Optional[str] = None, jacobian: bool = False,
                        log_line: Optional[Callable[[str], None]] = None, cancel: Optional[Callable[[], bool]] = None,
                        **options) -> ResultNodes:
    """:func:`gather_inputs`, :func:`DeepRegLib.worker.compute`, :func:`apply_outputs` in the caller's thread.

    ``options``: ``mode``, ``refine``, ``initial_transform``, ``skip_affine_stage``, ``fixed_mask``,
    ``moving_mask``, ``moving_labels``, ``affine_part`` (see :func:`gather_inputs`).
    ``progress(stage, fraction of the whole job)`` may raise :class:`RegistrationCancelled`.
    On any error the scene is left unchanged.
    """
    req, info = gather_inputs(fixed_node, moving_node, model=model, device=device, output_transform=output_transform,
                              output_volume=output_volume, jacobian=jacobian, set_moving_parent=set_moving_parent,
                              **options)
    from .bundles import load_bundle
    from .domain import check_pair
    for w in check_pair(req.fixed, req.moving, load_bundle(model).card):  # the panel asks; here: warn and go on
        log.warning("DeepReg: %s", w)
        if log_line is not None:
            log_line("domain warning: " + w)
    t0 = time.perf_counter()
    outputs = compute(req, SyncContext(progress, log_line, cancel))
    nodes = apply_outputs(scene, info, outputs, set_moving_parent=set_moving_parent, name=name)
    res = outputs.result
    res.timings["mrml"] = time.perf_counter() - t0 - outputs.timings.get("job", 0.0)
    nodes.transform.SetAttribute(ATTR_PREFIX + "Timings", json.dumps({k: round(v, 4) for k, v in res.timings.items()}))
    global last_result, last_outputs, last_quality
    last_result, last_outputs, last_quality = res, outputs, outputs.quality
    return nodes


def register_nodes(scene, fixed_node, moving_node, model: Optional[str] = None, device: str = "auto",
                   output_volume=None, progress: Optional[Progress] = None, set_moving_parent: bool = False,
                   output_transform=None, name: Optional[str] = None, jacobian: bool = False, **options):
    """Register ``moving_node`` to ``fixed_node``; returns the result transform node (fixed -> moving).

    A ``vtkMRMLTransformNode`` (deformable, the default; see :data:`DEFORMABLE_NODE_CLASS`) or a
    ``vtkMRMLLinearTransformNode`` (``mode="affine"`` or ``"rigid"``); see :func:`register_nodes_full` for every output.
    """
    return register_nodes_full(scene, fixed_node, moving_node, model=model, device=device,
                               output_volume=output_volume, progress=progress, set_moving_parent=set_moving_parent,
                               output_transform=output_transform, name=name, jacobian=jacobian, **options).transform


#: The engine result (fixed world -> moving local) and outputs of the last :func:`register_nodes` call.
last_result = None
last_outputs = None
last_quality = None
