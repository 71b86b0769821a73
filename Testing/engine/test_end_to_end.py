"""End to end on real brains: bundled sample pair (always) and ../shared/data (CI)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from DeepRegLib.bundles import DEFAULT_MODEL, list_models, load_bundle
from DeepRegLib.inference import register
from DeepRegLib.metrics import dice_summary
from DeepRegLib.qa import transform_folding

FOLDING_BOUND = 0.5  # percent of voxels with det J <= 0




def check_pair(fixed, moving, fixed_labels, moving_labels, model=DEFAULT_MODEL):
    res = register(fixed, moving, model=model, device="cpu")
    fl = sitk.ReadImage(str(fixed_labels))
    ml = sitk.ReadImage(str(moving_labels))
    d_aff = dice_summary(fl, res.warp_labels(ml, affine_only=True))
    d_def = dice_summary(fl, res.warp_labels(ml))
    assert d_aff["all"] > 0.3, f"affine stage failed: {d_aff}"
    assert d_def["all"] > d_aff["all"] + 0.01, f"deformable {d_def} not better than affine {d_aff}"
    fold = transform_folding(res.transform(), res.fixed)
    assert fold["folding_percent"] < FOLDING_BOUND
    return res, d_aff, d_def


BUNDLED = sorted(p.name for p in (Path(__file__).resolve().parents[2] / "Resources" / "models").iterdir()
                 if (p / "card.json").exists())


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_models_listed_with_cards(name):
    models = list_models()
    assert DEFAULT_MODEL in models and name in models
    card = load_bundle(name).card
    for key in ("input", "training", "licence", "architecture", "accuracy", "speed"):
        assert key in card, key
    assert card["training"]["validation_subjects"] and (card["training"].get("command") or card["training"].get("commands"))
    assert card["speed"].get("register_s_median"), f"{name}: speed not measured"
    if card.get("task", "brain") == "brain":
        assert card["accuracy"].get("dice_deformable"), \
            f"{name}: accuracy not measured (benchmarks/bench_register.py --model {name} --update-card)"
    else:  # another task's benchmark through register(), e.g. benchmarks/bench_prostate.py --update-card
        assert card["accuracy"]["validation"]["default"] and card["accuracy"]["benchmark"].startswith("benchmarks/")


def test_default_model_card_names_teacher_method_licence_and_its_refinement():
    """The default bundle descends from a distilled student: its card (written by the export and the
    benchmarks, not by hand) names its lineage back to a bundle whose card names the teacher and the
    distillation method, and the data licence; the few-step refinement it runs by default was measured on
    the validation pairs (where it was chosen, possibly for the bundle it carries it from), where it beat
    the network alone, and the default's own benchmark shows the same."""
    from DeepRegLib.bundles import card_refinement
    from DeepRegLib.refine import RefineConfig
    card = load_bundle(DEFAULT_MODEL).card
    distilled, seen = card, []
    while not distilled.get("teacher"):  # back through each card's lineage to the bundle it started from
        bundles = [step["bundle"] for step in distilled["training"].get("lineage") or [] if "bundle" in step]
        assert bundles and bundles[-1] not in seen, f"no distilled student in the lineage {seen}"
        seen.append(bundles[-1])
        distilled = load_bundle(bundles[-1]).card
    assert distilled["training"].get("teacher"), "no distilled student in the lineage"
    assert "distillation" in distilled["training"]["method"] and "Mindboggle" in card["licence"]
    if card.get("settings_from"):
        # the inherited default plus every change the card records after it (in order) is the default
        expected = dict(load_bundle(card["settings_from"]).card["refinement"]["default"])
        for change in card["refinement"].get("default_changes") or []:
            assert change["by"].startswith("python benchmarks/"), change
            expected.update(change["changes"])
        assert card["refinement"]["default"] == expected
    cfg = card_refinement(card)
    if cfg is not None:
        block = card["refinement"]
        val = block["validation"]
        # settings added after the card was written take their (no-op) defaults
        assert {**RefineConfig().to_dict(), **block["default"]} == cfg.to_dict() and block["measured_by"].startswith("python benchmarks/tune_refine.py")
        assert val["refined"]["subcortical"] > val["network"]["subcortical"]
        assert val["refined"]["folding_percent_1mm"] < 0.05
        net = card["accuracy"].get("network_only")
        assert net and card["accuracy"]["dice_deformable"]["subcortical"] > net["subcortical"], \
            "the benchmark's default call is not better than the network alone"


