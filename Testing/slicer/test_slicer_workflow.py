"""The Slicer workflow on real MRML (slicer-core): initial transforms, modes, label maps and
segmentations, masks, result names, and a scene left unchanged on error.

Known answers: (1) an analytic case (test_conventions) with the moving volume under a linear
pre-alignment: hardening the moving volume through the result node must give the analytic
image; (2) the sample brains: registering a moving volume whose voxels sit under a rigid
pre-alignment ``P`` must give ``P o R = T0``, where ``T0`` is the registration of the same world
image without a parent transform.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="headless MRML tests need the slicer-core wheel (pip install slicer-core)")
vtk = pytest.importorskip("vtk")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_conventions import CASES, build, expected_map, g, physical_points  # noqa: E402
from test_mrml_adapter import checksum, load_volume, node_from_image  # noqa: E402

from DeepRegLib.slicer_adapter import mrml  # noqa: E402
from DeepRegLib.slicer_adapter import worker  # noqa: E402
from DeepRegLib.errors import InputError  # noqa: E402
from DeepRegLib.metrics import dice_scores  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "Resources" / "SampleData"
FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


def rigid_ras(degrees=10.0, axis=(0.3, 0.2, 1.0), shift=(12.0, -8.0, 5.0)) -> np.ndarray:
    r = sitk.VersorTransform(tuple(float(a) for a in axis), np.deg2rad(degrees))
    m = np.eye(4)
    m[:3, :3] = np.asarray(r.GetMatrix()).reshape(3, 3)
    m[:3, 3] = shift
    return m


def linear_node(scene, m_ras, name="prealign"):
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    node.SetMatrixTransformToParent(mrml.numpy_to_vtk_matrix(m_ras))
    return node


def move_under(scene, node, m_ras, name="prealign"):
    """Give ``node`` the local geometry ``m^-1 IJKToRAS`` under a new linear transform ``m``: same world place."""
    node.SetIJKToRASMatrix(mrml.numpy_to_vtk_matrix(np.linalg.inv(m_ras) @ mrml.ijk_to_ras(node)))
    t = linear_node(scene, m_ras, name)
    node.SetAndObserveTransformNodeID(t.GetID())
    return t


def world_points_lps(node_world_ras: np.ndarray) -> np.ndarray:
    return (node_world_ras[:, :3] * [-1, -1, 1])


# ----------------------------------------------------------------------------- analytic initial transform
@pytest.mark.parametrize("name", ["oblique", "anisotropic"])
def test_initial_transform_composes_known_answer(name):
    """Moving under a rigid pre-alignment P: the node holds I^-1 o T_world; hardening gives g(T_world(p))."""
    fixed, moving, result_w, aff, disp, grid, centre = build(CASES[name])
    scene = slicer.vtkMRMLScene()
    fnode = node_from_image(scene, fixed, "fixed")
    mnode = node_from_image(scene, moving, "moving")
    P = rigid_ras()
    pnode = move_under(scene, mnode, P)
    req, info = mrml.gather_inputs(fnode, mnode, set_moving_parent=True)
    # the engine sees the moving image where the pre-alignment puts it (= the analytic world image)
    assert np.allclose(mrml.image_ijk_to_ras(req.moving), mrml.image_ijk_to_ras(moving), atol=1e-9)
    assert np.allclose(req.initial_ras, P) and info.initial_node is pnode
    result = worker.compose_initial(result_w, req.initial_ras)
    out = worker.RegistrationOutputs(result=result, world_result=result_w, mode="deformable")
    nodes = mrml.apply_outputs(scene, info, out, set_moving_parent=True)
    t = nodes.transform
    assert mnode.GetParentTransformNode() is t and t.GetAttribute("DeepReg.InitialTransform") == pnode.GetID()
    assert t.GetAttribute("DeepReg.PreviousParent") == pnode.GetID()
    # node maps fixed world -> moving local = P^-1(T_world(p))
    pts = physical_points(fixed)[::3, ::3, ::3].reshape(-1, 3)
    tw = expected_map(pts, aff, CASES[name]["displacement"], centre)
    local = (np.c_[tw * [-1, -1, 1], np.ones(len(tw))] @ np.linalg.inv(P).T)[:, :3] * [-1, -1, 1]
    assert np.abs(mrml.transform_node_map_points(t, pts) - local).max() < 0.02
    # Slicer's hardening of the moving volume through the node = the analytic image on the fixed region
    assert slicer.vtkSlicerTransformLogic().hardenTransform(mnode)
    hard = mrml.volume_node_to_image(mnode, validate=False)
    hp = physical_points(hard)
    want = g(expected_map(hp, aff, CASES[name]["displacement"], centre))
    lo, hi = pts.min(0), pts.max(0)
    mapped = expected_map(hp, aff, CASES[name]["displacement"], centre)
    from DeepRegLib.transforms import index_to_physical
    inv = np.linalg.inv(index_to_physical(moving))
    idx = mapped @ inv[:3, :3].T + inv[:3, 3]
    inside = np.all((idx >= 1) & (idx <= np.asarray(moving.GetSize()) - 2), -1) & np.all((hp >= lo) & (hp <= hi), -1)
    assert inside.sum() > 1000
    assert np.abs(sitk.GetArrayFromImage(hard) - want)[inside].max() < 0.06


def test_nonlinear_parent_message_and_harden_and_continue():
    fixed, moving, result_w, *_ = build(CASES["translation"])
    scene = slicer.vtkMRMLScene()
    fnode = node_from_image(scene, fixed, "fixed")
    mnode = node_from_image(scene, moving, "moving")
    warp = mrml.result_to_grid_transform_node(result_w, scene, "someone's warp")
    warp.RemoveAttribute("DeepReg.Result")  # a non-linear transform that is not a DeepReg result
    mnode.SetAndObserveTransformNodeID(warp.GetID())
    with pytest.raises(mrml.NonLinearParentError, match="non-linear transform 'someone's warp'.*[Hh]arden") as err:
        mrml.gather_inputs(fnode, mnode)
    assert err.value.node is mnode and err.value.transform_node is warp
    assert mrml.harden_parent(err.value.node)  # the one-click "harden and continue"
    assert mnode.GetParentTransformNode() is None
    req, info = mrml.gather_inputs(fnode, mnode)
    assert info.initial_node is None and np.allclose(req.initial_ras, np.eye(4))


def test_explicit_initial_transform_must_be_linear_and_wins_over_parent():
    fixed, moving, result_w, *_ = build(CASES["translation"])
    scene = slicer.vtkMRMLScene()
    fnode = node_from_image(scene, fixed, "fixed")
    mnode = node_from_image(scene, moving, "moving")
    move_under(scene, mnode, rigid_ras(5.0))
    explicit = linear_node(scene, rigid_ras(-7.0, shift=(1.0, 2.0, 3.0)), "explicit")
    req, info = mrml.gather_inputs(fnode, mnode, initial_transform=explicit)
    assert info.initial_node is explicit and np.allclose(req.initial_ras, rigid_ras(-7.0, shift=(1.0, 2.0, 3.0)))
    grid_node = mrml.result_to_grid_transform_node(result_w, scene, "grid")
    with pytest.raises(InputError, match="not linear"):
        mrml.gather_inputs(fnode, mnode, initial_transform=grid_node)


# ----------------------------------------------------------------------------- real brains
def _brains(scene):
    f = load_volume(scene, SAMPLE / "OASIS-TRT-20-17" / "t1weighted_brain.nii.gz", "fixed17")
    m = load_volume(scene, SAMPLE / "OASIS-TRT-20-18" / "t1weighted_brain.nii.gz", "moving18")
    return f, m


@pytest.fixture(scope="module")
def baseline():
    """T0: the sample pair registered with no parent transforms (deformable, with the affine part)."""
    scene = slicer.vtkMRMLScene()
    f, m = _brains(scene)
    nodes = mrml.register_nodes_full(scene, f, m, device="cpu", affine_part=True)
    return dict(scene=scene, fixed=f, moving=m, nodes=nodes, result=mrml.last_result)


def _sample_points(res, step=9):
    return physical_points(res.fixed)[::step, ::step, ::step].reshape(-1, 3)


def test_brain_prealigned_moving_composes_with_initial(baseline):
    """Same world image, voxels under a rigid P: P o R must equal T0 (the registration without a parent)."""
    scene = slicer.vtkMRMLScene()
    f, m = _brains(scene)
    P = rigid_ras(12.0, shift=(15.0, -10.0, 6.0))
    pnode = move_under(scene, m, P)
    sums = checksum(m)
    R = mrml.register_nodes(scene, f, m, device="cpu", set_moving_parent=True)
    assert m.GetParentTransformNode() is R
    m.SetAndObserveTransformNodeID(pnode.GetID())
    assert checksum(m) == sums  # voxels and geometry untouched
    pts = _sample_points(baseline["result"])
    r_local = mrml.transform_node_map_points(R, pts)
    via_p = (np.c_[r_local * [-1, -1, 1], np.ones(len(pts))] @ P.T)[:, :3] * [-1, -1, 1]
    t0 = mrml.transform_node_map_points(baseline["nodes"].transform, pts)
    assert np.abs(via_p - t0).max() < 0.05, np.abs(via_p - t0).max()


def test_brain_explicit_initial_kept_as_affine(baseline):
    """An explicit initial transform with 'skip the affine stage' is used as the affine as it is."""
    scene = slicer.vtkMRMLScene()
    f, m = _brains(scene)
    aff = baseline["nodes"].affine  # the baseline's affine part: fixed -> moving (from parent)
    assert aff is not None and aff.IsA("vtkMRMLLinearTransformNode")
    mm = vtk.vtkMatrix4x4()
    aff.GetMatrixTransformToParent(mm)  # moving -> fixed: the pre-alignment that places the moving
    init = linear_node(scene, mrml.vtk_to_numpy_matrix(mm), "manual prealignment")
    nodes = mrml.register_nodes_full(scene, f, m, device="cpu", mode="affine", initial_transform=init,
                                     skip_affine_stage=True)
    assert nodes.transform.IsA("vtkMRMLLinearTransformNode")
    a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    nodes.transform.GetMatrixTransformFromParent(a)
    aff.GetMatrixTransformFromParent(b)
    assert np.allclose(mrml.vtk_to_numpy_matrix(a), mrml.vtk_to_numpy_matrix(b), atol=1e-6)


def test_affine_part_node_and_names(baseline):
    nodes, scene = baseline["nodes"], baseline["scene"]
    assert nodes.transform.GetName() == "moving18 to fixed17 (DeepReg)"
    assert nodes.affine.GetName() == "moving18 to fixed17 (DeepReg affine)"
    assert nodes.transform.GetNodeReference("DeepReg.affine") is nodes.affine
    pts = _sample_points(baseline["result"], 15)
    want = baseline["result"].affine_transform()
    got = mrml.transform_node_map_points(nodes.affine, pts)
    assert np.abs(got - np.array([want.TransformPoint(tuple(p)) for p in pts])).max() < 1e-6
    # never reuse a name already in the scene
    assert mrml.unique_name(scene, nodes.transform.GetName()) == "moving18 to fixed17 (DeepReg)_1"


def _fixed_labels():
    ref = sitk.ReadImage(str(SAMPLE / "OASIS-TRT-20-17" / "labels.DKT31.manual+aseg.nii.gz"))
    arr = sitk.GetArrayFromImage(ref)
    return ref, arr, [int(v) for v in np.unique(arr) if v > 0]


def _dice(img: sitk.Image, ref: sitk.Image, ref_arr, labels) -> float:
    on_ref = sitk.GetArrayFromImage(sitk.Resample(img, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    return float(np.nanmean(list(dice_scores(on_ref, ref_arr, labels).values())))


class _LabelRuns:
    """Registrations warping the moving labels, run on first use (mode, "segmentation" | "labelmap")."""

    def __init__(self):
        self.scene = slicer.vtkMRMLScene()
        self.fixed, self.moving = _brains(self.scene)
        self.lab = load_volume(self.scene, SAMPLE / "OASIS-TRT-20-18" / "labels.DKT31.manual+aseg.nii.gz",
                               "labels18", True)
        self.seg = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "segmentation18")
        assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(self.lab, self.seg)
        self._runs = {}

    def __getitem__(self, key):
        if key not in self._runs:
            mode, kind = key
            self._runs[key] = mrml.register_nodes_full(self.scene, self.fixed, self.moving, device="cpu", mode=mode,
                                                       moving_labels=self.seg if kind == "segmentation" else self.lab)
        return self._runs[key]


@pytest.fixture(scope="module")
def label_runs():
    return _LabelRuns()


def test_warped_segmentation_beats_affine(label_runs):
    ref, ref_arr, labels = _fixed_labels()
    dice = {}
    for mode in ("deformable", "affine"):
        out = label_runs[(mode, "segmentation")].warped_labels
        assert out.IsA("vtkMRMLSegmentationNode")
        assert out.GetName().startswith("segmentation18 warped to fixed17")
        seg = out.GetSegmentation()
        src = label_runs.seg.GetSegmentation()
        assert seg.GetNumberOfSegments() == src.GetNumberOfSegments()
        s0 = src.GetNthSegmentID(5)
        assert seg.GetSegment(s0).GetName() == src.GetSegment(s0).GetName()
        layers = mrml.segmentation_layers(out)
        # the layer lies on the fixed geometry and holds the original label values
        assert layers[0].image.GetSize() == tuple(label_runs.fixed.GetImageData().GetDimensions())
        dice[mode] = _dice(layers[0].image, ref, ref_arr, labels)
    print("segmentation Dice", dice)
    assert dice["deformable"] > dice["affine"] + 0.03, dice
    assert dice["affine"] > 0.3, dice


@pytest.mark.slow  # two more registrations; the label-map path is also checked in test_logic_worker_job_on_real_mrml
def test_warped_label_map_beats_affine(label_runs):
    ref, ref_arr, labels = _fixed_labels()
    dice = {}
    for mode in ("deformable", "affine"):
        nodes = label_runs[(mode, "labelmap")]
        out = nodes.warped_labels
        assert out.IsA("vtkMRMLLabelMapVolumeNode") and out.GetName().startswith("labels18 warped to fixed17")
        assert np.allclose(mrml.ijk_to_ras(out), mrml.ijk_to_ras(label_runs.fixed))
        arr = mrml.node_array(out)
        assert set(np.unique(arr)) <= set(np.unique(mrml.node_array(label_runs.lab)))
        img = mrml.label_node_to_image(out, np.eye(4))
        dice[mode] = _dice(img, ref, ref_arr, labels)
        if mode == "affine":
            assert nodes.transform.IsA("vtkMRMLLinearTransformNode")
            assert nodes.transform.GetName() == "moving18 to fixed17 (DeepReg affine)" or \
                nodes.transform.GetName().startswith("moving18 to fixed17 (DeepReg affine)_")
    print("label map Dice", dice)
    assert dice["deformable"] > dice["affine"] + 0.03, dice


def test_every_run_added_distinct_names(label_runs):
    label_runs[("deformable", "segmentation")], label_runs[("affine", "segmentation")]
    label_runs.seg.SetName("segmentation18")
    scene = label_runs.scene
    names = [scene.GetNthNode(i).GetName() for i in range(scene.GetNumberOfNodes())
             if scene.GetNthNode(i).GetAttribute("DeepReg.Result") == "1"]
    assert len(names) == len(set(names)) >= 2, names
    warped = [scene.GetNthNode(i).GetName() for i in range(scene.GetNumberOfNodes())
              if scene.GetNthNode(i).GetName().startswith("segmentation18 warped to fixed17")]
    assert len(warped) == len(set(warped)) == 2, warped  # the second run did not reuse the first one's name


def test_masks_are_passed_on_their_images():
    scene = slicer.vtkMRMLScene()
    f, m = _brains(scene)
    flab = load_volume(scene, SAMPLE / "OASIS-TRT-20-17" / "labels.DKT31.manual+aseg.nii.gz", "labels17", True)
    mlab = load_volume(scene, SAMPLE / "OASIS-TRT-20-18" / "labels.DKT31.manual+aseg.nii.gz", "labels18", True)
    mseg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "mask18")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(mlab, mseg)
    req, _ = mrml.gather_inputs(f, m, fixed_mask=flab, moving_mask=mseg)
    assert req.fixed_mask.GetSize() == req.fixed.GetSize() and req.moving_mask.GetSize() == req.moving.GetSize()
    fm = sitk.GetArrayFromImage(req.fixed_mask)
    assert set(np.unique(fm)) == {0, 1}
    assert np.array_equal(fm, (mrml.node_array(flab) > 0).astype(np.uint8))  # same grid: identical
    mm = sitk.GetArrayFromImage(req.moving_mask)
    agree = (mm == (mrml.node_array(mlab) > 0)).mean()
    assert agree > 0.999, agree  # segmentation -> binary labelmap -> moving grid
    lines = []
    nodes = mrml.register_nodes_full(scene, f, m, device="cpu", mode="affine", fixed_mask=flab, moving_mask=mseg,
                                     log_line=lines.append)
    assert not any(line.startswith("warning: ") for line in lines)  # skull-stripped T1 brains: no warning
    assert nodes.transform.IsA("vtkMRMLLinearTransformNode")
    assert any("fixed mask" in line and "moving mask" in line for line in lines), lines


def test_labels_under_another_transform_are_refused():
    fixed, moving, *_ = build(CASES["translation"])
    scene = slicer.vtkMRMLScene()
    fnode = node_from_image(scene, fixed, "fixed")
    mnode = node_from_image(scene, moving, "moving")
    lab = node_from_image(scene, sitk.Cast(moving > 0.5, sitk.sitkInt16), "lab", "vtkMRMLLabelMapVolumeNode")
    lab.SetAndObserveTransformNodeID(linear_node(scene, rigid_ras()).GetID())
    with pytest.raises(InputError, match="same transform"):
        mrml.gather_inputs(fnode, mnode, moving_labels=lab)


# ----------------------------------------------------------------------------- outputs and errors
def test_transform_content_check():
    scene = slicer.vtkMRMLScene()
    assert not mrml.transform_node_has_content(scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "new grid"))
    assert not mrml.transform_node_has_content(scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "new linear"))
    assert mrml.transform_node_has_content(linear_node(scene, rigid_ras()))
    fixed, moving, result_w, *_ = build(CASES["translation"])
    assert mrml.transform_node_has_content(mrml.result_to_grid_transform_node(result_w, scene, "r"))


def _synthetic_outputs(scene, fixed, moving, result_w, **gather):
    fnode = node_from_image(scene, fixed, "fixed")
    mnode = node_from_image(scene, moving, "moving")
    req, info = mrml.gather_inputs(fnode, mnode, **gather)
    out = worker.RegistrationOutputs(result=result_w, world_result=result_w, mode="deformable")
    out.warped_volume = result_w.warp_image(req.moving)
    out.jacobian = result_w.jacobian_determinant()
    return fnode, mnode, info, out


def test_existing_output_nodes_untouched_when_apply_fails(monkeypatch):
    """Chosen output nodes are filled last: an error while adding new nodes leaves them (and the scene) as they were."""
    fixed, moving, result_w, *_ = build(CASES["oblique"])
    scene = slicer.vtkMRMLScene()
    existing_t = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "my transform")
    existing_v = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "my volume")
    fnode, mnode, info, out = _synthetic_outputs(scene, fixed, moving, result_w, output_transform=existing_t,
                                                 output_volume=existing_v, jacobian=True)
    ids = [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(mrml, "image_to_volume_node", boom)  # the det J node fails to be added
    with pytest.raises(RuntimeError, match="disk full"):
        mrml.apply_outputs(scene, info, out, set_moving_parent=True)
    assert [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())] == ids
    assert not mrml.transform_node_has_content(existing_t) and existing_v.GetImageData() is None
    assert mnode.GetParentTransformNode() is None
    monkeypatch.undo()
    nodes = mrml.apply_outputs(scene, info, out, set_moving_parent=True)
    assert nodes.transform is existing_t and mrml.transform_node_has_content(existing_t)
    assert existing_v.GetImageData() is not None and existing_v.GetName() == "moving warped to fixed"
    assert nodes.jacobian.GetName() == "moving to fixed (DeepReg det J)"


def test_output_transform_kind_must_match_mode():
    fixed, moving, *_ = build(CASES["translation"])
    scene = slicer.vtkMRMLScene()
    fnode = node_from_image(scene, fixed, "fixed")
    mnode = node_from_image(scene, moving, "moving")
    lin = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "lin")
    with pytest.raises(InputError, match="needs a non-linear one"):
        mrml.gather_inputs(fnode, mnode, output_transform=lin)
    mrml.gather_inputs(fnode, mnode, output_transform=lin, mode="affine")
    mrml.gather_inputs(fnode, mnode, output_transform=lin, mode="rigid")
    grid = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "grid")
    with pytest.raises(InputError, match="needs a vtkMRMLLinearTransformNode"):
        mrml.gather_inputs(fnode, mnode, output_transform=grid, mode="affine")
    for cls in ("vtkMRMLGridTransformNode", "vtkMRMLTransformNode", "vtkMRMLBSplineTransformNode"):
        mrml.gather_inputs(fnode, mnode, output_transform=scene.AddNewNodeByClass(cls))  # deformable: any non-linear
    mrml.gather_inputs(fnode, mnode, output_transform=scene.AddNewNodeByClass("vtkMRMLTransformNode"), mode="affine")


def test_bad_model_card_is_skipped_and_reported(tmp_path, monkeypatch):
    bad = tmp_path / "broken_model"
    bad.mkdir()
    (bad / "card.json").write_text("{ not json")
    monkeypatch.setenv("DEEPREG_MODELS_PATH", str(tmp_path))
    problems = []
    cards = mrml.list_model_cards(problems)
    from DeepRegLib import DEFAULT_MODEL
    assert DEFAULT_MODEL in cards and "broken_model" not in cards
    assert len(problems) == 1 and "broken_model" in problems[0] and "invalid model card" in problems[0]


# ----------------------------------------------------------------------------- the module's Logic, headless
@pytest.fixture(scope="module")
def logic_module(tmp_path_factory):
    import slicer_standins
    yield slicer_standins.load_deepreg(tmp_path_factory.mktemp("slicer"))
    slicer_standins.uninstall()


def _scene_state(scene):
    return [(scene.GetNthNode(i).GetID(), scene.GetNthNode(i).GetName()) for i in range(scene.GetNumberOfNodes())]


def test_logic_worker_job_on_real_mrml(logic_module, label_runs):
    """What the panel does, without Qt: prepare (main thread), a worker job polled to its end, apply."""
    DeepReg = logic_module
    scene = slicer.vtkMRMLScene()
    f, m = _brains(scene)
    lab = load_volume(scene, SAMPLE / "OASIS-TRT-20-18" / "labels.DKT31.manual+aseg.nii.gz", "labels18", True)
    sums = (checksum(f), checksum(m), checksum(lab))
    logic = DeepReg.DeepRegLogic()
    req, info = logic.prepare(f, m, device="cpu", movingLabels=lab, jacobian=True, affinePart=True)
    assert logic.domainWarnings(req) == []
    before = _scene_state(scene)
    job = logic.startJob(req)
    stages = []
    main_thread_only = []

    def on_event(ev):
        stages.append(ev.stage)
        main_thread_only.append(_scene_state(scene) == before)  # the worker never touched the scene

    assert job.run_to_end(on_event) == "done", job.error
    assert all(main_thread_only) and _scene_state(scene) == before
    nodes = logic.apply(info, job.result, setMovingParent=True)
    assert m.GetParentTransformNode() is nodes.transform
    assert {nodes.transform.GetName(), nodes.affine.GetName(), nodes.jacobian.GetName(),
            nodes.warped_labels.GetName()} == {"moving18 to fixed17 (DeepReg)", "moving18 to fixed17 (DeepReg affine)",
                                               "moving18 to fixed17 (DeepReg det J)", "labels18 warped to fixed17"}
    m.SetAndObserveTransformNodeID(None)
    assert (checksum(f), checksum(m), checksum(lab)) == sums
    assert "affine" in stages and "network" in stages and "importing PyTorch" in stages
    # the warped label map (nearest neighbour, fixed geometry) beats the affine-only warp of the same labels
    ref, ref_arr, labels = _fixed_labels()
    assert np.allclose(mrml.ijk_to_ras(nodes.warped_labels), mrml.ijk_to_ras(f))
    deformable = _dice(mrml.label_node_to_image(nodes.warped_labels, np.eye(4)), ref, ref_arr, labels)
    affine = _dice(mrml.segmentation_layers(label_runs[("affine", "segmentation")].warped_labels)[0].image,
                   ref, ref_arr, labels)
    assert deformable > affine + 0.03, (deformable, affine)


def test_logic_cancelled_job_leaves_the_scene_as_it_was(logic_module):
    DeepReg = logic_module
    scene = slicer.vtkMRMLScene()
    f, m = _brains(scene)
    existing = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "chosen output")
    logic = DeepReg.DeepRegLogic()
    req, info = logic.prepare(f, m, device="cpu", outputTransform=existing, jacobian=True)
    before = _scene_state(scene)
    job = logic.startJob(req)

    def on_event(ev):
        if ev.kind == "progress" and ev.stage == "affine":
            job.cancel()

    assert job.run_to_end(on_event) == "cancelled" and job.result is None
    assert job.wait(5.0)
    assert _scene_state(scene) == before and not mrml.transform_node_has_content(existing)
    assert m.GetParentTransformNode() is None


def test_logic_licence_accepted_once(logic_module, tmp_path, monkeypatch):
    DeepReg = logic_module
    card = DeepReg.modelCards()[0][DeepReg.DEFAULT_MODEL]
    lines = []
    store = tmp_path / "licences.json"
    # testing mode (ask=False): accepted for the run, never written into the user's record (defect 6)
    assert DeepReg.DeepRegLogic.ensureLicenceAccepted(card, ask=False, log=lines.append, storePath=store)
    assert len(lines) == 1 and "testing mode; not recorded" in lines[0] and not store.exists()
    # asked (a user clicking Accept): recorded once, not asked again
    asked = []
    monkeypatch.setattr(DeepReg, "_askLicence", lambda text: asked.append(text) or True)
    assert DeepReg.DeepRegLogic.ensureLicenceAccepted(card, ask=True, log=lines.append, storePath=store)
    assert DeepReg.DeepRegLogic.ensureLicenceAccepted(card, ask=True, log=lines.append, storePath=store)
    assert len(asked) == 1 and store.exists() and len(lines) == 2


def test_logic_torch_check_never_installs(logic_module, monkeypatch):
    DeepReg = logic_module
    DeepReg.DeepRegLogic.ensureTorch()  # installed here: nothing to do
    monkeypatch.setattr(DeepReg, "torchAvailable", lambda: False)
    with pytest.raises(Exception, match="PyTorch is not installed"):
        DeepReg.DeepRegLogic.ensureTorch()


def test_rerun_keeps_the_initial_transform_and_previous_parent():
    """Register twice (the panel's 'Register' clicked again): the second run finds the pre-alignment again."""
    fixed, moving, result_w, *_ = build(CASES["translation"])
    scene = slicer.vtkMRMLScene()
    fnode = node_from_image(scene, fixed, "fixed")
    mnode = node_from_image(scene, moving, "moving")
    pnode = move_under(scene, mnode, rigid_ras(8.0))
    nodes = []
    for _ in range(2):
        req, info = mrml.gather_inputs(fnode, mnode, set_moving_parent=True)
        assert info.initial_node is pnode and np.allclose(req.initial_ras, rigid_ras(8.0))
        out = worker.RegistrationOutputs(result=worker.compose_initial(result_w, req.initial_ras),
                                         world_result=result_w, mode="deformable")
        nodes.append(mrml.apply_outputs(scene, info, out, set_moving_parent=True).transform)
    assert mnode.GetParentTransformNode() is nodes[1] and nodes[0].GetName() != nodes[1].GetName()
    assert nodes[1].GetAttribute("DeepReg.PreviousParent") == pnode.GetID()  # "Show unwarped" goes back to it


def test_console_registration_warns_about_the_domain():
    """A 2D-like slab registered from the console (no dialog): a domain warning in the log, and it carries on."""
    scene = slicer.vtkMRMLScene()
    f, m = _brains(scene)
    arr = slicer.util.arrayFromVolume(m)[60:90].copy()  # 30 slices
    slab = node_from_image(scene, sitk.GetImageFromArray(arr.astype(np.float32)), "slab")
    lines = []
    nodes = mrml.register_nodes_full(scene, f, slab, device="cpu", mode="affine", log_line=lines.append)
    assert nodes.transform is not None
    assert any(line.startswith("warning: the moving image looks like a 2D-like slab") for line in lines), lines


def test_affine_initial_transform_places_the_moving_image_by_resampling():
    """An initial transform with scaling and shear cannot be folded into an image direction (it must be a
    rotation): the moving image is resampled through it, and a world point samples the voxel I^-1 sends it to."""
    fixed, moving, *_ = build(CASES["translation"])
    scene = slicer.vtkMRMLScene()
    fnode = node_from_image(scene, fixed, "fixed")
    mnode = node_from_image(scene, moving, "moving")
    A = rigid_ras(5.0)
    A[:3, :3] = A[:3, :3] @ np.array([[1.1, 0.05, 0.0], [0.0, 0.95, 0.02], [0.0, 0.0, 1.05]])
    init = linear_node(scene, A, "affine prealignment")
    req, info = mrml.gather_inputs(fnode, mnode, initial_transform=init)
    d = np.asarray(req.moving.GetDirection()).reshape(3, 3)
    assert np.allclose(d.T @ d, np.eye(3)) and info.initial_node is init and np.allclose(req.initial_ras, A)
    local = mrml.volume_node_to_image(mnode)
    centre = np.asarray(req.moving.TransformContinuousIndexToPhysicalPoint([s / 2 for s in req.moving.GetSize()]))
    for offset in ([0, 0, 0], [3.0, -2.0, 1.5], [-4.0, 2.5, -3.0]):
        p_world = centre + offset
        p_local = (FLIP @ np.linalg.inv(A) @ FLIP @ np.r_[p_world, 1.0])[:3]
        want = sitk.Resample(local, _one_voxel(p_local), sitk.Transform(), sitk.sitkLinear)[0, 0, 0]
        got = sitk.Resample(req.moving, _one_voxel(p_world), sitk.Transform(), sitk.sitkLinear)[0, 0, 0]
        assert abs(got - want) < 0.02 * (abs(want) + 1e-3) + 1e-4, (offset, got, want)


def _one_voxel(point) -> sitk.Image:
    ref = sitk.Image([1, 1, 1], sitk.sitkFloat32)
    ref.SetOrigin(tuple(float(v) for v in point))
    return ref
