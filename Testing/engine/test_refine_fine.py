"""The refinement's fine level (``fine_steps``): a similarity at half the grid's spacing, a field on the grid.

Known answer: a texture whose x wavelength (3.3 fine voxels) is below the grid's Nyquist limit (4 fine voxels =
2 grid voxels) and the same texture shifted by ``s`` fine voxels along x. On the grid (every 2nd fine voxel) the
texture aliases to a pattern that moves the other way; at half the spacing the shift is visible as it is.
The flow maps fixed points to moving points: ``moving(q) = texture(q - s)`` is aligned by ``u_x = +s`` fine voxels,
``+s / 2`` grid voxels (channel 2).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from DeepRegLib.errors import InputError
from DeepRegLib.grid import Grid
from DeepRegLib.inference import register
from DeepRegLib.refine import FinePair, RefineConfig, refine_flow, similarity_loss

N = 16  # grid voxels per axis; the fine grid has 2N - 1
SHIFT = 0.6  # fine voxels (0.6 mm at 1 mm, 0.3 of a 2 mm grid voxel)
COMMON = dict(ncc_window_mm=6.0, smooth_weight=0.1, integration_steps=0, patience=50, identity_start=False)


def texture(shift: float = 0.0) -> torch.Tensor:
    """``(1, 1, 2N-1, 2N-1, 2N-1)`` texture at fine voxels ``(z, y, x)``, sampled at ``x - shift``."""
    i = torch.arange(2 * N - 1, dtype=torch.float32)
    z, y, x = torch.meshgrid(i, i, i - shift, indexing="ij")
    img = torch.sin(2 * math.pi * x / 3.3) * (1.5 + torch.sin(2 * math.pi * y / 8.0)) * (1.5 + torch.sin(2 * math.pi * z / 9.0))
    return ((img - img.min()) / (img.max() - img.min()))[None, None]


def grid_of(fine: torch.Tensor) -> torch.Tensor:
    """The grid's samples of a fine image: every 2nd fine voxel (corner-aligned)."""
    return fine[..., ::2, ::2, ::2].contiguous()


def x_shift(flow: torch.Tensor) -> float:
    """Median x displacement over the inner grid voxels (grid voxels)."""
    return float(flow[0, 2, 3:-3, 3:-3, 3:-3].median())


def test_fine_level_recovers_a_shift_the_grid_cannot_see():
    fixed_f, moving_f = texture(), texture(SHIFT)
    fixed, moving = grid_of(fixed_f), grid_of(moving_f)
    zero = torch.zeros(1, 3, N, N, N)
    grid_only = refine_flow(fixed, moving, zero, 2.0, RefineConfig(max_steps=9, learning_rate=0.1, **COMMON))
    cfg = RefineConfig(max_steps=1, fine_steps=8, fine_learning_rate=0.1, **COMMON)  # 1 grid step: its loss alone
    fine = refine_flow(fixed, moving, zero, 2.0, cfg, fine=FinePair(fixed_f, moving_f))
    want = SHIFT / 2
    assert fine.steps == 9 and len(fine.losses) == 9
    assert abs(x_shift(fine.flow) - want) < 0.1, x_shift(fine.flow)  # within 0.2 mm of 0.6 mm
    # on the grid the aliased texture moves the other way: the grid alone goes wrong
    assert abs(x_shift(grid_only.flow) - want) > abs(x_shift(fine.flow) - want) + 0.15, x_shift(grid_only.flow)
    # without a fine pair the level is skipped: the grid's one step (a loss, no update) is all
    skipped = refine_flow(fixed, moving, zero, 2.0, cfg)
    assert skipped.steps == 1 and torch.equal(skipped.flow, zero)


def test_fine_level_never_ends_above_its_start():
    """Identical fine images (the grid's flow already right): every step only adds roughness; the start is kept."""
    img = texture()
    zero = torch.zeros(1, 3, N, N, N)
    cfg = RefineConfig(max_steps=1, fine_steps=4, fine_learning_rate=0.5, **COMMON)
    out = refine_flow(grid_of(img), grid_of(img), zero, 2.0, cfg, fine=FinePair(img, img.clone()))
    assert out.steps == 5 and min(out.losses[1:]) >= out.losses[1]  # the fine level's start is its best
    assert torch.equal(out.flow, zero) and out.stalled
    # and with the shifted pair its result is below its start by the measure it optimises (at half the spacing)
    moving_f = texture(SHIFT)
    cfg = RefineConfig(max_steps=1, fine_steps=6, fine_learning_rate=0.1, **COMMON)
    out = refine_flow(grid_of(img), grid_of(moving_f), zero, 2.0, cfg, fine=FinePair(img, moving_f))
    from DeepRegLib.spatial import resize_flow
    before = similarity_loss(img, moving_f, resize_flow(zero, img.shape[2:]), 1.0, cfg)
    after = similarity_loss(img, moving_f, resize_flow(out.flow, img.shape[2:]), 1.0, cfg)
    assert after < before and not out.stalled, (before, after)