def _task(name: str) -> str:
    card = json.loads((Path(__file__).resolve().parents[2] / "Resources" / "models" / name / "card.json").read_text())
    return card.get("task", "brain")


@pytest.mark.parametrize("name", [n for n in BUNDLED if n != DEFAULT_MODEL and _task(n) == "brain"])
def test_every_other_bundled_model_registers_the_sample_pair(name, sample_pair):
    """Every bundled brain model on the sample brains (other tasks' models: their own tests, e.g. the
    prostate demo in test_taskspec.py)."""
    check_pair(sample_pair["fixed"]["image"], sample_pair["moving"]["image"], sample_pair["fixed"]["labels"],
               sample_pair["moving"]["labels"], model=name)


def test_shared_pair_improves_over_affine(shared_mindboggle):
    # validation subject 19 against 17: not the bundled demo pair
    s = lambda n: shared_mindboggle / f"OASIS-TRT-20-{n}"
    check_pair(s(19) / "t1weighted_brain.nii.gz", s(17) / "t1weighted_brain.nii.gz",
               s(19) / "labels.DKT31.manual+aseg.nii.gz", s(17) / "labels.DKT31.manual+aseg.nii.gz")


def test_recovers_known_affine_on_real_brain(sample_pair, tmp_path):
    """Moving = fixed brain under a known rotation + translation, stored with an oblique direction and
    anisotropic spacing: the result must map fixed points to the known moving points (within ~2 mm)."""
    fixed = sitk.ReadImage(str(sample_pair["fixed"]["image"]), sitk.sitkFloat32)
    known = sitk.Euler3DTransform((0.0, 0.0, 0.0), 0.12, -0.08, 0.1, (6.0, -4.0, 8.0))
    known.SetCenter(fixed.TransformContinuousIndexToPhysicalPoint([s / 2 for s in fixed.GetSize()]))
    # the moving grid: oblique direction, anisotropic spacing, covering the moved brain
    d = sitk.VersorTransform((0.3, 1.0, 0.2), 0.4).GetMatrix()
    ref = sitk.Image([170, 200, 130], sitk.sitkFloat32)
    ref.SetSpacing((1.3, 1.1, 1.6))
    ref.SetDirection(d)
    centre = np.asarray(known.GetInverse().TransformPoint(known.GetCenter()))
    half = np.asarray(d).reshape(3, 3) @ (np.asarray([170 * 1.3, 200 * 1.1, 130 * 1.6]) / 2)
    ref.SetOrigin(tuple(centre - half))
    moving = sitk.Resample(fixed, ref, known.GetInverse(), sitk.sitkLinear, 0.0)
    # the fixed point p is seen in the moving image at q = known(p):
    res = register(fixed, moving, device="cpu")
    arr = sitk.GetArrayViewFromImage(fixed)
    kk, jj, ii = np.nonzero(arr > np.percentile(arr[arr > 0], 50))
    sel = np.random.default_rng(0).choice(len(ii), 400, replace=False)
    pts = np.array([fixed.TransformIndexToPhysicalPoint((int(ii[s]), int(jj[s]), int(kk[s]))) for s in sel])
    want = np.array([known.TransformPoint(tuple(p)) for p in pts])
    err = np.linalg.norm(res.map_points(pts) - want, axis=1)
    assert np.median(err) < 2.0, f"median error {np.median(err):.2f} mm"
    # and ITK's reading of the written file agrees with the engine
    h5 = tmp_path / "t.h5"
    res.write_transform(str(h5))
    t = sitk.ReadTransform(str(h5))
    itk = np.array([t.TransformPoint(tuple(p)) for p in pts])
    assert np.abs(itk - res.map_points(pts)).max() < 1e-3


