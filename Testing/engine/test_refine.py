"""register()'s options on the bundled sample pair: mode="affine", refine (short), cancel, progress, masks.

Refinement runs are kept short here (a few steps): what they check is behaviour (what is returned,
what is reported, determinism), not accuracy, which ``benchmarks/bench_register.py`` measures.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from DeepRegLib.errors import Cancelled, InputError
from DeepRegLib.inference import RefineConfig, register
from DeepRegLib.bundles import load_bundle
from DeepRegLib.bundles import card_refinement
from DeepRegLib.refine import refine_flow
from DeepRegLib.similarity import LocalNCC, local_ncc
from DeepRegLib.spatial import warp

SHORT = RefineConfig(max_steps=3, patience=10)


@pytest.fixture(scope="module")
def images(sample_pair):
    f = sitk.ReadImage(str(sample_pair["fixed"]["image"]), sitk.sitkFloat32)
    m = sitk.ReadImage(str(sample_pair["moving"]["image"]), sitk.sitkFloat32)
    return f, m


@pytest.fixture(scope="module")
def network_result(images):
    return register(*images, device="cpu", refine=False)  # the network alone, without the card's refinement


def test_affine_mode_is_linear(images, network_result, tmp_path):
    res = register(*images, device="cpu", mode="affine")
    assert res.mode == "affine" and res.displacement is None and res.grid is None
    assert res.jacobian_determinant() is None and not res.refined
    pts = np.array([[0.0, 10.0, -20.0], [30.0, -40.0, 15.0]])
    want = np.array([res.affine.TransformPoint(tuple(p)) for p in pts])
    assert np.abs(res.map_points(pts) - want).max() < 1e-9
    # the card's affine stage, finished by the precise 2 mm level (its result is the answer), deterministic
    from dataclasses import replace
    from DeepRegLib.affine import AffineConfig, affine_register
    from DeepRegLib.bundles import load_bundle
    from DeepRegLib.inference import PRECISE_LINEAR_SPACING
    card = AffineConfig.from_card(load_bundle(None).card.get("affine_stage"))
    cfg = card if card.fine_spacing else replace(card, fine_spacing=PRECISE_LINEAR_SPACING)
    again = affine_register(*images, cfg)
    assert np.abs(np.asarray(again.TransformPoint((0.0, 10.0, -20.0))) - want[0]).max() < 1e-9
    path = tmp_path / "A.h5"
    res.write_transform(str(path))
    back = sitk.ReadTransform(str(path))
    assert np.abs(np.array([back.TransformPoint(tuple(p)) for p in pts]) - want).max() < 1e-9


def test_refine_is_deterministic_and_reported(images, network_result):
    stages = []
    a = register(*images, device="cpu", refine=SHORT, progress=lambda s, f: stages.append((s, f)))
    b = register(*images, device="cpu", refine=SHORT)
    assert a.refined and not a.refine_cancelled and a.mode == "deformable"
    assert np.array_equal(a.displacement, b.displacement), "refinement must be deterministic on the CPU"
    assert np.abs(a.displacement - network_result.displacement).max() > 0.05, "refinement changed nothing"
    assert any("refinement" in line for line in a.log) and "refine" in a.timings
    names = [s for s, _ in stages]
    assert names[0] == "loading" and names[-1] == "done"
    order = ["loading", "affine", "network", "refine", "field", "done"]
    assert [n for n in order if n in names] == order
    assert [order.index(n) for n in names] == sorted(order.index(n) for n in names)
    fracs = [f for _, f in stages]
    assert fracs == sorted(fracs) and fracs[-1] == 1.0
    assert names.count("affine") > 2, "no progress reported within the affine stage"


def test_default_refinement_is_stable_under_rounding_noise(images):
    """The card's default call on the fixed image and on that image times (1 + 1e-6 x noise), a change at
    float32 rounding level: the two maps agree to 0.05 mm over the brain (measured 0.012 mm). An optimiser
    that turned rounding into steps (a sign-like step where a gradient is all rounding) would fail here."""
    from DeepRegLib.known_motion import brain_points
    fixed, moving = images
    arr = sitk.GetArrayFromImage(fixed)
    noisy = sitk.GetImageFromArray((arr * (1 + 1e-6 * np.random.default_rng(0).standard_normal(arr.shape)))
                                   .astype(np.float32))
    noisy.CopyInformation(fixed)
    points = brain_points(fixed, step=4)
    a, b = (register(f, moving, device="cpu", preflight=False).map_points(points) for f in (fixed, noisy))
    err = np.linalg.norm(a - b, axis=1)
    assert err.max() < 0.05, (float(np.percentile(err, 95)), float(err.max()))


def test_refine_progress_every_few_steps(images):
    calls = []
    register(*images, device="cpu", refine=RefineConfig(max_steps=6, patience=10, progress_every=2),
             progress=lambda s, f: calls.append((s, f)))
    within = [f for s, f in calls if s == "refine"]
    assert len(within) >= 3 and within == sorted(within) and len(set(within)) == len(within)


def test_cancel_during_refine_keeps_network_result(images, network_result):
    state = {"refining": False, "polls": 0}

    def progress(stage, frac):
        state["refining"] = stage == "refine"

    def cancel():
        if state["refining"]:
            state["polls"] += 1
        return state["polls"] >= 2  # let one step run, then cancel

    res = register(*images, device="cpu", refine=RefineConfig(max_steps=10, patience=10, progress_every=1),
                   progress=progress, cancel=cancel)
    assert res.refine_cancelled and not res.refined
    assert np.array_equal(res.displacement, network_result.displacement)
    assert any("cancelled" in line for line in res.log)


def test_cancel_during_affine_raises(images):
    polls = {"n": 0}

    def cancel():
        polls["n"] += 1
        return polls["n"] > 3  # past the checks before the stage: inside the optimiser's iterations

    with pytest.raises(Cancelled):
        register(*images, device="cpu", cancel=cancel)
    assert polls["n"] > 3


def test_fixed_mask_restricts_the_affine_stage(images, network_result):
    f, m = images
    arr = sitk.GetArrayFromImage(f)
    half = np.zeros(arr.shape, np.uint8)
    half[:, :, : arr.shape[2] // 2] = arr[:, :, : arr.shape[2] // 2] > 0  # one side of the brain only
    mask = sitk.GetImageFromArray(half)
    mask.CopyInformation(f)
    res = register(f, m, device="cpu", mode="affine", fixed_mask=mask)
    pts = np.array([f.TransformIndexToPhysicalPoint((128, 128, 80)), f.TransformIndexToPhysicalPoint((60, 100, 40))])
    a = res.map_points(pts)
    b = network_result.affine_transform()
    b = np.array([b.TransformPoint(tuple(p)) for p in pts])
    assert np.linalg.norm(a - b, axis=1).max() > 0.2, "the fixed mask did not change the affine metric"
    empty = sitk.Image(f.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(f)
    with pytest.raises(InputError):
        register(f, m, device="cpu", fixed_mask=empty)


def test_refine_similarity_is_restricted_to_the_mask():
    """With a mask on half the grid, the refinement moves nothing far from the masked half."""
    torch.manual_seed(0)
    shape = (24, 24, 48)
    fixed = torch.nn.functional.avg_pool3d(torch.rand(1, 1, *shape), 5, 1, 2)
    moving = torch.roll(fixed, 1, dims=4)  # a one-voxel shift everywhere
    mask = torch.zeros(1, 1, *shape)
    mask[..., :16] = 1.0
    out = refine_flow(fixed, moving, torch.zeros(1, 3, *shape), 2.0,
                      RefineConfig(max_steps=10, patience=20, smooth_weight=0.1, ncc_window_mm=6), mask=mask)
    near = out.flow[..., 4:12].abs().mean()
    far = out.flow[..., 40:].abs().mean()
    assert near > 0.05 and far < 0.1 * near, (float(near), float(far))


def test_local_ncc_known_values():
    torch.manual_seed(0)
    f = torch.rand(1, 1, 12, 12, 12)
    assert float(local_ncc(f, 3 * f + 1, 5)) == pytest.approx(1.0, abs=1e-3)  # affine intensity change
    assert float(local_ncc(f, torch.rand_like(f), 5)) < 0.2
    m = torch.rand_like(f)
    assert float(LocalNCC(f, 5)(m)) == pytest.approx(float(local_ncc(f, m, 5)))


def test_bad_refine_and_mode_arguments(images):
    with pytest.raises(InputError):
        register(*images, device="cpu", mode="sideways")
    with pytest.raises(InputError):
        register(*images, device="cpu", refine="yes")


def _bundle_copy(folder, refinement):
    """The default bundle copied to ``folder`` with its card's default refinement replaced (None: removed)."""
    shutil.copytree(load_bundle(None).path, folder)
    card = json.loads((folder / "card.json").read_text())
    card.pop("refinement", None)
    if refinement is not None:
        card["refinement"] = {"default": refinement}
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def test_default_refinement_comes_from_the_card(images, network_result, tmp_path):
    plain = _bundle_copy(tmp_path / "plain", None)  # a card without the block: the network alone, as before
    res = register(*images, model=str(plain), device="cpu")
    assert not res.refined and res.refinement == "none" and "refine" not in res.timings
    assert np.array_equal(res.displacement, network_result.displacement)

    quick = dict(max_steps=3, learning_rate=0.3, integration_steps=0)
    m = _bundle_copy(tmp_path / "quick", quick)
    a = register(*images, model=str(m), device="cpu")
    assert a.refined and a.refinement == "model default" and any("model default" in line for line in a.log)
    assert np.abs(a.displacement - network_result.displacement).max() > 0.05, "the card's refinement changed nothing"
    b = register(*images, model=str(m), device="cpu", refine=RefineConfig(**quick))
    assert b.refinement == "custom" and np.array_equal(a.displacement, b.displacement)
    c = register(*images, model=str(m), device="cpu", refine=False)
    assert not c.refined and np.array_equal(c.displacement, network_result.displacement)
    d = register(*images, model=str(m), device="cpu", mode="affine")
    assert not d.refined and d.refinement == "none"

    bad = _bundle_copy(tmp_path / "bad", {"max_step": 3})
    with pytest.raises(InputError, match="max_step"):
        register(*images, model=str(bad), device="cpu")


