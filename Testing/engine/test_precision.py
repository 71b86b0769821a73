"""Precision with known answers (issue 24): an image registered to itself is not moved, a rigid motion
is recovered by the rigid stage, the refinement never ends above its start and says when it stalls.

Accuracy at scale is measured by ``benchmarks/bench_precision.py``; these are the seconds-long checks.
"""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from DeepRegLib import known_motion as km
from DeepRegLib.affine import AffineConfig, affine_register
from DeepRegLib.inference import register
from DeepRegLib.refine import RefineConfig, refine_flow, similarity_loss


@pytest.fixture(scope="module")
def brain(sample_pair) -> sitk.Image:
    return sitk.ReadImage(str(sample_pair["fixed"]["image"]), sitk.sitkFloat32)


@pytest.fixture(scope="module")
def points(brain) -> np.ndarray:
    return km.brain_points(brain, step=6)


def test_identical_images_give_the_identity(brain, points):
    res = register(brain, brain, device="cpu")
    moved = np.linalg.norm(res.map_points(points) - points, axis=1)
    assert moved.max() <= 0.1, f"an image registered to itself moved by up to {moved.max():.3f} mm"
    assert any("starts from the affine stage alone" in line for line in res.log), res.log


def test_rigid_mode_recovers_a_translated_copy(brain, points):
    truth = km.rigid_motion((0.0, 0.0, 0.0), (3.5, -2.25, 4.0), km.centre_of(brain))
    pair = km.make_pair(brain, truth, seed=1, noise=0.0, intensity_scale=1.0, bias=0.0)
    res = register(pair.fixed, pair.moving, device="cpu", mode="rigid")
    assert res.displacement is None and res.mode == "rigid"
    err = km.mapping_error(res.map_points(points), truth, points)
    assert err["max"] <= 0.2, err
    m = np.asarray(res.affine.GetMatrix()).reshape(3, 3)
    assert np.allclose(m @ m.T, np.eye(3), atol=1e-6), "a rigid result must have an orthonormal matrix"


def test_rigid_stage_is_more_precise_than_the_coarse_affine(brain, points):
    """The last 2 mm level: a rotated and shifted copy with noise, intensity and bias changes."""
    truth = km.rigid_motion((4.0, -3.0, 2.0), (3.0, -4.0, 2.0), km.centre_of(brain))
    pair = km.make_pair(brain, truth, seed=2)
    coarse = km.mapping_error(km.map_points(affine_register(pair.fixed, pair.moving, AffineConfig()), points),
                              truth, points)
    fine = km.mapping_error(km.map_points(affine_register(pair.fixed, pair.moving, AffineConfig(fine_spacing=2.0),
                                                         kind="rigid"), points), truth, points)
    assert fine["mean"] <= 0.15, fine
    assert fine["mean"] < coarse["mean"], (fine, coarse)


def _blobs(shift: float = 0.0) -> torch.Tensor:
    z, y, x = torch.meshgrid(*(torch.arange(24, dtype=torch.float32),) * 3, indexing="ij")
    img = torch.zeros(24, 24, 24)
    for cz, cy, cx, r in ((8, 9, 10, 4.0), (15, 14, 12, 5.0), (12, 16, 17, 3.0)):
        img += torch.exp(-((z - cz) ** 2 + (y - cy - shift) ** 2 + (x - cx) ** 2) / (2 * r * r))
    return img[None, None]


def test_refinement_never_ends_above_its_start():
    fixed, moving = _blobs(), _blobs(1.5)
    start = torch.zeros(1, 3, 24, 24, 24)
    cfg = RefineConfig(max_steps=8, learning_rate=2.0, ncc_window_mm=10.0, identity_start=False)
    out = refine_flow(fixed, moving, start, 2.0, cfg)
    before = similarity_loss(fixed, moving, start, 2.0, cfg)
    after = similarity_loss(fixed, moving, out.flow, 2.0, cfg)
    assert after <= before + 1e-6, (before, after)
    assert min(out.losses) <= out.losses[0]
    # a wildly large step size makes every step worse: the start must come back unchanged
    wild = refine_flow(fixed, moving, start, 2.0, RefineConfig(max_steps=4, learning_rate=500.0, identity_start=False))
    assert similarity_loss(fixed, moving, wild.flow, 2.0, cfg) <= before + 1e-6


