"""Slicer nodes <-> engine images: volumes, label maps, segmentations and masks, with their geometry.

Slicer's world is RAS, the engine's LPS (:mod:`.geometry`, the one place that converts).
:func:`volume_node_to_image` converts a node's ``IJKToRAS`` matrix exactly (any direction, spacing,
axis flips) and folds a *linear* parent transform into the geometry (world coordinates); the
SimpleITK image has the node's voxel order.  A *non-linear* parent raises
:class:`NonLinearParentError` (:func:`harden_parent` resolves it), except a previous DeepReg result.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import SimpleITK as sitk

import slicer  # noqa: F401  (Slicer's own module inside Slicer, slicer-core headless)
import vtk

from ..errors import InputError
from ..imageio import validate_image
from .geometry import image_from_array, image_ijk_to_ras

log = logging.getLogger("DeepRegLib")

ATTR_PREFIX = "DeepReg."
ATTR_RESULT = ATTR_PREFIX + "Result"
ATTR_INITIAL = ATTR_PREFIX + "InitialTransform"   # node ID of the initial transform (moving's previous parent)
ATTR_PREVIOUS_PARENT = ATTR_PREFIX + "PreviousParent"


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
def moving_side_matrix(node, moving_node, initial_ras: np.ndarray, what: str) -> np.ndarray:
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


