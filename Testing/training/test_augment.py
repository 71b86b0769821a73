"""Random affine augmentation of the moving image (training/augment.py): known answers in physical space."""
from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from training.augment import augment_moving, physical_to_theta, rotation_matrix, warp_affine


def _warp(array: np.ndarray, matrix, shift_mm, spacing_zyx) -> np.ndarray:
    theta = physical_to_theta(np.asarray(matrix), shift_mm, array.shape, spacing_zyx)[None]
    return warp_affine(torch.from_numpy(array)[None, None], theta, "bilinear")[0, 0].numpy()


def test_translation_in_mm_on_an_anisotropic_grid():
    rng = np.random.default_rng(0)
    a = rng.random((6, 8, 10)).astype(np.float32)
    spacing = (3.0, 2.0, 0.5)  # z, y, x mm
    out = _warp(a, np.eye(3), (1.0, 0.0, 0.0), spacing)  # 1 mm along x = 2 voxels of 0.5 mm
    # resampling convention: out(p) = in(p + t), so out[..., i] = in[..., i + 2]
    np.testing.assert_allclose(out[:, :, :-2], a[:, :, 2:], atol=1e-5)
    out = _warp(a, np.eye(3), (0.0, 0.0, -6.0), spacing)  # -6 mm along z = -2 voxels of 3 mm
    np.testing.assert_allclose(out[2:], a[:-2], atol=1e-5)


def test_quarter_turn_about_z_moves_voxel_centres_to_voxel_centres():
    rng = np.random.default_rng(1)
    n = 8
    a = rng.random((4, n, n)).astype(np.float32)
    out = _warp(a, rotation_matrix((0.0, 0.0, math.pi / 2)), (0, 0, 0), (1.0, 1.0, 1.0))
    # p_in = R p_out with R (x, y) -> (-y, x): out[z, j, i] = in[z, i, n - 1 - j]
    expected = np.transpose(a[:, :, ::-1], (0, 2, 1))
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_rotation_scale_translation_agree_with_simpleitk_on_an_anisotropic_grid():
    rng = np.random.default_rng(2)
    shape, spacing_zyx = (12, 16, 20), (2.5, 1.5, 1.0)
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    a = (np.sin(x / 3.0) + np.cos(y / 4.0) * z / 6.0).astype(np.float32)  # smooth, so interpolation agrees
    matrix = rotation_matrix(np.deg2rad((7.0, -5.0, 12.0))) * 1.06
    shift = np.array([1.3, -2.1, 0.8])
    ours = _warp(a, matrix, shift, spacing_zyx)

    img = sitk.GetImageFromArray(a)
    img.SetSpacing(spacing_zyx[::-1])
    img.SetOrigin([-(n - 1) / 2 * s for n, s in zip(shape[::-1], spacing_zyx[::-1])])  # centre at 0 mm
    tx = sitk.AffineTransform(3)
    tx.SetMatrix(matrix.ravel().tolist())
    tx.SetTranslation(shift.tolist())
    ref = sitk.GetArrayFromImage(sitk.Resample(img, img, tx, sitk.sitkLinear, np.nan))
    inside = np.isfinite(ref)
    inside[:2], inside[-2:], inside[:, :2], inside[:, -2:], inside[..., :2], inside[..., -2:] = (False,) * 6
    assert inside.sum() > 0.3 * inside.size
    np.testing.assert_allclose(ours[inside], ref[inside], atol=2e-3)


def test_augment_moving_changes_only_the_moving_side():
    rng = np.random.default_rng(3)
    labels = torch.from_numpy(rng.integers(0, 5, (2, 1, 8, 8, 8)))
    batch = {"fixed": torch.rand(2, 1, 8, 8, 8), "moving": torch.rand(2, 1, 8, 8, 8),
             "fixed_labels": labels.clone(), "moving_labels": labels.clone(),
             "spacing": torch.tensor([1.0, 1.0, 1.0])}
    same = augment_moving(dict(batch), rng, (0.0, 0.0, 0.0))
    assert "augmented" not in same and same["moving"] is batch["moving"]
    fixed = batch["fixed"].clone()
    out = augment_moving(dict(batch), rng, (10.0, 0.1, 2.0))
    assert torch.equal(out["fixed"], fixed) and torch.equal(out["fixed_labels"], labels)
    assert not torch.equal(out["moving"], batch["moving"]) and bool(out["augmented"])
    assert out["moving_labels"].dtype == labels.dtype and set(out["moving_labels"].unique().tolist()) <= set(range(5))