def test_card_can_name_a_coarse_level_and_mind(images, network_result, tmp_path):
    """A card's refinement may use the newer settings: register() runs them (steps of both levels
    logged and counted), and they are what a RefineConfig with the same fields gives."""
    setting = dict(max_steps=2, coarse_steps=3, learning_rate=0.4, integration_steps=0, control_factor=2,
                   similarity="mind", patience=10)
    m = _bundle_copy(tmp_path / "levels", setting)
    line = load_bundle(str(m)).refinement_line()  # what `deepreg models` and the panel's tooltip say
    assert "3 at half resolution + 2 steps, MIND-SSC" in line and "LNCC" not in line
    a = register(*images, model=str(m), device="cpu")
    assert a.refined and a.refinement == "model default"
    assert any("5 steps" in line for line in a.log), a.log  # 3 coarse + 2 full-resolution steps ran
    # it either moved the mapping or said that no step improved on the network's (then kept as it was)
    moved = np.abs(a.displacement - network_result.displacement).max() > 0.05
    stalled = any("no step improved" in line for line in a.log)
    assert moved != stalled, (moved, a.log)
    b = register(*images, model=str(m), device="cpu", refine=RefineConfig(**setting))
    assert np.array_equal(a.displacement, b.displacement)
    c = register(*images, model=str(m), device="cpu", refine=RefineConfig(**{**setting, "similarity": "ncc"}))
    assert not np.array_equal(a.displacement, c.displacement)  # the similarity setting is used
    mi = _bundle_copy(tmp_path / "mi", {**setting, "similarity": "mi"})
    assert "steps, mutual information" in load_bundle(str(mi)).refinement_line()
    d = register(*images, model=str(mi), device="cpu")
    assert not np.array_equal(a.displacement, d.displacement) and not np.array_equal(c.displacement, d.displacement)
    bad = _bundle_copy(tmp_path / "bad", {**setting, "similarity": "mutual information"})
    with pytest.raises(InputError, match="similarity"):
        register(*images, model=str(bad), device="cpu")


