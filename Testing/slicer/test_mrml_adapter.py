"""The MRML adapter (DeepRegLib.slicer_adapter.mrml) against the real MRML classes of the ``slicer-core`` wheel.

Known-answer cases (translation, rotation, oblique direction, anisotropic spacing) are the
ones of ``test_conventions.py``: the grid transform node must map points like the engine,
hardening the moving volume through the node (Slicer's own resampling) must match the
engine's warp, ``SimpleITK.Resample`` of the node written to ``.h5`` and the analytic answer,
and the ``.h5`` must read back identically.  Then a real brain pair through the function the
Slicer Logic delegates to, and bad inputs.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="headless MRML tests need the slicer-core wheel (pip install slicer-core)")
vtk = pytest.importorskip("vtk")
from vtk.util.numpy_support import numpy_to_vtk, vtk_to_numpy  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_conventions import CASES, build, expected_map, g, physical_points  # noqa: E402

from DeepRegLib import DEFAULT_MODEL  # noqa: E402
from DeepRegLib.slicer_adapter import mrml  # noqa: E402
from DeepRegLib.metrics import dice_scores  # noqa: E402
from DeepRegLib import transforms as tr  # noqa: E402
from DeepRegLib.errors import InputError  # noqa: E402
from DeepRegLib.inference import RegistrationResult  # noqa: E402

FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


# ----------------------------------------------------------------------------- fixtures / helpers
def make_volume_node(scene, array_kji: np.ndarray, ijk_to_ras: np.ndarray, name: str = "vol",
                     class_name: str = "vtkMRMLScalarVolumeNode", components: int = 1):
    """A volume node built with plain vtk calls (independent of the adapter)."""
    node = scene.AddNewNodeByClass(class_name, name)
    data = vtk.vtkImageData()
    shape = array_kji.shape[:3]
    data.SetDimensions(shape[2], shape[1], shape[0])
    arr = numpy_to_vtk(np.ascontiguousarray(array_kji).reshape(-1, components) if components > 1
                       else np.ascontiguousarray(array_kji).ravel(), deep=True)
    data.GetPointData().SetScalars(arr)
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(ijk_to_ras[r, c]))
    node.SetIJKToRASMatrix(m)
    node.SetAndObserveImageData(data)
    return node


def node_from_image(scene, image: sitk.Image, name: str, class_name: str = "vtkMRMLScalarVolumeNode"):
    return make_volume_node(scene, sitk.GetArrayFromImage(image), FLIP @ tr.index_to_physical(image), name, class_name)


def load_volume(scene, path, name, labelmap=False):
    """Read a file as Slicer does (archetype storage node, RAS IJK order of Slicer's reader)."""
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", name)
    sn = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    sn.SetFileName(str(path))
    sn.SetCenterImage(False)
    node.SetAndObserveStorageNodeID(sn.GetID())
    assert sn.ReadData(node), f"cannot read {path}"
    return node


def checksum(node) -> str:
    h = hashlib.sha1(vtk_to_numpy(node.GetImageData().GetPointData().GetScalars()).tobytes())
    h.update(mrml.ijk_to_ras(node).tobytes())
    h.update(str(node.GetTransformNodeID()).encode())
    return h.hexdigest()


def hardened_image(scene, image: sitk.Image, transform_node, name="moving") -> sitk.Image:
    """Put ``image`` in a node under ``transform_node`` and harden it with vtkSlicerTransformLogic."""
    node = node_from_image(scene, image, name)
    node.SetAndObserveTransformNodeID(transform_node.GetID())
    assert slicer.vtkSlicerTransformLogic().hardenTransform(node)
    assert node.GetParentTransformNode() is None
    return mrml.volume_node_to_image(node, validate=False)


def harden_onto(label_node, transform_node, reference: sitk.Image) -> np.ndarray:
    """Harden ``transform_node`` on ``label_node`` (Slicer's resampling) and read the result back on the grid
    of ``reference`` (nearest neighbour, the same physical points), as a ``(k, j, i)`` array."""
    label_node.SetAndObserveTransformNodeID(transform_node.GetID())
    assert slicer.vtkSlicerTransformLogic().hardenTransform(label_node)
    origin, spacing, direction = mrml.geometry_from_ijk_to_ras(mrml.ijk_to_ras(label_node))
    img = sitk.GetImageFromArray(mrml.node_array(label_node))
    img.SetOrigin(tuple(origin)), img.SetSpacing(tuple(spacing)), img.SetDirection(tuple(direction.ravel()))
    return sitk.GetArrayFromImage(sitk.Resample(img, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0))


def dice_mean(a: np.ndarray, b: np.ndarray, labels) -> float:
    """Mean Dice over ``labels``, skipping labels absent from both maps."""
    return float(np.nanmean(list(dice_scores(a, b, labels).values())))


def _deepreg_module():
    """DeepReg.py imported with the headless stand-ins (kept installed for this module's tests)."""
    import tempfile
    import slicer_standins
    if "DeepReg" not in sys.modules or not hasattr(sys.modules["DeepReg"], "DeepRegLogic"):
        slicer_standins.load_deepreg(Path(tempfile.mkdtemp()))
    return sys.modules["DeepReg"]


@pytest.fixture(scope="module", autouse=True)
def _standins_removed_after_module():
    yield
    import slicer_standins
    slicer_standins.uninstall()


@pytest.fixture()
def scene():
    return slicer.vtkMRMLScene()


# ----------------------------------------------------------------------------- volume -> image
def test_volume_node_geometry_with_axis_flip(scene):
    """A node in Slicer's NIfTI-like IJK order and a SimpleITK image of the same physical volume with a
    different IJK order (i axis flipped, LPS direction) must give the same samples at the same points."""
    rng = np.random.default_rng(0)
    size = (20, 24, 16)  # i, j, k
    spacing = np.array([1.2, 0.9, 2.5])
    ras = np.eye(4)
    ras[:3, :3] = np.diag(spacing)
    ras[:3, 3] = (-10.0, 20.0, -5.0)
    arr = rng.normal(size=size[::-1]).astype(np.float32)
    node = make_volume_node(scene, arr, ras, "ras_ordered")
    img = mrml.volume_node_to_image(node, validate=False)
    # Same physical volume as SimpleITK sees it with the i axis running R->L (LPS +x):
    other = sitk.GetImageFromArray(arr[:, :, ::-1].copy())
    other.SetSpacing(tuple(spacing))
    other.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, 1))  # LPS: i -> L, j -> A (= -P), k -> S
    # the voxel (i, j, k) of `other` is voxel (n-1-i, j, k) of the node: physical point of node voxel n-1
    last = ras @ np.array([size[0] - 1, 0, 0, 1.0])
    other.SetOrigin(tuple((FLIP @ last)[:3]))
    assert np.allclose(mrml.image_ijk_to_ras(img), ras)
    resampled = sitk.Resample(img, other, sitk.Transform(), sitk.sitkNearestNeighbor)
    assert np.array_equal(sitk.GetArrayFromImage(resampled), sitk.GetArrayFromImage(other))
    # and back: a node made from `other` has the flipped IJKToRAS and the same values at each point
    back = mrml.image_to_volume_node(other, scene, "back")
    pts_node = physical_points(img)[2, 3, 4]
    pts_back = physical_points(mrml.volume_node_to_image(back, validate=False))[2, 3, size[0] - 1 - 4]
    assert np.allclose(pts_node, pts_back)
    assert slicer.util.arrayFromVolume(back)[2, 3, size[0] - 1 - 4] == arr[2, 3, 4]


