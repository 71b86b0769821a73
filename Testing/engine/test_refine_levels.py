"""The refinement's coarse level (``coarse_steps``), its MIND-SSC similarity (``similarity='mind'``) and
its mutual-information similarity (``similarity='mi'``).

Synthetic pairs with a known shift: ``moving = roll(fixed, s, x)`` is aligned by a voxel flow of ``+s``
along x (channel 2; the flow maps fixed points to moving points).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from DeepRegLib.errors import InputError
from DeepRegLib.similarity.mind import MINDSimilarity, mind_ssc
from DeepRegLib.similarity.mutualinfo import MutualInformation, normalised_mutual_information
from DeepRegLib.refine import RefineConfig, refine_flow
from DeepRegLib.similarity import local_ncc
from DeepRegLib.spatial import warp

SHAPE = (24, 24, 24)


def smooth_image(seed: int = 0) -> torch.Tensor:
    """Smooth random texture (correlation length of several voxels), zero mean, unit variance."""
    torch.manual_seed(seed)
    img = F.avg_pool3d(F.avg_pool3d(torch.rand(1, 1, *SHAPE), 7, 1, 3), 5, 1, 2)
    return (img - img.mean()) / img.std()


def blobs(seed: int = 0) -> torch.Tensor:
    """A label image ``(1, 1, *SHAPE)`` of 4 smooth random regions (values 0..3)."""
    torch.manual_seed(seed)
    noise = F.avg_pool3d(torch.rand(1, 4, *SHAPE), 7, 1, 3)
    return noise.argmax(1, keepdim=True).float()


def x_error(flow: torch.Tensor, shift: float) -> float:
    """Mean |flow_x - shift| over the inner voxels (borders see padding), in voxels."""
    return float((flow[0, 2, 4:-4, 4:-4, 4:-4] - shift).abs().mean())


def assert_levels_reach_further(base: dict, levels: dict, steps: int) -> None:
    """A 3-voxel shift: ``base`` alone recovers part of it; with ``levels`` added first the refinement runs
    ``steps`` steps in all and leaves a smaller error and a better correlation."""
    fixed = smooth_image()
    moving = torch.roll(fixed, 3, dims=4)
    zero = torch.zeros(1, 3, *SHAPE)
    fine = refine_flow(fixed, moving, zero, 2.0, RefineConfig(**base))
    both = refine_flow(fixed, moving, zero, 2.0, RefineConfig(**levels, **base))
    assert both.steps == steps and len(both.losses) == steps and fine.steps == base["max_steps"]
    assert x_error(both.flow, 3.0) < x_error(fine.flow, 3.0) - 0.2, (x_error(both.flow, 3.0), x_error(fine.flow, 3.0))
    ncc = lambda flow: float(local_ncc(fixed, warp(moving, flow), 5))
    assert ncc(both.flow) > ncc(fine.flow) + 0.01, (ncc(both.flow), ncc(fine.flow))


def test_coarse_steps_reach_further_than_the_same_fine_steps():
    """4 fine steps of 0.8 mm; 6 steps on the x2-pooled pair first (each step cheap: 1/8 of the voxels)."""
    assert_levels_reach_further(dict(max_steps=4, learning_rate=0.8, integration_steps=0, smooth_weight=0.1,
                                     ncc_window_mm=10, patience=20), dict(coarse_steps=6), steps=10)


def test_cancel_during_the_coarse_level_returns_the_input_flow():
    fixed = smooth_image()
    moving = torch.roll(fixed, 2, dims=4)
    start = torch.full((1, 3, *SHAPE), 0.25)
    polls = []

    def cancel():
        polls.append(1)
        return len(polls) > 2  # during the third coarse step

    out = refine_flow(fixed, moving, start, 2.0, RefineConfig(max_steps=3, coarse_steps=5, patience=20), cancel=cancel)
    assert out.cancelled and out.steps == 2 and torch.equal(out.flow, start)


def test_progress_counts_both_levels():
    fixed = smooth_image()
    moving = torch.roll(fixed, 2, dims=4)
    seen = []
    refine_flow(fixed, moving, torch.zeros(1, 3, *SHAPE), 2.0,
                RefineConfig(max_steps=4, coarse_steps=4, patience=20, progress_every=2), progress=seen.append)
    assert seen == [2 / 8, 6 / 8]  # every 2nd step counted over both levels; a last step only evaluates


def test_mind_descriptor_shape_range_and_contrast_invariance():
    img = smooth_image(1)
    d = mind_ssc(img)
    assert d.shape == (1, 12, *SHAPE) and float(d.min()) >= 0 and float(d.max()) <= 1 + 1e-6
    # a positive or negative linear change of intensities leaves the descriptor unchanged
    for other in (3.0 * img + 7.0, 5.0 - 2.0 * img):
        assert float((mind_ssc(other) - d).abs().max()) < 1e-3
    # ... but a different image does not
    assert float((mind_ssc(smooth_image(2)) - d).abs().mean()) > 0.05
    with pytest.raises(ValueError, match=r"\(1, 2, 24, 24, 24\)"):
        mind_ssc(torch.zeros(1, 2, *SHAPE))


def test_mind_similarity_prefers_the_aligned_pair_across_contrasts():
    """Fixed and moving show one label image in two unrelated contrasts (intensities permuted, not a
    monotone map): MIND scores the aligned pair above a shifted one."""
    labels = blobs()
    fixed = torch.tensor([0.1, 0.9, 0.4, 0.7])[labels.long()]
    other = torch.tensor([0.6, 0.2, 1.0, 0.0])[labels.long()]
    sim = MINDSimilarity(fixed)
    aligned = float(sim(sim.prepare(other)))
    shifted = float(sim(sim.prepare(torch.roll(other, 2, dims=4))))
    assert aligned > shifted + 0.02, (aligned, shifted)


@pytest.mark.parametrize("similarity", ["mind", "mi"])
def test_refinement_aligns_a_pair_of_unrelated_contrasts(similarity):
    """One label image in two contrasts that no monotone (or linear) map relates, shifted by 2 voxels: the
    MIND and the mutual-information refinements recover most of the shift; the flow is measured against
    the known answer, not against the similarity it optimised."""
    labels = blobs()
    fixed = F.avg_pool3d(torch.tensor([0.1, 0.9, 0.4, 0.7])[labels.long()], 3, 1, 1)
    moving = torch.roll(F.avg_pool3d(torch.tensor([0.6, 0.2, 1.0, 0.0])[labels.long()], 3, 1, 1), 2, dims=4)
    zero = torch.zeros(1, 3, *SHAPE)
    cfg = RefineConfig(max_steps=30, learning_rate=0.5, integration_steps=0, smooth_weight=0.1, control_factor=2,
                       similarity=similarity, patience=40)
    out = refine_flow(fixed, moving, zero, 2.0, cfg)
    assert x_error(out.flow, 2.0) < 0.5 * x_error(zero, 2.0), x_error(out.flow, 2.0)


def test_unknown_similarity_is_refused():
    with pytest.raises(InputError, match="similarity"):
        RefineConfig(similarity="nmi")
    with pytest.raises(InputError, match="coarse_steps"):
        RefineConfig(coarse_steps=-1)


def test_mutual_information_is_blind_to_a_one_to_one_contrast_change_but_not_to_a_shift():
    """NMI of a label image against itself in an unrelated, non-monotone contrast equals its NMI against
    itself (1 up to the Parzen windows' overlap), and a 2-voxel shift lowers it."""
    labels = blobs().long()
    fixed = torch.tensor([0.1, 0.9, 0.4, 0.7])[labels]
    other = torch.tensor([0.6, 0.2, 1.0, 0.0])[labels]
    own = float(normalised_mutual_information(fixed, fixed))
    across = float(normalised_mutual_information(fixed, other))
    shifted = float(normalised_mutual_information(fixed, torch.roll(other, 2, dims=4)))
    assert 0.0 <= shifted < across <= 1.0 + 1e-6
    assert abs(across - own) < 0.02, (own, across)
    assert across > shifted + 0.1, (across, shifted)
    # independent images share no information
    torch.manual_seed(3)
    noise = normalised_mutual_information(torch.rand(1, 1, *SHAPE), torch.rand(1, 1, *SHAPE))
    assert float(noise) < 0.05


def test_mutual_information_mask_and_bad_input():
    labels = blobs().long()
    fixed = torch.tensor([0.1, 0.9, 0.4, 0.7])[labels]
    mask = torch.zeros(1, 1, *SHAPE)
    mask[..., :12] = 1
    moving = fixed.clone()
    moving[..., 12:] = torch.rand(1, 1, *SHAPE)[..., 12:]  # unrelated outside the mask
    sim = MutualInformation(fixed, mask)
    sim.prepare(moving)
    assert float(sim(moving)) > float(normalised_mutual_information(fixed, moving)) + 0.1
    with pytest.raises(ValueError, match=r"\(1, 1, 12, 24, 24\)"):
        sim(moving[:, :, :12])
    with pytest.raises(ValueError, match=r"\(1, 2, 24, 24, 24\)"):
        MutualInformation(torch.zeros(1, 2, *SHAPE))
    with pytest.raises(ValueError, match="bins"):
        MutualInformation(fixed, bins=1)



def test_tune_refine_reads_setting_names():
    """benchmarks/tune_refine.py names: window, smoothness, lr, steps, squarings, control, coarse, similarity."""
    import sys
    from conftest import REPO
    sys.path.insert(0, str(REPO / "benchmarks"))
    from tune_refine import config_from_name
    c = config_from_name("w10_l.5_lr.6_s3_i0_c2_p6_mi")
    assert (c.ncc_window_mm, c.smooth_weight, c.learning_rate, c.max_steps, c.integration_steps, c.control_factor,
            c.coarse_steps, c.similarity) == (10.0, 0.5, 0.6, 3, 0, 2, 6, "mi")
    assert config_from_name("w10_l1_lr.4_s3_i0_c2_mind").similarity == "mind"
    assert config_from_name("w10_l1_lr.4_s3_i0_c2").similarity == "ncc"
    with pytest.raises(SystemExit, match="unknown part"):
        config_from_name("w10_q3")


def test_tune_default_reads_candidates():
    """benchmarks/tune_default.py candidates: 'card' or KEY=VALUE changes to the card's default refinement, each a
    RefineConfig field (an unknown field fails before any registration)."""
    import sys
    from dataclasses import replace
    from conftest import REPO
    sys.path.insert(0, str(REPO / "benchmarks"))
    from tune_default import parse_candidate
    assert parse_candidate("card") == {}
    changes = parse_candidate("start_smoothing_mm=2.0,max_steps=4")
    assert changes == {"start_smoothing_mm": 2.0, "max_steps": 4} and isinstance(changes["max_steps"], int)
    assert replace(RefineConfig(), **changes).max_steps == 4
    with pytest.raises(TypeError):
        replace(RefineConfig(), **parse_candidate("no_such_setting=1"))
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        parse_candidate("max_steps")
    # tune_affine's candidates: its named ones, or changes whose values may be tuples (commas inside them)
    from tune_affine import CANDIDATES
    assert parse_candidate("fine2", CANDIDATES) == {"fine_spacing": 2.0}
    assert parse_candidate("shrink_levels=(2, 1),smoothing_sigmas=(1.0,),fine_iterations=40", CANDIDATES) == {
        "shrink_levels": (2, 1), "smoothing_sigmas": (1.0,), "fine_iterations": 40}
    assert parse_candidate("pyramid=((4, 15, 0.5), (2, 15, 0.3)),max_steps=30") == {
        "pyramid": ((4, 15, 0.5), (2, 15, 0.3)), "max_steps": 30}


def test_pyramid_levels_reach_further_than_the_same_fine_steps():
    """12 fine steps of 0.3 mm; the same after coarser control grids (8 and 4 mm; 6 + 6 steps)."""
    assert_levels_reach_further(dict(max_steps=12, learning_rate=0.3, integration_steps=0, smooth_weight=0.1,
                                     ncc_window_mm=10, patience=40), dict(pyramid=((4, 6, 1.0), (2, 6, 0.6))),
                                steps=24)


def test_pyramid_progress_and_settings():
    fixed = smooth_image()
    moving = torch.roll(fixed, 2, dims=4)
    seen = []
    cfg = RefineConfig.from_dict({"max_steps": 4, "pyramid": [[4, 4, 0.5]], "patience": 20, "progress_every": 2})
    assert cfg.pyramid == ((4, 4, 0.5),)  # JSON lists from a card become tuples
    refine_flow(fixed, moving, torch.zeros(1, 3, *SHAPE), 2.0, cfg, progress=seen.append)
    assert seen == [2 / 8, 6 / 8]
    for bad in ([[0, 4, 0.5]], [[2, 0, 0.5]], [[2, 4, 0.0]]):
        with pytest.raises(InputError, match="pyramid"):
            RefineConfig(pyramid=bad)


def test_start_smoothing_removes_noise_from_the_start():
    """``start_smoothing_mm``: the refinement builds on the start flow smoothed by that Gaussian. A true
    2-voxel shift under voxel-scale noise: one evaluated step returns the smoothed start, close to the shift."""
    from DeepRegLib.spatial import gaussian_smooth
    fixed = smooth_image()
    moving = torch.roll(fixed, 2, dims=4)
    torch.manual_seed(2)
    start = torch.zeros(1, 3, *SHAPE)
    start[:, 2] = 2.0
    noisy = start + 0.5 * torch.randn_like(start)
    cfg = dict(max_steps=1, integration_steps=0, patience=10)
    plain = refine_flow(fixed, moving, noisy, 2.0, RefineConfig(**cfg))
    smooth = refine_flow(fixed, moving, noisy, 2.0, RefineConfig(start_smoothing_mm=4.0, **cfg))
    assert torch.allclose(plain.flow, noisy, atol=1e-5)  # one step only evaluates: the start is the result
    assert torch.allclose(smooth.flow, gaussian_smooth(noisy, 2.0), atol=1e-5)
    assert x_error(smooth.flow, 2.0) < 0.5 * x_error(plain.flow, 2.0)
    assert smooth.losses[0] < plain.losses[0]  # the noise-free start matches better
    with pytest.raises(InputError, match="start_smoothing_mm"):
        RefineConfig(start_smoothing_mm=-1.0)


def test_the_fixed_image_is_bound_once_per_grid_and_the_result_is_unchanged():
    """The identity-start check (two losses) and every full-resolution level share one bound similarity
    (the fixed image's local statistics are computed once); a coarse level binds its own grid. The result
    is the one a fresh binding per use gives."""
    from dataclasses import dataclass

    from DeepRegLib import refine as refine_module
    from DeepRegLib.similarity import Similarity

    calls = []

    @dataclass(frozen=True)
    class Counting(Similarity):
        def bind(self, fixed, mask=None):
            calls.append(tuple(fixed.shape[2:]))
            return super().bind(fixed, mask)

    fixed = smooth_image(1)
    moving = torch.roll(fixed, 2, dims=4)
    cfg = RefineConfig(max_steps=4, identity_start=True, pyramid=((4, 3, 0.5), (2, 3, 0.3)), coarse_steps=2)
    sim = Counting("ncc", window=5)
    out = refine_flow(fixed, moving, torch.zeros(1, 3, *SHAPE), 2.0, cfg, similarity=sim)
    assert calls == [SHAPE, (12, 12, 12)]  # the full grid once (start losses + 3 levels), the coarse grid once

    class Fresh(refine_module._Bindings):  # the old behaviour: bind at every use
        def __call__(self, measure, fixed, weight):
            return measure.bind(fixed, weight)

    original = refine_module._Bindings
    refine_module._Bindings = Fresh
    try:
        again = refine_flow(fixed, moving, torch.zeros(1, 3, *SHAPE), 2.0, cfg, similarity=sim)
    finally:
        refine_module._Bindings = original
    assert torch.equal(out.flow, again.flow) and out.losses == again.losses
    assert len(calls) > 2 + 2  # the fresh run bound at every use
