"""A model bundle defines its task: grid, normalisation per input, affine metric, modalities.

The brain model must behave exactly as before (checked against an independent copy of the
pre-task-spec pipeline); the new settings have known-answer tests on synthetic images; the
prostate demo runs on the bundled MR-US sample pair.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from DeepRegLib import transforms as tr
from DeepRegLib.affine import AffineConfig, affine_register, to_affine
from DeepRegLib.bundles import load_bundle
from DeepRegLib.grid import centred_grid, physical_bounding_box
from DeepRegLib.inference import register
from DeepRegLib.pipeline import InputSpec, prepare_pair
from DeepRegLib.preprocess import Normalisation, foreground_centre, resample_to_grid
from DeepRegLib.bundles.taskspec import BUILTIN_TASKS, TaskSpec, card_fragment, card_tasks

from conftest import REPO


# ----------------------------------------------------------------------------- brain: unchanged
def test_brain_card_gives_the_legacy_settings():
    b = load_bundle("ldr_brain_v1")
    spec = b.task
    assert spec.input == InputSpec(2.0, (80, 96, 80), Normalisation("percentile", 1.0, 99.0))
    assert spec.input.placement == "foreground" and spec.input.moving_normalisation is None
    assert spec.affine.metric == "correlation" and spec.affine.initialisation == "moments"
    assert spec.affine.iterations == 200 and spec.affine.sampling_fraction == 0.15
    assert not spec.multimodal
    # the brain spec serialises as before (cards and training-cache keys unchanged)
    assert set(spec.input.to_dict()) == {"spacing", "size", "normalisation"}
    assert TaskSpec.from_card(json.loads(json.dumps(card_fragment(BUILTIN_TASKS["prostate"])))) == BUILTIN_TASKS["prostate"]


def _legacy_register(fixed: sitk.Image, moving: sitk.Image, net: torch.nn.Module):
    """The pipeline before task specs, written out independently: moments + correlation affine at 4 mm
    (the fixed image on an identity-direction 4 mm grid over its foreground box, since the grid-invariance fix),
    foreground-centred 80x96x80 grid at 2 mm, 1-99 percentile normalisation, the network, the taper."""
    def coarse(img):
        f = [max(1, int(round(4.0 / s))) for s in img.GetSpacing()]
        small = sitk.Cast(sitk.BinShrink(img, f), sitk.sitkFloat32)
        arr = sitk.GetArrayViewFromImage(img)
        k, j, i = (np.nonzero((arr > arr.min()).any(axis=ax))[0] for ax in ((1, 2), (0, 2), (0, 1)))
        corners = np.array([img.TransformContinuousIndexToPhysicalPoint((float(a), float(b), float(c)))
                            for a in (i[0], i[-1]) for b in (j[0], j[-1]) for c in (k[0], k[-1])])
        lo = np.floor(corners.min(0) / 4.0) * 4.0 - 8.0  # on the physical 4 mm lattice, 2 voxels wider
        hi = np.ceil(corners.max(0) / 4.0) * 4.0 + 8.0
        ref = sitk.Image([int(np.ceil((h - l) / 4.0)) + 1 for l, h in zip(lo, hi)], sitk.sitkFloat32)
        ref.SetOrigin(tuple(lo))
        ref.SetSpacing((4.0, 4.0, 4.0))
        background = float(sitk.GetArrayViewFromImage(small).min())
        return sitk.Resample(small, ref, sitk.Transform(), sitk.sitkLinear, background, sitk.sitkFloat32)
    f = coarse(fixed)  # the metric's domain: the fixed image on the canonical grid
    m = sitk.Cast(sitk.BinShrink(moving, [max(1, int(round(4.0 / s))) for s in moving.GetSpacing()]), sitk.sitkFloat32)
    init = sitk.CenteredTransformInitializer(f, m, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsCorrelation()
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.15, 1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-4, 200, relaxationFactor=0.7)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(init, inPlace=False)
    affine = to_affine(reg.Execute(f, m))
    grid = centred_grid(np.round(foreground_centre(fixed) / 2.0) * 2.0, 2.0, (80, 96, 80))  # on the 2 mm lattice
    norm = Normalisation("percentile", 1.0, 99.0)
    a = norm.apply(resample_to_grid(fixed, grid))
    b = norm.apply(resample_to_grid(moving, grid, affine))
    with torch.inference_mode():
        flow, _ = net(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None])
    return affine, tr.taper_border(tr.flow_to_displacement(flow, grid)), grid


def test_brain_model_output_identical_to_the_pipeline_before_task_specs(sample_pair):
    fixed = sitk.ReadImage(str(sample_pair["fixed"]["image"]), sitk.sitkFloat32)
    moving = sitk.ReadImage(str(sample_pair["moving"]["image"]), sitk.sitkFloat32)
    res = register(fixed, moving, model="ldr_brain_v1", device="cpu")
    affine, disp, grid = _legacy_register(fixed, moving, load_bundle("ldr_brain_v1").network("cpu"))
    assert res.affine.GetParameters() == affine.GetParameters()
    assert res.grid == grid
    assert np.array_equal(res.displacement, disp)
    assert any("task brain" in line and "correlation" in line for line in res.log)


# ----------------------------------------------------------------------------- new settings
def _blob_image(size=(48, 40, 44), spacing=(2.0, 2.0, 2.0), origin=(0.0, 0.0, 0.0), shift=(0.0, 0.0, 0.0),
                invert=False, direction=None) -> sitk.Image:
    """Smooth blobs at fixed physical places (shifted by ``shift`` mm)."""
    img = sitk.Image(list(size), sitk.sitkFloat32)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    idx = np.indices(size[::-1]).reshape(3, -1)[::-1].T.astype(float)
    pts = np.array([img.TransformContinuousIndexToPhysicalPoint(tuple(p)) for p in idx[::1]]) - np.asarray(shift)
    val = np.zeros(len(pts))
    for c, r, a in (((30, 30, 30), 12, 1.0), ((60, 45, 40), 8, 0.6), ((45, 25, 55), 6, 0.8)):
        val += a * np.exp(-np.sum((pts - np.array(c)) ** 2, 1) / (2 * r * r))
    if invert:
        val = 1.2 - val
    arr = val.reshape(size[::-1]).astype(np.float32)
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    return out


def test_image_centre_placement_and_moving_normalisation():
    d = (0.0, 0.0, 1.0, 0.0, 1.0, 0.0, -1.0, 0.0, 0.0)  # oblique-free permutation, so the box is not the index box
    fixed = _blob_image(direction=d, origin=(10.0, -5.0, 3.0))
    moving = _blob_image(shift=(1.0, 0.0, 0.0))
    spec = InputSpec(2.0, (16, 16, 16), Normalisation("percentile", 1.0, 99.0), placement="image_centre",
                     moving_normalisation=Normalisation("window", 0.0, 2.0))
    prep = prepare_pair(fixed, moving, spec, affine=sitk.AffineTransform(3))
    lo, hi = physical_bounding_box(fixed)
    centre = np.asarray(prep.grid.origin) + 2.0 * (np.asarray(prep.grid.size) - 1) / 2
    assert np.allclose(centre, (lo + hi) / 2)
    raw = resample_to_grid(moving, prep.grid, sitk.AffineTransform(3))
    assert np.allclose(prep.moving, np.clip(raw / 2.0, 0, 1))  # the window, not percentiles, for the moving image
    assert prep.fixed.max() == 1.0 and prep.fixed.min() == 0.0
    back = InputSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert back == spec
    with pytest.raises(ValueError):
        prepare_pair(fixed, moving, InputSpec(2.0, (8, 8, 8), placement="nowhere"), affine=sitk.AffineTransform(3))


def test_geometry_initialisation_only_is_centre_alignment():
    fixed = _blob_image(size=(20, 30, 20), origin=(0.0, 0.0, 0.0))
    moving = _blob_image(size=(40, 30, 30), origin=(-7.0, 3.0, 11.0))
    t = affine_register(fixed, moving, AffineConfig(spacing=2.0, iterations=0, initialisation="geometry"))
    (flo, fhi), (mlo, mhi) = physical_bounding_box(fixed), physical_bounding_box(moving)
    assert np.allclose(t.TransformPoint(tuple((flo + fhi) / 2)), (mlo + mhi) / 2, atol=1e-6)
    assert np.allclose(np.array(t.GetMatrix()), np.eye(3).ravel())


def test_mattes_metric_recovers_a_translation_across_a_non_monotonic_contrast():
    """moving = |fixed - 0.35| shifted by (5, -4, 3) mm: mutual information aligns it, correlation does not."""
    fixed = _blob_image()
    shifted = _blob_image(shift=(5.0, -4.0, 3.0))
    moving = sitk.GetImageFromArray(np.abs(sitk.GetArrayFromImage(shifted) - 0.35).astype(np.float32))
    moving.CopyInformation(shifted)
    p = (48.0, 40.0, 44.0)  # mm, among the blobs

    def error(metric: str) -> float:
        cfg = AffineConfig(spacing=2.0, shrink_levels=(2, 1), smoothing_sigmas=(1.0, 0.0), iterations=200,
                           learning_rate=1.0, sampling_fraction=1.0, metric=metric, initialisation="geometry")
        t = affine_register(fixed, moving, cfg)
        return float(np.linalg.norm(np.array(t.TransformPoint(p)) - (np.array(p) + (5.0, -4.0, 3.0))))
    assert error("mattes") < 1.0
    assert error("correlation") > 2.0  # the brain models' metric is wrong for such a pair
    with pytest.raises(ValueError):
        affine_register(fixed, moving, AffineConfig(metric="nope"))


def test_card_tasks():
    assert card_tasks({}) == ["brain"]
    assert card_tasks({"task": "prostate"}) == ["prostate"]
    assert card_tasks({"task": "universal", "tasks": ["brain", "prostate"]}) == ["universal", "brain", "prostate"]


# ----------------------------------------------------------------------------- prostate demo
def test_prostate_demo_without_a_prostate_model(tmp_path, capsys, monkeypatch):
    """Where no bundle lists the prostate task, the demo says so and runs the affine stage alone."""
    import DeepRegLib.demos.prostate as demo
    from DeepRegLib.cli import main
    monkeypatch.setattr(demo, "prostate_models", lambda: [])
    assert (REPO / "Resources" / "SampleData" / "prostate-mr-us-case000025" / "fixed_us.nii.gz").exists()
    assert main(["demo", "--task", "prostate", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no bundled model is made for the prostate" in out
    rep = json.loads((tmp_path / "demo.json").read_text())
    r = rep["results"]
    centre, none = r["centre alignment (task affine stage)"], r["unregistered"]
    assert centre["gland_dice"] > none["gland_dice"] + 0.2 and centre["landmark_tre_mm"] < none["landmark_tre_mm"]
    assert centre["landmarks"] == 2
    t = sitk.ReadTransform(str(tmp_path / "transform.h5"))
    fixed = sitk.ReadImage(rep["fixed"])
    warped = sitk.ReadImage(str(tmp_path / "warped.nii.gz"))
    moving = sitk.ReadImage(rep["moving"], sitk.sitkFloat32)
    again = sitk.Resample(moving, fixed, t, sitk.sitkLinear, 0.0)
    assert np.allclose(sitk.GetArrayFromImage(again), sitk.GetArrayFromImage(warped), atol=1e-3)


def _prostate_bundle(folder) -> str:
    """A bundle whose card defines the prostate task (untrained LDR weights: the engine path is under test)."""
    from DeepRegLib.models import build_network, count_parameters
    net = build_network("ldr", 1)
    folder.mkdir(parents=True)
    torch.save({k: v.half() for k, v in net.state_dict().items()}, folder / "weights.pt")
    card = {"name": folder.name, "description": "test bundle for the prostate task (untrained)", "weights": "weights.pt",
            "architecture": {"name": "ldr", "cascades": 1, "parameters": count_parameters(net)},
            **card_fragment(BUILTIN_TASKS["prostate"])}
    (folder / "card.json").write_text(json.dumps(card))
    return str(folder)


def test_a_prostate_bundle_defines_grid_and_affine_stage(tmp_path, monkeypatch, capsys):
    from DeepRegLib.demos.prostate import prostate_models, sample_paths
    path = _prostate_bundle(tmp_path / "models" / "prostate_test")
    p = sample_paths()
    fixed = sitk.ReadImage(str(p["fixed"]), sitk.sitkFloat32)
    moving = sitk.ReadImage(str(p["moving"]), sitk.sitkFloat32)
    res = register(fixed, moving, model=path, device="cpu")
    # grid from the card: 48x64x48 at 0.4 mm on the centre of the US image's box; the written field
    # keeps all of it and continues 4 voxels beyond (field.margin_voxels: the grid is the whole image)
    lo, hi = physical_bounding_box(fixed)
    assert load_bundle(path).task.field_margin == 4 and any("continued 4 voxels" in line for line in res.log)
    assert res.grid.size == (56, 72, 56) and res.grid.spacing == (0.4, 0.4, 0.4)
    assert np.allclose(np.asarray(res.grid.origin) + 0.4 * (np.asarray(res.grid.size) - 1) / 2, (lo + hi) / 2)
    # affine stage from the card: centre alignment of the two boxes (no optimisation)
    mlo, mhi = physical_bounding_box(moving)
    assert np.allclose(res.affine.TransformPoint(tuple((lo + hi) / 2)), (mlo + mhi) / 2, atol=1e-6)
    assert any("task prostate: fixed US / moving MR" in line for line in res.log)
    # the demo finds a bundle whose card names the prostate task and registers deformably with it
    monkeypatch.setenv("DEEPREG_MODELS_PATH", str(tmp_path / "models"))
    assert prostate_models()[0] == "prostate_test" and "prostate_mrus" in prostate_models()
    from DeepRegLib.cli import main
    assert main(["demo", "--task", "prostate", "--output-dir", str(tmp_path / "demo"), "--device", "cpu"]) == 0
    rep = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert rep["model"] == "prostate_test" and "note" not in rep
    assert "DeepReg prostate_test" in rep["results"]


@pytest.mark.parametrize("model, name", [(None, "prostate_mrus"), ("universal", "universal:prostate")])
def test_prostate_demo_registers_the_sample_with_the_bundled_model(tmp_path, capsys, model, name):
    """``deepreg demo --task prostate`` uses the bundled prostate_mrus (its card: the prostate task, a
    mutual-information refinement) on the sample pair, test case 25, never used for training or any choice;
    ``--model universal`` the universal model's prostate task: the deformable result beats the task's
    centre alignment on gland Dice and on landmark TRE, and the written transform reproduces the written
    warped image."""
    from DeepRegLib.cli import main
    b = load_bundle(name)
    assert b.task.name == "prostate" and b.card["refinement"]["default"]["similarity"] == "mi"
    assert main(["demo", "--task", "prostate", "--output-dir", str(tmp_path), "--device", "cpu"]
                + (["--model", model] if model else [])) == 0
    out = capsys.readouterr().out
    assert f"DeepReg {name}" in out and "no bundled model" not in out
    rep = json.loads((tmp_path / "demo.json").read_text())
    centre, ours = rep["results"]["centre alignment (task affine stage)"], rep["results"][f"DeepReg {name}"]
    assert ours["gland_dice"] > centre["gland_dice"] + 0.1, (centre, ours)
    assert ours["landmark_tre_mm"] < centre["landmark_tre_mm"] - 0.5, (centre, ours)
    t = sitk.ReadTransform(str(tmp_path / "transform.h5"))
    fixed, moving = sitk.ReadImage(rep["fixed"]), sitk.ReadImage(rep["moving"], sitk.sitkFloat32)
    again = sitk.Resample(moving, fixed, t, sitk.sitkLinear, 0.0)
    assert np.allclose(sitk.GetArrayFromImage(again), sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "warped.nii.gz"))),
                       atol=1e-3)


def test_full_refine_keeps_the_cards_similarity_and_the_listing_names_task_accuracy():
    """``refine=True`` with a multimodal model runs the full refinement with the card's similarity (MI for
    prostate_mrus), not the NCC meant for one contrast; brain models keep NCC. ``deepreg models`` states the
    prostate model's measured gland Dice and TRE."""
    from DeepRegLib.inference import resolve_refinement
    prostate, brain = load_bundle("prostate_mrus"), load_bundle("ldr_brain_v2")
    cfg, label = resolve_refinement(True, prostate)
    assert label == "full" and cfg.similarity == "mi" and cfg.max_steps == 20
    assert resolve_refinement(True, brain)[0].similarity == "ncc"
    assert resolve_refinement(None, prostate)[0].similarity == "mi" and resolve_refinement(False, prostate)[0] is None
    acc = prostate.card["accuracy"]
    text = prostate.summary
    assert f"validation gland Dice {acc['validation']['default']['gland_dice']:.3f}" in text
    assert f"test gland Dice {acc['test']['default']['gland_dice']:.3f}" in text
    assert "subcortical" in brain.summary