def test_card_refinement_reads_the_block():
    assert card_refinement({}) is None and card_refinement({"refinement": {}}) is None
    cfg = card_refinement({"refinement": {"default": {"max_steps": 4, "integration_steps": 0}}})
    assert cfg == RefineConfig(max_steps=4, integration_steps=0)
    for bad in (dict(control_factor=0), dict(max_steps=0), dict(integration_steps=-1)):
        with pytest.raises(InputError, match="out of range"):
            card_refinement({"refinement": {"default": bad}})


def test_few_steps_without_squaring_improve_a_shifted_pair():
    """integration_steps=0 (the velocity used as a displacement): the few-step setting still aligns."""
    torch.manual_seed(0)
    shape = (24, 24, 24)
    fixed = torch.nn.functional.avg_pool3d(torch.rand(1, 1, *shape), 5, 1, 2)
    moving = torch.roll(fixed, 1, dims=4)
    zero = torch.zeros(1, 3, *shape)
    out = refine_flow(fixed, moving, zero, 2.0, RefineConfig(max_steps=4, learning_rate=0.3, integration_steps=0,
                                                            smooth_weight=0.1, ncc_window_mm=6, patience=10))
    assert out.steps == 4 and min(out.losses) < out.losses[0] - 0.01
    before, after = float(local_ncc(fixed, moving, 3)), float(local_ncc(fixed, warp(moving, out.flow), 3))
    assert after > before + 0.02, (before, after)  # 3 updates of <= 0.3 mm: part of the 2 mm shift