@pytest.mark.parametrize("name", sorted(CASES))
def test_node_round_trip_geometry(scene, name):
    fixed, moving, *_ = build(CASES[name])
    for img in (fixed, moving):
        node = node_from_image(scene, img, "v")
        back = mrml.volume_node_to_image(node)
        assert np.allclose(back.GetOrigin(), img.GetOrigin(), atol=1e-9)
        assert np.allclose(back.GetSpacing(), img.GetSpacing(), atol=1e-9)
        assert np.allclose(back.GetDirection(), img.GetDirection(), atol=1e-9)
        assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img))


# ----------------------------------------------------------------------------- result -> grid node
@pytest.mark.parametrize("name", sorted(CASES))
def test_grid_node_maps_like_engine(scene, name):
    fixed, moving, result, aff, disp, grid, centre = build(CASES[name])
    node = mrml.result_to_grid_transform_node(result, scene, "T")
    assert node.IsA("vtkMRMLGridTransformNode")
    t = node.GetTransformFromParent()
    assert t.IsA("vtkGeneralTransform") and t.GetConcatenatedTransform(0).IsA("vtkOrientedBSplineTransform")
    # every voxel of the fixed image (subsampled), including its corners: the same formula as the engine
    pts = physical_points(fixed)[::2, ::2, ::2].reshape(-1, 3)
    got = mrml.transform_node_map_points(node, pts)
    assert np.abs(got - result.map_points(pts)).max() < 1e-6
    assert np.abs(got - expected_map(pts, aff, CASES[name]["displacement"], centre)).max() < 0.1
    # and through MRML's world API (RAS): a point under the node maps from world to local = fixed -> moving
    p = pts[len(pts) // 2]
    ras = np.array(node.GetTransformFromParent().TransformPoint(tuple(p * [-1, -1, 1])))
    assert np.allclose(ras * [-1, -1, 1], result.map_points(p), atol=1e-6)


def test_grid_node_outside_is_the_affine(scene):
    """Beyond the engine's grid the displacement is zero in the node, as in the engine and in ITK."""
    fixed, moving, result, aff, disp, grid, centre = build(CASES["rotation"])
    node = mrml.result_to_grid_transform_node(result, scene, "T")
    edge = np.asarray(grid.origin) + np.asarray(grid.spacing) * (np.asarray(grid.size) - 1)
    far = np.array([edge + 30.0, np.asarray(grid.origin) - 5.0])
    want = np.array([aff.TransformPoint(tuple(p)) for p in far])
    assert np.abs(mrml.transform_node_map_points(node, far) - want).max() < 1e-6


@pytest.mark.parametrize("name", sorted(CASES))
def test_harden_matches_engine_itk_and_analytic(scene, name, tmp_path):
    fixed, moving, result, aff, disp, grid, centre = build(CASES[name])
    node = mrml.result_to_grid_transform_node(result, scene, "T")
    hard = hardened_image(scene, moving, node)
    # write the node with Slicer's storage node, resample with SimpleITK onto the hardened geometry
    sn = scene.AddNewNodeByClass("vtkMRMLTransformStorageNode")
    sn.SetFileName(str(tmp_path / "T.h5"))
    assert sn.WriteData(node)
    itk = sitk.GetArrayFromImage(sitk.Resample(moving, hard, sitk.ReadTransform(str(tmp_path / "T.h5")),
                                               sitk.sitkLinear, 0.0))
    eng = sitk.GetArrayFromImage(tr.engine_warp(moving, hard, aff, disp, grid))
    pts = physical_points(hard)
    mapped = expected_map(pts, aff, CASES[name]["displacement"], centre)
    want = g(mapped)
    inv = np.linalg.inv(tr.index_to_physical(moving))
    idx = mapped @ inv[:3, :3].T + inv[:3, 3]
    inside = np.all((idx >= 1) & (idx <= np.asarray(moving.GetSize()) - 2), -1)
    # only inside the fixed image's box (where the grid is exact)
    lo, hi = (np.min(physical_points(fixed).reshape(-1, 3), 0), np.max(physical_points(fixed).reshape(-1, 3), 0))
    inside &= np.all((pts >= lo) & (pts <= hi), -1)
    assert inside.sum() > 1000
    h = sitk.GetArrayFromImage(hard)
    assert np.abs(h - want)[inside].max() < 0.06, "Slicer hardening vs analytic"
    assert np.abs(h - eng)[inside].max() < 0.02, "Slicer hardening vs engine warp"
    assert np.abs(h - itk)[inside].max() < 0.02, "Slicer hardening vs SimpleITK Resample of the .h5"


@pytest.mark.parametrize("name", ["oblique", "anisotropic"])
def test_h5_round_trip(scene, name, tmp_path):
    fixed, moving, result, *_ = build(CASES[name])
    node = mrml.result_to_grid_transform_node(result, scene, "T")
    path = str(tmp_path / "T.h5")
    sn = scene.AddNewNodeByClass("vtkMRMLTransformStorageNode")
    sn.SetFileName(path)
    assert sn.WriteData(node)
    back = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "back")
    sn2 = scene.AddNewNodeByClass("vtkMRMLTransformStorageNode")
    sn2.SetFileName(path)
    assert sn2.ReadData(back)
    # the stored B-spline + affine read back as the same mapping, in Slicer and in ITK (one formula)
    pts = physical_points(fixed)[::3, ::3, ::3].reshape(-1, 3)
    a = mrml.transform_node_map_points(node, pts)
    b = mrml.transform_node_map_points(back, pts)
    assert np.abs(a - b).max() < 1e-6
    itk = sitk.ReadTransform(path)
    c = np.array([itk.TransformPoint(tuple(p)) for p in pts])
    assert np.abs(c - result.map_points(pts)).max() < 1e-6
    assert np.abs(a - result.map_points(pts)).max() < 1e-6


