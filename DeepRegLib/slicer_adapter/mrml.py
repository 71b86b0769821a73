"""MRML adapter: one registration of Slicer nodes, in three phases.

This and its siblings (:mod:`.nodes`: node <-> image; :mod:`.transform_nodes`: results -> transform
nodes; :mod:`.geometry`: the one RAS <-> LPS) are the only engine modules that import Slicer
(``slicer`` / MRML / vtk); they work inside 3D Slicer and headless with the ``slicer-core`` wheel.

* A registration has three phases, so that the panel can run the middle one in a worker thread
  and touch MRML only on the main thread: :func:`gather_inputs` (nodes -> a
  :class:`~DeepRegLib.slicer_adapter.worker.RegistrationRequest` of SimpleITK copies),
  :func:`DeepRegLib.slicer_adapter.worker.compute` (no MRML), :func:`apply_outputs` (new nodes;
  chosen existing nodes are filled only once every output exists).  :func:`register_nodes` runs
  the three in the caller's thread.
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

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import SimpleITK as sitk

import slicer  # noqa: F401  (Slicer's own module inside Slicer, slicer-core headless)

from ..errors import DeepRegError, InputError
from .geometry import FLIP, affine_ras_matrix, geometry_from_ijk_to_ras, image_ijk_to_ras
from .nodes import (ATTR_INITIAL, ATTR_PREFIX, ATTR_PREVIOUS_PARENT, LayerLabels, NonLinearParentError,
                    moving_side_matrix, check_scalar_volume_node, ijk_to_ras, image_data_from_image,
                    image_to_volume_node, is_deepreg_result, label_node_to_image, mask_to_image,
                    numpy_to_vtk_matrix, segmentation_layers, transform_to_world, volume_node_to_image)
from .transform_nodes import (DEFORMABLE_NODE_CLASS, record_result, grid_transform_from_result, jacobian_image)
from .worker import LINEAR_MODES, Cancelled, RegistrationOutputs, RegistrationRequest, SyncContext, compute
from ..names import look_up_option
# the rest of the adapter's public API, so that the panel and scripts need this one module
from .nodes import harden_parent, node_array, vtk_to_numpy_matrix  # noqa: F401
from .transform_nodes import (result_to_grid_transform_node, transform_node_has_content,  # noqa: F401
                              transform_node_map_points)

log = logging.getLogger("DeepRegLib")

MODES = ("affine", "rigid", "deformable")

#: Raised to stop a registration (alias of the engine's cancellation error); the scene is left unchanged.
RegistrationCancelled = Cancelled


# ----------------------------------------------------------------------------- models
def list_model_cards(problems: Optional[List[str]] = None) -> Dict[str, dict]:
    """``{name: card}`` of the bundled models (works before torch is installed); a model made for
    several tasks is listed once per task, ``NAME`` (its default task) and ``NAME:TASK``.

    A bad card (unreadable JSON, missing fields) is skipped and described in ``problems`` (and the
    log) instead of emptying the whole list.
    """
    from ..bundles import list_models
    try:
        models = list_models(problems=problems if problems is not None else [], task_views=True)
    except TypeError:  # an engine without the ``problems`` argument
        models = list_models()
    for p in problems or []:
        log.warning("DeepReg: %s", p)
    return {n: b.card for n, b in models.items()}


def model_tooltip(card: dict) -> str:
    """The panel's tooltip for a model: description, kind, grids, parameters, measured accuracy and speed, licence."""
    from ..bundles import ModelBundle
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
    look_up_option(mode, MODES, "mode", InputError)
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
    from ..bundles import load_bundle
    bundle = load_bundle(model)  # once per registration: the worker and the engine use this one
    req = RegistrationRequest(fixed=fixed, moving=moving, model=model, device=device, mode=mode, refine=refine,
                              bundle=bundle,
                              initial_ras=initial_ras, skip_affine_stage=skip_affine_stage,
                              warped_volume=output_volume is not None,
                              jacobian=jacobian and mode not in LINEAR_MODES,
                              affine_part=affine_part and mode not in LINEAR_MODES)
    if fixed_mask is not None:
        req.fixed_mask = mask_to_image(fixed_mask, fixed, transform_to_world(fixed_mask.GetParentTransformNode(),
                                                                              "fixed mask's transform"), "fixed mask")
    if moving_mask is not None:
        req.moving_mask = mask_to_image(moving_mask, moving,
                                        moving_side_matrix(moving_mask, moving_node, initial_ras, "moving mask"),
                                        "moving mask")
    info = NodeInputs(fixed=fixed_node, moving=moving_node, initial_node=initial_node,
                      previous_parent=moving_node.GetParentTransformNode(), labels=moving_labels, mode=mode,
                      output_transform=output_transform, output_volume=output_volume)
    if moving_labels is not None:
        m = moving_side_matrix(moving_labels, moving_node, initial_ras, "moving labels")
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
            record_result(affine_new, res, fixed_node, moving_node, dict(extra, Mode="affine part"))
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
    record_result(target, res, fixed_node, moving_node, extra)
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
    """:func:`gather_inputs`, :func:`DeepRegLib.slicer_adapter.worker.compute`, :func:`apply_outputs` in the caller's thread.

    ``options``: ``mode``, ``refine``, ``initial_transform``, ``skip_affine_stage``, ``fixed_mask``,
    ``moving_mask``, ``moving_labels``, ``affine_part`` (see :func:`gather_inputs`).
    ``progress(stage, fraction of the whole job)`` may raise :class:`RegistrationCancelled`.
    On any error the scene is left unchanged.
    """
    req, info = gather_inputs(fixed_node, moving_node, model=model, device=device, output_transform=output_transform,
                              output_volume=output_volume, jacobian=jacobian, set_moving_parent=set_moving_parent,
                              **options)
    from ..bundles.preflight import preflight

    def notice(line: str) -> None:  # the panel asks; here: the licence notice once, warnings, and go on
        log.warning("DeepReg: %s", line)
        if log_line is not None:
            log_line(line)

    preflight(req.bundle.card, req.fixed, req.moving, write=notice)
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