def test_cli_refine_options():
    from DeepRegLib.cli import build_parser
    base = ["register", "--fixed", "f.nii", "--moving", "m.nii", "--output-transform", "t.h5"]
    p = build_parser()
    assert p.parse_args(base).refine is None  # the model card's default refinement
    assert p.parse_args(base + ["--refine"]).refine is True
    assert p.parse_args(base + ["--network-only"]).refine is False
    with pytest.raises(SystemExit):
        p.parse_args(base + ["--refine", "--network-only"])


def test_refine_adam_matches_torch_adam():
    """The refinement's own Adam (no torch._dynamo import) makes torch.optim.Adam's updates."""
    from DeepRegLib.refine import Adam
    torch.manual_seed(0)
    a = torch.randn(2, 3, 4, requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    ours, ref = Adam(a, lr=0.3), torch.optim.Adam([b], lr=0.3)
    target = torch.randn(2, 3, 4)
    for _ in range(6):
        for p in (a, b):
            p.grad = None
            ((p - target) ** 2 * torch.linspace(0.1, 3, 4)).sum().backward()
        ours.step()
        ref.step()
        assert torch.allclose(a, b, atol=1e-6), float((a - b).abs().max())


def test_adam_relative_eps_keeps_points_without_signal_still():
    """Adam's first step is sign-like: a component whose gradient is a millionth of the largest moves a full
    step. With ``eps_relative`` its eps is that fraction of the first gradient's largest component, so it moves
    in proportion: known answers lr * g / (|g| + eps) for the first step."""
    from DeepRegLib.refine import Adam
    grad = torch.tensor([2e-4, -2e-10, 1e-6])
    moved = {}
    for rel in (0.0, 0.01):
        p = torch.zeros(3, requires_grad=True)
        opt = Adam(p, lr=0.4, eps_relative=rel)
        p.grad = grad.clone()
        opt.step()
        moved[rel] = p.detach()
    eps = 0.01 * 2e-4
    assert torch.allclose(moved[0.01], -0.4 * grad / (grad.abs() + eps), rtol=1e-5)
    assert torch.allclose(moved[0.0], -0.4 * grad / (grad.abs() + 1e-8), rtol=1e-5)
    assert float(moved[0.0][2].abs()) > 0.39 and float(moved[0.01][2].abs()) < 0.2  # 1e-6: a full step vs a fifth
    with pytest.raises(InputError, match="adam_eps_relative must be >= 0"):
        RefineConfig(adam_eps_relative=-0.1)


def test_coarse_control_grid_gives_a_smoother_refinement():
    """control_factor=2: the velocity lives on a grid twice as coarse (trilinear upsampling), so the
    few-step refinement's field is smoother than with one velocity per voxel, and still aligns."""
    torch.manual_seed(0)
    shape = (24, 24, 24)
    fixed = torch.nn.functional.avg_pool3d(torch.rand(1, 1, *shape), 5, 1, 2)
    moving = torch.roll(fixed, 1, dims=4)
    zero = torch.zeros(1, 3, *shape)

    def run(factor):
        cfg = RefineConfig(max_steps=4, learning_rate=0.3, integration_steps=0, smooth_weight=0.1,
                           ncc_window_mm=6, patience=10, control_factor=factor)
        return refine_flow(fixed, moving, zero, 2.0, cfg).flow

    def roughness(u):  # mean squared second difference along x
        return float((u[..., 2:] - 2 * u[..., 1:-1] + u[..., :-2]).pow(2).mean())

    fine, coarse = run(1), run(2)
    assert roughness(coarse) < 0.5 * roughness(fine), (roughness(coarse), roughness(fine))
    before, after = float(local_ncc(fixed, moving, 3)), float(local_ncc(fixed, warp(moving, coarse), 3))
    assert after > before + 0.01, (before, after)


@pytest.mark.parametrize("k", [3, 5, 7, 9, 11, 13])
def test_box_mean_equals_avg_pool_without_padding_counts(k):
    """The refinement's box mean (shifted sums up to 7 voxels, cumulative sums beyond) is avg_pool3d with count_include_pad=False, values and gradients."""
    from DeepRegLib.similarity.boxfilter import box_mean as _box
    torch.manual_seed(0)
    x = torch.rand(1, 2, 14, 15, 13, dtype=torch.float64, requires_grad=True)  # avg_pool3d: no axis below k
    p = k // 2
    ref = x
    for kernel, pad in (((k, 1, 1), (p, 0, 0)), ((1, k, 1), (0, p, 0)), ((1, 1, k), (0, 0, p))):
        ref = torch.nn.functional.avg_pool3d(ref, kernel, 1, pad, count_include_pad=False)
    ours = _box(x, k)
    assert torch.allclose(ours, ref, atol=1e-12)
    w = torch.rand_like(ref)
    g_ref, = torch.autograd.grad((ref * w).sum(), x)
    g_ours, = torch.autograd.grad((ours * w).sum(), x)
    assert torch.allclose(g_ours, g_ref, atol=1e-12)
    assert float(_box(torch.ones(1, 1, 5, 5, 5), k).sub(1).abs().max()) < 1e-6  # a constant stays constant


def _set_card(folder, **blocks):
    """Replace (or, with None, remove) top-level blocks of the card in the bundle ``folder``."""
    card = json.loads((folder / "card.json").read_text())
    for key, value in blocks.items():
        card.pop(key, None)
        if value is not None:
            card[key] = value
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def test_card_names_its_full_refinement(images, tmp_path):
    """``refine=True`` runs the card's ``refinement.full`` (pyramid levels included) where the card has one,
    and the engine's RefineConfig with the card default's similarity where it has none."""
    from DeepRegLib.inference import resolve_refinement
    quick = dict(max_steps=2, learning_rate=0.3, integration_steps=0)
    full = dict(max_steps=2, learning_rate=0.2, integration_steps=0, pyramid=[[2, 2, 0.4]], smooth_weight=4.0)
    m = _set_card(_bundle_copy(tmp_path / "full", quick), refinement={"default": quick, "full": full})
    bundle = load_bundle(str(m))
    cfg, label = resolve_refinement(True, bundle)
    assert label == "full" and cfg == RefineConfig(**{**full, "pyramid": ((2, 2, 0.4),)})
    assert "--refine: 2 levels, 4 steps)" in bundle.refinement_line()
    fine = _set_card(_bundle_copy(tmp_path / "fine", quick), refinement={"default": quick, "full": dict(full, fine_steps=3)})
    assert "--refine: 2 levels, 4 steps + 3 at half the grid's spacing" in load_bundle(str(fine)).refinement_line()
    a = register(*images, model=bundle, device="cpu", refine=True)
    assert a.refinement == "full" and any("4 steps" in line for line in a.log), a.log  # 2 pyramid + 2 final
    b = register(*images, model=bundle, device="cpu", refine=RefineConfig(**full))
    assert np.array_equal(a.displacement, b.displacement)
    plain, label = resolve_refinement(True, load_bundle(str(_bundle_copy(tmp_path / "plain", {**quick, "similarity": "mind"}))))
    assert label == "full" and plain == RefineConfig(similarity="mind")