# ----------------------------------------------------------------------------- the refined teacher's flows
def test_flipped_flow_registers_the_flipped_pair():
    """warp(flip(m), flip_flow(u)) == flip(warp(m, u)) for a smooth random flow, on every axis."""
    from DeepRegLib.spatial import warp
    from training.networks.refined_teacher import flip_flow
    torch.manual_seed(0)
    m = torch.rand(1, 1, 10, 12, 14)
    u = torch.nn.functional.interpolate(torch.randn(1, 3, 3, 3, 4) * 2, size=(10, 12, 14), mode="trilinear",
                                        align_corners=True)
    for axis in (2, 3, 4):
        lhs = warp(m.flip(axis), flip_flow(u[0], axis)[None])
        rhs = warp(m, u).flip(axis)
        inner = (slice(None), slice(None), slice(3, -3), slice(3, -3), slice(3, -3))  # away from the border
        torch.testing.assert_close(lhs[inner], rhs[inner], atol=1e-5, rtol=0)


def test_refined_teacher_flows_are_computed_once_kept_on_disk_and_flipped(tmp_path):
    from DeepRegLib.grid import Grid
    from DeepRegLib.refine import RefineConfig
    from training.networks.refined_teacher import RefinedTeacherFlows, flip_flow
    torch.manual_seed(1)
    shape = (12, 12, 12)
    grid = Grid(origin=(0.0, 0.0, 0.0), spacing=(2.0, 2.0, 2.0), size=shape[::-1])
    z = torch.arange(12.0)
    fixed = torch.exp(-((z[:, None, None] - 6) ** 2 + (z[None, :, None] - 6) ** 2 + (z[None, None] - 6) ** 2) / 12) + 0.05 * torch.rand(12, 12, 12)
    fixed = fixed[None, None]
    moving = torch.roll(fixed, 1, dims=4)  # one voxel along x: refinement has something to do
    calls = []

    def teacher(f, m):
        calls.append(1)
        return torch.zeros(1, 3, *shape)

    cfg = RefineConfig(max_steps=10, ncc_window_mm=6.0)
    flows = RefinedTeacherFlows(tmp_path / "tf", [grid], cfg)
    sp = torch.tensor([2.0, 2.0, 2.0])
    a = flows.flow((0, False), fixed, moving, teacher, sp)
    assert a.shape == (3, *shape) and float(a.abs().max()) > 0 and len(calls) == 1 and flows.computed == 1
    axis = 4  # identity direction: LR (x) is array axis 4
    b = flows.flow((0, True), fixed.flip(axis), moving.flip(axis), teacher, sp)
    assert len(calls) == 1 and torch.equal(b, flip_flow(a, axis))  # the flipped pair: no second refinement
    again = RefinedTeacherFlows(tmp_path / "tf", [grid], cfg)  # a resumed run reads it from disk
    assert torch.equal(again.flow((0, False), fixed, moving, teacher, sp), a) and again.computed == 0