# ----------------------------------------------------------------------------- parent transforms
def test_linear_parent_is_folded_nonlinear_refused(scene):
    fixed, moving, result, *_ = build(CASES["translation"])
    node = node_from_image(scene, fixed, "fixed")
    lin = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    m = vtk.vtkMatrix4x4()
    m.SetElement(0, 3, 5.0)
    m.SetElement(2, 3, -2.0)
    lin.SetMatrixTransformToParent(m)
    node.SetAndObserveTransformNodeID(lin.GetID())
    img = mrml.volume_node_to_image(node)
    assert np.allclose(np.asarray(img.GetOrigin()) - fixed.GetOrigin(), [-5.0, 0.0, -2.0])  # RAS +5 = LPS -5
    grid_node = mrml.result_to_grid_transform_node(result, scene, "T")
    node.SetAndObserveTransformNodeID(grid_node.GetID())
    with pytest.raises(InputError, match="non-linear"):
        mrml.volume_node_to_image(node, "fixed")


# ----------------------------------------------------------------------------- bad inputs
def _bad_nodes(scene):
    rng = np.random.default_rng(1)
    ok = make_volume_node(scene, rng.normal(size=(20, 20, 20)).astype(np.float32), np.eye(4), "ok")
    flat = make_volume_node(scene, rng.normal(size=(1, 20, 20)).astype(np.float32), np.eye(4), "slice2d")
    lab = make_volume_node(scene, (rng.random((20, 20, 20)) > 0.5).astype(np.int16), np.eye(4), "labels",
                           "vtkMRMLLabelMapVolumeNode")
    vec = make_volume_node(scene, rng.normal(size=(20, 20, 20, 3)).astype(np.float32), np.eye(4), "rgb",
                           "vtkMRMLVectorVolumeNode", components=3)
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "no_data")
    const = make_volume_node(scene, np.zeros((20, 20, 20), np.float32), np.eye(4), "constant")
    return ok, {"same volume": (ok, ok, "same volume"), "2D": (ok, flat, "2D|not a 3D"),
                "label map": (lab, ok, "label map"), "vector": (ok, vec, "vector"),
                "no image data": (empty, ok, "no image data"), "constant": (ok, const, "empty")}