def test_fine_pair_shapes_are_checked():
    img = texture()
    with pytest.raises(InputError, match="expected moving of shape"):
        FinePair(img, img[..., :-1])
    with pytest.raises(InputError, match="expected shape"):
        refine_flow(grid_of(img), grid_of(img), torch.zeros(1, 3, N, N, N), 2.0, RefineConfig(fine_steps=1),
                    fine=FinePair(img[..., :-1, :, :], img[..., :-1, :, :]))
    with pytest.raises(InputError, match="fine_steps"):
        RefineConfig(fine_steps=-1)


def test_refined_grid_shares_the_grids_points():
    grid = Grid(origin=(-10.0, 4.0, 2.5), spacing=(2.0, 2.0, 2.0), size=(5, 4, 3))
    fine = grid.refined(2)
    assert fine.size == (9, 7, 5) and fine.spacing == (1.0, 1.0, 1.0) and fine.origin == grid.origin
    np.testing.assert_allclose(fine.physical_points()[::2, ::2, ::2], grid.physical_points())


def _two_mm(image: sitk.Image) -> sitk.Image:
    size = [int(round(n * s / 2.0)) for n, s in zip(image.GetSize(), image.GetSpacing())]
    return sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), (2.0,) * 3,
                         image.GetDirection(), 0.0, sitk.sitkFloat32)


def test_register_runs_the_fine_level_only_where_the_images_are_finer(sample_pair):
    """1 mm brains: a last level at 1 mm, said in the log; the same brains at 2 mm: skipped, said why."""
    fixed, moving = (sitk.ReadImage(str(sample_pair[k]["image"]), sitk.sitkFloat32) for k in ("fixed", "moving"))
    cfg = RefineConfig(max_steps=2, fine_steps=2, fine_learning_rate=0.1, identity_start=False)
    res = register(fixed, moving, refine=cfg, device="cpu")
    assert any("a last level of 2 steps at 1 mm" in line for line in res.log), res.log
    assert any("refinement (custom): 4 steps" in line for line in res.log), res.log
    coarse = register(_two_mm(fixed), _two_mm(moving), refine=cfg, device="cpu")
    assert any("no level finer than the grid" in line for line in coarse.log), coarse.log
    assert any("refinement (custom): 2 steps" in line for line in coarse.log), coarse.log


def test_an_identical_pair_stays_identical_at_half_the_spacing(sample_pair):
    """The fine pair is normalised by the grid pair's percentiles: an image compared with itself through an
    affine stage that is the identity to ~1e-8 mm gives the same fine images (with their own percentiles, the
    faint interpolated voxels beside the brain moved the moving image's 1st percentile: up to 0.1 apart)."""
    from DeepRegLib.affine import AffineConfig
    from DeepRegLib.bundles import load_bundle
    from DeepRegLib.pipeline import prepare_fine, prepare_pair
    image = sitk.ReadImage(str(sample_pair["fixed"]["image"]), sitk.sitkFloat32)
    spec = load_bundle().input_spec
    near_identity = sitk.AffineTransform(3)
    near_identity.SetTranslation((1e-8, 1.3e-8, -2e-9))
    prep = prepare_pair(image, image, spec, AffineConfig(), affine=near_identity)
    grid, fixed, moving, _, _ = prepare_fine(image, image, prep, spec)
    assert fixed.shape == tuple(2 * n - 1 for n in prep.fixed.shape) == grid.shape
    assert float(np.abs(fixed - moving).max()) < 1e-5
    # the grid's samples are the fine grid's every 2nd voxel, at the same intensity mapping (antialiasing aside)
    assert float(np.median(np.abs(fixed[::2, ::2, ::2] - prep.fixed))) < 0.02


def test_cancel_during_the_fine_level_returns_the_input_flow_and_progress_counts_it():
    fixed_f, moving_f = texture(), texture(SHIFT)
    start = torch.full((1, 3, N, N, N), 0.05)
    polls, seen = [], []

    def cancel() -> bool:
        polls.append(1)
        return len(polls) > 4  # 2 grid steps, then 2 fine steps, then stop
    cfg = RefineConfig(max_steps=2, fine_steps=6, fine_learning_rate=0.1, progress_every=1, **COMMON)
    out = refine_flow(grid_of(fixed_f), grid_of(moving_f), start, 2.0, cfg, fine=FinePair(fixed_f, moving_f),
                      cancel=cancel, progress=seen.append)
    assert out.cancelled and torch.equal(out.flow, start) and out.steps == 4
    assert seen and max(seen) <= 4 / 8 + 1e-9  # fractions of the 8 steps of both levels