def test_cli_registers_a_prostate_pair_with_its_model(tmp_path, capsys):
    """``deepreg register --model prostate_mrus`` on the sample MR -> US pair: the written .h5 maps the
    moving gland onto the fixed one better than the task's centre alignment."""
    from DeepRegLib.cli import main
    from DeepRegLib.demos.prostate import evaluate, label_channels, sample_paths
    p = sample_paths()
    out = tmp_path / "t.h5"
    assert main(["register", "--fixed", str(p["fixed"]), "--moving", str(p["moving"]), "--model", "prostate_mrus",
                 "--device", "cpu", "--output-transform", str(out), "--output-warped", str(tmp_path / "w.nii.gz")]) == 0
    printed = capsys.readouterr()
    assert "task prostate" in printed.out + printed.err and out.exists()
    fch, mch = label_channels(p["fixed_labels"]), label_channels(p["moving_labels"])
    fixed = sitk.ReadImage(str(p["fixed"]), sitk.sitkFloat32)
    centre = affine_register(fixed, sitk.ReadImage(str(p["moving"]), sitk.sitkFloat32), BUILTIN_TASKS["prostate"].affine)
    ours, base = evaluate(sitk.ReadTransform(str(out)), fch, mch), evaluate(centre, fch, mch)
    assert ours["gland_dice"] > base["gland_dice"] + 0.1 and ours["landmark_tre_mm"] < base["landmark_tre_mm"], (base, ours)
    assert sitk.ReadImage(str(tmp_path / "w.nii.gz")).GetSize() == fixed.GetSize()