@pytest.mark.parametrize("case", ["same volume", "2D", "label map", "vector", "no image data", "constant"])
def test_bad_input_clear_error_scene_unchanged(scene, case):
    ok, cases = _bad_nodes(scene)
    fixed, moving, pattern = cases[case]
    before = [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]
    sums = {n.GetID(): checksum(n) for n in (fixed, moving) if n.GetImageData() is not None}
    with pytest.raises(InputError, match=pattern):
        mrml.register_nodes(scene, fixed, moving, set_moving_parent=True,
                            output_volume=scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "out"))
    after = [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]
    assert after[:len(before)] == before and len(after) == len(before) + 1  # only the test's own "out"
    assert {n.GetID(): checksum(n) for n in (fixed, moving) if n.GetImageData() is not None} == sums
    assert moving.GetParentTransformNode() is None


# ----------------------------------------------------------------------------- real brains
REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "Resources" / "SampleData"


@pytest.fixture(scope="module")
def brain_run():
    """Register the bundled sample pair (fixed 17, moving 18) through the function the Slicer Logic calls."""
    scene = slicer.vtkMRMLScene()
    f = load_volume(scene, SAMPLE / "OASIS-TRT-20-17" / "t1weighted_brain.nii.gz", "fixed17")
    m = load_volume(scene, SAMPLE / "OASIS-TRT-20-18" / "t1weighted_brain.nii.gz", "moving18")
    sums = {"fixed": checksum(f), "moving": checksum(m)}
    out = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "warped")
    stages = []
    # through the Slicer module's Logic (a thin wrapper of mrml.register_nodes; imported with the test stand-ins)
    DeepReg = _deepreg_module()
    node = DeepReg.DeepRegLogic().register(f, m, model=None, device="cpu", outputVolume=out,
                                           progress=lambda s, x: stages.append((s, x)), jacobian=True)
    return dict(scene=scene, fixed=f, moving=m, node=node, out=out, sums=sums, stages=stages,
                result=mrml.last_result)