def test_cli_register_writes_files_that_resample_identically(sample_pair, tmp_path):
    p = sample_pair
    t, w, wl = tmp_path / "T.h5", tmp_path / "W.nii.gz", tmp_path / "WL.nii.gz"
    proc = subprocess.run([sys.executable, "-m", "DeepRegLib.cli", "register", "--fixed", str(p["fixed"]["image"]),
                           "--moving", str(p["moving"]["image"]), "--output-transform", str(t),
                           "--output-warped", str(w), "--moving-labels", str(p["moving"]["labels"]),
                           "--output-warped-labels", str(wl), "--device", "cpu"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "timings" in proc.stderr and proc.stdout == ""
    fixed = sitk.ReadImage(str(p["fixed"]["image"]), sitk.sitkFloat32)
    moving = sitk.ReadImage(str(p["moving"]["image"]), sitk.sitkFloat32)
    again = sitk.Resample(moving, fixed, sitk.ReadTransform(str(t)), sitk.sitkLinear, 0.0)
    written = sitk.ReadImage(str(w), sitk.sitkFloat32)
    assert np.abs(sitk.GetArrayViewFromImage(again) - sitk.GetArrayViewFromImage(written)).max() < 1e-3
    ev = subprocess.run([sys.executable, "-m", "DeepRegLib.cli", "evaluate", "--fixed-labels",
                         str(p["fixed"]["labels"]), "--warped-labels", str(wl), "--transform", str(t)],
                        capture_output=True, text=True, timeout=300)
    assert ev.returncode == 0, ev.stderr
    out = json.loads(ev.stdout)
    assert out["dice"]["all"] > 0.3 and out["folding_percent"] < FOLDING_BOUND
    # deepreg warp reproduces the label warp
    w2 = tmp_path / "WL2.nii.gz"
    wp = subprocess.run([sys.executable, "-m", "DeepRegLib.cli", "warp", "--input", str(p["moving"]["labels"]),
                         "--reference", str(p["fixed"]["image"]), "--transform", str(t), "--output", str(w2),
                         "--labels"], capture_output=True, text=True, timeout=300)
    assert wp.returncode == 0, wp.stderr
    assert np.array_equal(sitk.GetArrayViewFromImage(sitk.ReadImage(str(w2))),
                          sitk.GetArrayViewFromImage(sitk.ReadImage(str(wl))))


def test_cli_affine_mode_with_fixed_mask(sample_pair, tmp_path):
    """--mode affine writes a linear transform; --fixed-mask (here the fixed label map) is accepted and used."""
    p = sample_pair
    out = {}
    for name, extra in (("plain", []), ("masked", ["--fixed-mask", str(p["fixed"]["labels"])])):
        t = tmp_path / f"{name}.h5"
        proc = subprocess.run([sys.executable, "-m", "DeepRegLib.cli", "register", "--fixed", str(p["fixed"]["image"]),
                               "--moving", str(p["moving"]["image"]), "--output-transform", str(t), "--device", "cpu",
                               "--mode", "affine", *extra], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        tf = sitk.ReadTransform(str(t))
        comp = sitk.CompositeTransform(tf)
        assert comp.GetNumberOfTransforms() == 1 and comp.GetNthTransform(0).GetName() == "AffineTransform"
        out[name] = np.array(comp.GetNthTransform(0).GetParameters())
    assert not np.allclose(out["plain"], out["masked"])
    bad = subprocess.run([sys.executable, "-m", "DeepRegLib.cli", "register", "--fixed", str(p["fixed"]["image"]),
                          "--moving", str(p["moving"]["image"]), "--output-transform", str(tmp_path / "x.h5"),
                          "--mode", "affine", "--refine"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "refine" in bad.stderr


def test_demo_runs_and_writes_pictures(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "DeepRegLib.cli", "demo", "--output-dir", str(tmp_path),
                           "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "deepreg" in proc.stdout and "transform" in proc.stdout
    from DeepRegLib.bundles import card_refinement
    if card_refinement(load_bundle(DEFAULT_MODEL).card) is not None:  # the default call's refinement is reported
        assert "refinement" in proc.stdout and "(model default)" in proc.stdout, proc.stdout
    report = json.loads((tmp_path / "demo.json").read_text())
    assert report["dice_deformable"]["all"] > report["dice_affine"]["all"] > report["dice_unregistered"]["all"]
    for png in ("checkerboard.png", "difference.png"):
        img = sitk.ReadImage(str(tmp_path / png))
        assert img.GetNumberOfComponentsPerPixel() == 3 and img.GetSize()[0] > 200


@pytest.mark.parametrize("command,quick", [("models", True), ("batch", False)])
def test_cli_finish_keeps_status_and_output(command, quick):
    """One-shot commands end without the interpreter's teardown (os._exit) but keep their exit status
    and everything they printed; other commands (batch: Dask) exit normally (atexit handlers run)."""
    code = ("import atexit, sys; from DeepRegLib.cli import finish; "
            "atexit.register(lambda: print('ATEXIT', file=sys.stderr)); "
            f"print('partial line', end=''); print('on stderr', end='', file=sys.stderr); finish([{command!r}], 3)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3 and proc.stdout == "partial line", (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("on stderr") and ("ATEXIT" in proc.stderr) == (not quick), proc.stderr