def test_stored_network_flows_are_the_teachers_own_per_flip_and_shared_on_disk(tmp_path):
    """``strategy.teacher_store`` (config None): the network's flow as it is (no refinement), each (pair, flip)
    computed by the network itself (a network is not flip-equivariant) once, then read by any later run;
    the folder is keyed apart from the refined flows of the same teacher and data."""
    from DeepRegLib.grid import Grid
    from DeepRegLib.refine import RefineConfig
    from training.networks.refined_teacher import RefinedTeacherFlows, flows_folder
    shape = (8, 8, 8)
    grid = Grid(origin=(0.0, 0.0, 0.0), spacing=(2.0, 2.0, 2.0), size=shape[::-1])
    fixed, moving = torch.rand(1, 1, *shape), torch.rand(1, 1, *shape)
    calls = []

    def teacher(f, m):  # a "network" that depends on its input (so the flip is not a copy)
        calls.append(1)
        return torch.stack([f[0, 0] - m[0, 0], m[0, 0], f[0, 0]])[None]

    sp = torch.tensor([2.0, 2.0, 2.0])
    store = RefinedTeacherFlows(tmp_path / "tf", [grid], None)
    a = store.flow((0, False), fixed, moving, teacher, sp)
    assert torch.allclose(a, teacher(fixed, moving)[0], atol=1e-3)  # float16 on disk, the network's own flow
    b = store.flow((0, True), fixed.flip(4), moving.flip(4), teacher, sp)
    assert len(calls) == 3 and torch.allclose(b, teacher(fixed.flip(4), moving.flip(4))[0], atol=1e-3)
    n = len(calls)
    other_run = RefinedTeacherFlows(tmp_path / "tf", [grid], None)
    assert torch.equal(other_run.flow((0, True), fixed.flip(4), moving.flip(4), teacher, sp), b)
    assert len(calls) == n and other_run.computed == 0
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "best.pt").write_bytes(b"w")
    plain = flows_folder(tmp_path / "t", {"task": "x"}, tmp_path, None)
    assert plain.parent.name == "teacher_flows" and plain.name != flows_folder(tmp_path / "t", {"task": "x"}, tmp_path,
                                                                               RefineConfig()).name


def test_random_smooth_field_amplitude_physical_and_invertible():
    """The field's spread is the requested amplitude in mm on every axis, whatever the voxel size, and
    it folds nowhere (positive Jacobian determinant) at the settings the experiments use."""
    from training.augment import random_smooth_field
    from DeepRegLib.spatial import identity_grid
    rng = np.random.default_rng(0)
    spacing = [3.0, 2.0, 1.5]  # array order (z, y, x), anisotropic
    shape = (40, 60, 80)
    mm = torch.cat([random_smooth_field(rng, shape, spacing, 2.5, 20.0) for _ in range(8)])
    mm = mm * torch.tensor(spacing).view(1, 3, 1, 1, 1)
    for k in range(3):
        # the standard deviation is 2.5 mm at the control points; trilinear interpolation between
        # independent values lowers it in between (to ~0.55x on average over a cell)
        assert 0.45 * 2.5 < float(mm[:, k].std()) < 0.75 * 2.5, k
    coords = identity_grid(shape, torch.device("cpu"), torch.float32) + mm / torch.tensor(spacing).view(1, 3, 1, 1, 1)
    jac = torch.stack([torch.stack(torch.gradient(coords[:, i], dim=(1, 2, 3)), 1) for i in range(3)], 1)
    det = torch.linalg.det(jac.permute(0, 3, 4, 5, 1, 2))
    assert float(det.min()) > 0