def test_brain_inputs_unchanged_and_node_recorded(brain_run):
    r = brain_run
    assert checksum(r["fixed"]) == r["sums"]["fixed"] and checksum(r["moving"]) == r["sums"]["moving"]
    node = r["node"]
    assert node.GetClassName() == mrml.DEFORMABLE_NODE_CLASS == "vtkMRMLTransformNode"
    assert r["out"].GetDisplayNode() is not None  # defect 4: the warped volume can be shown
    assert node.GetAttribute("DeepReg.Trusted") == "1" and "no problem found" in node.GetAttribute("DeepReg.Quality")
    assert node.GetNodeReference(node.GetFixedNodeReferenceRole()) is r["fixed"]
    assert node.GetNodeReference(node.GetMovingNodeReferenceRole()) is r["moving"]
    assert node.GetAttribute("DeepReg.Model") == DEFAULT_MODEL and node.GetAttribute("DeepReg.Time")
    # the panel's "Deformable" mode runs the default model's card refinement (refine=None)
    from DeepRegLib.bundles import load_bundle
    from DeepRegLib.bundles import card_refinement
    expected = "model default" if card_refinement(load_bundle(DEFAULT_MODEL).card) is not None else "none"
    assert node.GetAttribute("DeepReg.Refinement") == expected
    assert node.GetAttribute("DeepReg.Refined") == ("1" if expected != "none" else "0")
    stages = [s for s, _ in r["stages"]]
    assert stages[0] == "importing PyTorch" and {"loading model", "affine", "network", "outputs"} <= set(stages)
    fractions = [f for _, f in r["stages"]]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0  # one monotone bar over the whole job
    jac = node.GetNodeReference("DeepReg.jacobian")
    assert jac is not None
    want = r["result"].jacobian_determinant()  # the engine's det J (analytic tests in test_jacobians.py)
    got = slicer.util.arrayFromVolume(jac)
    assert got.shape == want.shape and np.allclose(got, want, atol=1e-5)
    # the output volume lies on the fixed grid
    assert np.allclose(mrml.ijk_to_ras(r["out"]), mrml.ijk_to_ras(r["fixed"]))
    assert slicer.util.arrayFromVolume(r["out"]).shape == slicer.util.arrayFromVolume(r["fixed"]).shape


def test_brain_node_maps_like_engine(brain_run):
    res, node = brain_run["result"], brain_run["node"]
    pts = physical_points(res.fixed)[::7, ::7, ::7].reshape(-1, 3)
    diff = np.abs(mrml.transform_node_map_points(node, pts) - res.map_points(pts)).max(axis=1)
    idx = (pts - np.asarray(res.grid.origin)) / np.asarray(res.grid.spacing)
    inside = np.all((idx >= 0) & (idx <= np.asarray(res.grid.size) - 1), axis=1)  # within the engine's samples
    assert inside.sum() > 1000
    assert diff[inside].max() < 1e-6  # the same B-spline formula
    # beyond the last sample (the B-spline's outer coefficient ring, background for a skull-stripped brain)
    # VTK and the engine differ slightly: measured up to 0.042 mm on this pair
    assert diff.max() < 0.1


def test_brain_hardened_labels_beat_affine(brain_run):
    """Dice of the moving labels hardened through the node (Slicer resampling) > affine alone."""
    r = brain_run
    scene, res = r["scene"], r["result"]
    affine_only = RegistrationResult(res.fixed, res.affine, np.zeros_like(res.displacement), res.grid, "affine", "cpu")
    aff_node = mrml.result_to_grid_transform_node(affine_only, scene, "affine_only")
    ref = sitk.ReadImage(str(SAMPLE / "OASIS-TRT-20-17" / "labels.DKT31.manual+aseg.nii.gz"))
    ref_arr = sitk.GetArrayFromImage(ref)
    labels = [v for v in np.unique(ref_arr) if v > 0]
    dice = {}
    for key, tnode in (("deformable", r["node"]), ("affine", aff_node)):
        mov = load_volume(scene, SAMPLE / "OASIS-TRT-20-18" / "labels.DKT31.manual+aseg.nii.gz", "lab18_" + key, True)
        dice[key] = dice_mean(harden_onto(mov, tnode, ref), ref_arr, labels)
    print("hardened-label Dice", dice)
    assert dice["deformable"] > dice["affine"], dice