#: the local NCC of the default card: at most 1, highest for identical images (RefineConfig.ncc_min_std)
EXACT_NCC = dict(ncc_eps=1e-12, ncc_min_std=0.03, identity_start=True)


def test_a_stalled_refinement_is_reported(brain):
    res = register(brain, brain, device="cpu", refine=RefineConfig(max_steps=3, control_factor=2, **EXACT_NCC))
    assert any("no step improved" in line for line in res.log), res.log
    assert res.displacement is not None and np.abs(res.displacement).max() <= 0.1


def test_the_older_ncc_rewards_deforming_identical_images(brain):
    """Why the card sets ncc_min_std / ncc_eps: with eps 1e-5 against window variances of [0, 1] images, a warp
    that adds local contrast raises the NCC, so identical images are not its optimum (the refinement moves
    them); with the exact form nothing improves on the identity (test_a_stalled_refinement_is_reported)."""
    res = register(brain, brain, device="cpu", refine=RefineConfig(max_steps=3, control_factor=2, identity_start=True))
    assert any("starts from the affine stage alone" in line for line in res.log), res.log
    assert not any("no step improved" in line for line in res.log), res.log
    assert np.abs(res.displacement).max() > 0.1


def test_identity_start_chooses_the_better_start():
    """Started from a wrong flow on identical images, the refinement starts from no deformation instead."""
    img = _blobs()
    wrong = torch.zeros(1, 3, 24, 24, 24)
    wrong[:, 1] = 2.0
    out = refine_flow(img, img, wrong, 2.0, RefineConfig(max_steps=2, **EXACT_NCC))
    assert out.started_from_identity and "affine stage alone" in out.start_note
    assert float(out.flow.abs().max()) <= 0.05


def test_identity_start_without_steps_returns_the_affine_stage_alone():
    """``identity_refines=False``: when no deformation wins the start, it is the result, exactly zero and with no
    step; when the network's flow wins, the steps run as before."""
    img = _blobs()
    wrong = torch.zeros(1, 3, 24, 24, 24)
    wrong[:, 1] = 2.0
    cfg = RefineConfig(max_steps=3, identity_refines=False, **EXACT_NCC)
    out = refine_flow(img, img, wrong, 2.0, cfg)
    assert out.started_from_identity and out.steps == 0 and not out.stalled
    assert "no refinement step" in out.start_note and float(out.flow.abs().max()) == 0.0
    shifted = torch.roll(img, shifts=1, dims=3)  # moving(p) = img(p - 1 voxel along y): the flow is +1 voxel
    good = torch.zeros(1, 3, 24, 24, 24)
    good[:, 1] = 1.0
    kept = refine_flow(img, shifted, good, 2.0, cfg)
    assert not kept.started_from_identity and kept.steps >= 1


def test_cli_rigid_mode_writes_a_linear_transform(tmp_path, brain):
    """``deepreg register --mode rigid``: a linear transform (orthonormal matrix), --refine refused."""
    from DeepRegLib.cli import main
    truth = km.rigid_motion((0.0, 0.0, 3.0), (2.0, 0.0, -1.5), km.centre_of(brain))
    pair = km.make_pair(brain, truth, seed=4, noise=0.0, intensity_scale=1.0, bias=0.0)
    f, m, t = tmp_path / "f.nii.gz", tmp_path / "m.nii.gz", tmp_path / "T.h5"
    sitk.WriteImage(pair.fixed, str(f))
    sitk.WriteImage(pair.moving, str(m))
    assert main(["register", "--fixed", str(f), "--moving", str(m), "--output-transform", str(t),
                 "--mode", "rigid", "--device", "cpu"]) == 0
    back = sitk.ReadTransform(str(t))
    points = km.brain_points(brain, step=12)
    assert km.mapping_error(km.map_points(back, points), truth, points)["max"] <= 0.3
    assert main(["register", "--fixed", str(f), "--moving", str(m), "--output-transform", str(tmp_path / "x.h5"),
                 "--mode", "rigid", "--refine"]) == 2