def test_fixed_warp_target_registers_the_warped_pair():
    """A pair whose true fixed -> moving flow phi is known: after the fixed image is warped by psi, the
    composed target compose(phi, psi), which the distillation strategy uses, registers the new pair
    (the moving image warped by it equals the warped fixed image), and the batch keeps the original."""
    from DeepRegLib.spatial import compose, warp
    from training.augment import augment_fixed_warp
    torch.manual_seed(0)
    z, y, x = torch.meshgrid(*[torch.linspace(-1, 1, 32)] * 3, indexing="ij")
    moving = (torch.exp(-((z - 0.1) ** 2 + (y + 0.2) ** 2 + x ** 2) / 0.3) + 0.5 * torch.cos(3 * x) * torch.sin(2 * y))[None, None]
    phi = torch.zeros(1, 3, 32, 32, 32)
    phi[:, 0], phi[:, 2] = 1.5, -0.5 * torch.sin(3 * y)  # voxels: a shift and a smooth shear
    fixed = warp(moving, phi)
    batch = {"fixed": fixed.clone(), "moving": moving.clone(), "spacing": torch.tensor([2.0, 2.0, 2.0]),
             "fixed_labels": (fixed > 0.5).to(torch.int16)}
    out = augment_fixed_warp(batch, np.random.default_rng(1), (2.5, 20.0))
    psi = out["fixed_warp"]
    assert psi.shape == (1, 3, 32, 32, 32) and float(psi.abs().max()) > 0.5
    assert torch.equal(out["fixed_unwarped"], fixed) and not torch.allclose(out["fixed"], fixed)
    inner = (slice(None), slice(None), slice(6, -6), slice(6, -6), slice(6, -6))
    err = (warp(moving, compose(phi, psi)) - out["fixed"])[inner].abs().max()
    base = (moving - out["fixed"])[inner].abs().max()
    assert float(err) < 0.05 * float(base)
    assert out["fixed_labels"].dtype == torch.int16
    assert augment_fixed_warp({"fixed": fixed}, np.random.default_rng(1), (0.0, 20.0)).keys() == {"fixed"}


class _Zero(torch.nn.Module):
    def forward(self, fixed, moving):
        z = torch.zeros(fixed.shape[0], 3, *fixed.shape[2:])
        return z, [z]


class _Shift(torch.nn.Module):
    """A network that always answers a fixed shift: it ignores the images, like the zero network."""

    def forward(self, fixed, moving):
        z = torch.zeros(fixed.shape[0], 3, *fixed.shape[2:])
        z[:, 1] = 0.7
        return z, [z]


def test_warp_probe_known_answers():
    """A network that ignores the images follows nothing of psi: exactly 0 for the zero flow and for a
    constant shift (its own flow composed with psi is psi plus the shift)."""
    from training.studies.warp_probe import probe
    torch.manual_seed(0)
    batches = [{"fixed": torch.rand(1, 1, 16, 16, 16), "moving": torch.rand(1, 1, 16, 16, 16),
                "spacing": torch.tensor([2.0, 2.0, 2.0])} for _ in range(2)]
    zero = probe(_Zero(), batches, 2.5, 20.0, draws=2)
    assert zero["followed"] == 0.0 and zero["psi_sq_mm2"] > 0.5 and zero["pairs"] == 2
    shift = probe(_Shift(), batches, 2.5, 20.0, draws=2)
    assert shift["followed"] == pytest.approx(0.0, abs=1e-4)
    assert shift["psi_sq_mm2"] == pytest.approx(zero["psi_sq_mm2"])  # the same seeded fields


def test_warp_probe_counts_only_the_warped_brain():
    """The probe's error and |psi|^2 are means over the voxels labelled in the warped fixed image: a
    difference outside them does not count; without labels every voxel counts."""
    from training.studies.warp_probe import brain_mask, masked_sq_mm
    labels = torch.zeros(1, 1, 8, 8, 8, dtype=torch.int16)
    labels[..., :4, :, :] = 5
    psi = torch.zeros(1, 3, 8, 8, 8)
    mask = brain_mask({"fixed_labels": labels}, psi)
    assert int(mask.sum()) == 4 * 64
    a, b = torch.zeros(1, 3, 8, 8, 8), torch.zeros(1, 3, 8, 8, 8)
    b[:, 1, 4:] = 1.0  # 1 voxel = 2 mm, outside the labels only
    sp = torch.tensor([2.0, 2.0, 2.0])
    assert masked_sq_mm(a, b, sp, mask) == 0.0
    assert masked_sq_mm(a, b, sp, None) == pytest.approx(4.0 / 2)
    psi[:, 0] = 4.0  # a 4-voxel shift along axis 0 moves the labelled half out of the first 4 slices
    assert int(brain_mask({"fixed_labels": labels}, psi)[..., :4, :, :].sum()) == 0
    assert brain_mask({}, psi) is None