def test_shared_pair_if_available(shared_mindboggle):
    """A second, independent pair from ../shared/data (skipped where absent)."""
    scene = slicer.vtkMRMLScene()
    f = load_volume(scene, shared_mindboggle / "OASIS-TRT-20-19" / "t1weighted_brain.nii.gz", "f19")
    m = load_volume(scene, shared_mindboggle / "OASIS-TRT-20-17" / "t1weighted_brain.nii.gz", "m17")
    s = checksum(m)
    node = mrml.register_nodes(scene, f, m, device="cpu", set_moving_parent=True)
    assert m.GetParentTransformNode() is node
    assert checksum(m) != s  # only the parent transform ID changed ...
    m.SetAndObserveTransformNodeID(None)
    assert checksum(m) == s  # ... the voxels and geometry did not


def test_cancel_from_progress_leaves_scene_unchanged():
    scene = slicer.vtkMRMLScene()
    f = load_volume(scene, SAMPLE / "OASIS-TRT-20-17" / "t1weighted_brain.nii.gz", "fixed17")
    m = load_volume(scene, SAMPLE / "OASIS-TRT-20-18" / "t1weighted_brain.nii.gz", "moving18")
    n = scene.GetNumberOfNodes()

    def progress(stage, fraction):
        if stage == "affine":
            raise mrml.RegistrationCancelled("cancelled by the user")

    with pytest.raises(mrml.RegistrationCancelled):
        mrml.register_nodes(scene, f, m, progress=progress, set_moving_parent=True, jacobian=True)
    assert scene.GetNumberOfNodes() == n and m.GetParentTransformNode() is None


@pytest.mark.parametrize("model", ["prostate_mrus", "universal:prostate"])
def test_prostate_pair_through_the_slicer_logic_with_its_model(model):
    """The bundled prostate MR -> US sample through the panel's Logic with ``prostate_mrus``, and with the
    universal model's prostate task (as the panel's model list names it): the card's task (grid, centre
    alignment, MI refinement) is used, the input nodes are unchanged, and the moving gland label hardened
    through the transform node (Slicer's resampling) overlaps the fixed gland better than after the task's
    centre alignment alone."""
    from DeepRegLib.demos.prostate import label_channels, sample_paths
    p = sample_paths()
    scene = slicer.vtkMRMLScene()
    f, m = load_volume(scene, p["fixed"], "us25"), load_volume(scene, p["moving"], "mr25")
    sums = {"fixed": checksum(f), "moving": checksum(m)}
    DeepReg = _deepreg_module()
    assert model in mrml.list_model_cards()  # what the panel's model list offers
    node = DeepReg.DeepRegLogic().register(f, m, model=model, device="cpu")
    res = mrml.last_result
    assert checksum(f) == sums["fixed"] and checksum(m) == sums["moving"]
    assert node.GetAttribute("DeepReg.Model") == model and node.GetAttribute("DeepReg.Refinement") == "model default"
    assert res.grid.size == (56, 72, 56) and any("task prostate" in line for line in res.log)  # 48x64x48 continued 4 voxels
    fixed_gland, moving_gland = label_channels(p["fixed_labels"])[0], label_channels(p["moving_labels"])[0]
    ref = sitk.GetArrayFromImage(fixed_gland)
    centre = RegistrationResult(res.fixed, res.affine, np.zeros_like(res.displacement), res.grid, "affine", "cpu")
    dice = {}
    for key, tnode in (("deformable", node), ("centre", mrml.result_to_grid_transform_node(centre, scene, "centre"))):
        mov = node_from_image(scene, moving_gland, "gland_" + key, "vtkMRMLLabelMapVolumeNode")
        dice[key] = dice_mean(harden_onto(mov, tnode, fixed_gland), ref, [1])
    print("hardened gland Dice", dice)
    assert dice["centre"] > 0.2 and dice["deformable"] > dice["centre"] + 0.1, dice