def test_models_listing_states_precision_from_the_card():
    """``deepreg models`` prints the card's known-answer precision (bench_precision writes it)."""
    import copy
    from DeepRegLib.bundles import load_bundle
    b = copy.copy(load_bundle(None))
    b.card = dict(b.card, precision={"default_mean_error_mm": {"identical": 0.0, "rigid": 0.14},
                                     "ants_syn_mean_error_mm": {"rigid": 0.15}})
    line = b.precision_line()
    assert "identical 0.00" in line and "rigid 0.14 (SyN 0.15)" in line and "--refine" not in line
    b.card = dict(b.card, precision=dict(b.card["precision"], refine_mean_error_mm={"rigid": 0.07}))
    assert b.precision_line().endswith("rigid 0.14 (SyN 0.15); --refine rigid 0.07")
    b.card = {k: v for k, v in b.card.items() if k != "precision"}
    assert b.precision_line() == "" and not any(x.startswith("precision") for x in b.details())
    # the default call's speed beside its baseline (benchmarks/bench_default.py --update-card)
    b.card = dict(b.card, speed={"default_call": {"register_s_median": 0.85, "cli_wall_s_median": 2.4, "threads": 2,
                                                  "baseline": {"model": "ldr_brain_v1", "register_s_median": 0.25}}})
    assert "default call: register() 0.85 s, CLI 2.4 s (median, 2 CPU threads; ldr_brain_v1 0.25 s" in "\n".join(b.details())


def test_register_takes_a_loaded_bundle_without_reading_it_again(brain, monkeypatch):
    """A caller that has the bundle (the panel, batch) passes it: register() does not load it a second time."""
    from DeepRegLib import inference
    from DeepRegLib.bundles import load_bundle
    bundle = load_bundle(None)
    calls = []
    monkeypatch.setattr(inference, "load_bundle", lambda *a, **k: calls.append(a) or load_bundle(*a, **k))
    res = inference.register(brain, brain, model=bundle, device="cpu", mode="affine")
    assert res.model == bundle.name and calls == []
    inference.register(brain, brain, model=None, device="cpu", mode="affine")
    assert len(calls) == 1


def _two_mm(image: sitk.Image) -> torch.Tensor:
    """``image`` on the default model's 2 mm network grid (the engine's :func:`network_grid` and
    :func:`resample_to_grid`, linear without anti-aliasing: a sharp image), scaled by its 99th percentile:
    ``(1, 1, z, y, x)``."""
    from DeepRegLib.preprocess import network_grid, resample_to_grid
    a = resample_to_grid(image, network_grid(image, 2.0, (80, 96, 80)), antialias=False)
    return torch.from_numpy(a / np.percentile(a, 99)).float()[None, None]


def test_interpolation_blur_does_not_win_the_start(brain):
    """A same-subject pair whose fixed image is blurrier (resampled) and noisier than the moving one: the
    truth is no deformation. A rough sub-voxel flow (up to 0.6 mm) blurs the moving image by trilinear
    interpolation, which the unsmoothed local NCC scores better than the truth, so the refinement would build
    on it; compared on both images smoothed by 2 mm (``identity_smoothing_mm``), no deformation wins and the
    result stays closer to the truth than the flow."""
    from DeepRegLib.spatial import gaussian_smooth
    sharp = _two_mm(brain)
    g = torch.Generator().manual_seed(0)
    fixed = gaussian_smooth(sharp, 0.5) + 0.02 * torch.randn(sharp.shape, generator=g)
    flow = gaussian_smooth(torch.randn((1, 3) + sharp.shape[2:], generator=g), 1.0)
    flow = flow * (0.3 / flow.abs().max())  # voxels of 2 mm
    base = dict(max_steps=3, control_factor=2, learning_rate=0.4, **EXACT_NCC)
    plain = refine_flow(fixed, sharp, flow, 2.0, RefineConfig(**base))
    assert not plain.started_from_identity, "premise: unsmoothed, the blur of a rough flow scores better"
    smoothed = refine_flow(fixed, sharp, flow, 2.0, RefineConfig(identity_smoothing_mm=2.0, **base))
    assert smoothed.started_from_identity, smoothed.start_note
    assert float(smoothed.flow.norm(dim=1).mean()) < 0.5 * float(flow.norm(dim=1).mean())


def test_identity_smoothing_must_not_be_negative():
    from DeepRegLib.errors import InputError
    with pytest.raises(InputError, match="identity_smoothing_mm must be >= 0"):
        RefineConfig(identity_smoothing_mm=-1.0)
