"""Spatial operations: warps, composition, resizing, Jacobians, against known answers."""
import numpy as np
import pytest
import torch

from DeepRegLib.spatial import (compose, folding_percent, identity_grid, integrate_velocity,
                                jacobian_determinant, resize_flow, sd_log_jacobian, warp)


def ramp(shape=(12, 14, 16)):
    g = identity_grid(shape)
    return (g[:, 0:1] * 1.0 + g[:, 1:2] * 10.0 + g[:, 2:3] * 100.0)  # value encodes (k, j, i)


def test_zero_flow_is_identity():
    v = ramp()
    assert torch.allclose(warp(v, torch.zeros(1, 3, *v.shape[2:])), v, atol=1e-4)


def test_integer_translation_along_each_axis():
    v = ramp()
    for axis, step in ((0, 1.0), (1, 10.0), (2, 100.0)):
        flow = torch.zeros(1, 3, *v.shape[2:])
        flow[:, axis] = 2.0
        out = warp(v, flow)
        inner = out[:, :, 1:-3, 1:-3, 1:-3]
        ref = v[:, :, 1:-3, 1:-3, 1:-3] + 2.0 * step
        assert torch.allclose(inner, ref, atol=1e-3), f"axis {axis}"


def test_nearest_keeps_label_values():
    lab = torch.randint(0, 5, (1, 1, 10, 10, 10)).float()
    flow = torch.rand(1, 3, 10, 10, 10) * 3 - 1.5
    out = warp(lab, flow, mode="nearest")
    assert set(out.unique().tolist()) <= set(lab.unique().tolist())


def linear_field(matrix, shape, centre=None):
    """Voxel flow ``M (p - c)`` on ``shape`` (channels along array axes (k, j, i))."""
    g = identity_grid(shape, dtype=torch.float64)
    c = torch.tensor([(s - 1) / 2 for s in shape] if centre is None else centre, dtype=torch.float64).view(1, 3, 1, 1, 1)
    m = torch.as_tensor(np.asarray(matrix), dtype=torch.float64)
    return torch.einsum("ab,nbzyx->nazyx", m, g - c)


def test_compose_non_commuting_linear_fields_known_answer():
    """``compose(a, b)`` is the displacement of ``p -> a-map(b-map(p))``: for linear fields
    ``(I + A)(I + B) - I``, which differs from the other order (so a swap is caught)."""
    shape = (16, 18, 20)
    A = np.array([[0.0, 0.2, 0.0], [0.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    B = np.array([[0.0, 0.0, 0.0], [0.15, 0.0, -0.1], [0.0, 0.0, 0.0]])
    a, b = linear_field(A, shape), linear_field(B, shape)
    I = np.eye(3)
    want = linear_field((I + A) @ (I + B) - I, shape)
    other = linear_field((I + B) @ (I + A) - I, shape)
    got = compose(a, b)
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4), slice(4, -4))
    assert torch.allclose(got[inner], want[inner], atol=1e-6)
    assert (other[inner] - want[inner]).abs().max() > 0.1  # the orders really differ


def test_compose_matches_sequential_warps():
    torch.manual_seed(0)
    v = torch.nn.functional.avg_pool3d(torch.rand(1, 1, 20, 20, 20), 5, 1, 2)
    a = torch.nn.functional.avg_pool3d(torch.randn(1, 3, 20, 20, 20), 7, 1, 3) * 2
    b = torch.nn.functional.avg_pool3d(torch.randn(1, 3, 20, 20, 20), 7, 1, 3) * 2
    seq = warp(warp(v, a), b)
    once = warp(v, compose(a, b))
    assert (seq - once)[:, :, 4:-4, 4:-4, 4:-4].abs().max() < 0.02


def test_resize_flow_scales_displacements():
    f = torch.zeros(1, 3, 9, 9, 9); f[:, 1] = 2.0
    r = resize_flow(f, (17, 17, 17))
    assert torch.allclose(r[:, 1], torch.full_like(r[:, 1], 4.0), atol=1e-5)


def test_jacobian_of_known_maps():
    shape = (10, 10, 10)
    g = identity_grid(shape)
    scale = g * 0.5  # p -> 1.5 p : det = 1.5^3
    det = jacobian_determinant(scale)
    assert torch.allclose(det, torch.full_like(det, 1.5 ** 3), atol=1e-5)
    fold = -2.0 * g  # p -> -p : det = -1
    assert folding_percent(fold) == pytest.approx(100.0)
    assert folding_percent(torch.zeros(1, 3, *shape)) == 0.0
    assert sd_log_jacobian(scale) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (3.0, 1.2, 0.7)])
def test_jacobian_analytic_on_anisotropic_grid(spacing):
    """u_x = 0.5 x gives det 1.5; with shears the determinant depends on which component is which.

    The field is defined in mm on a grid of ``spacing`` (x, y, z) mm and passed as a voxel flow."""
    sx, sy, sz = spacing
    shape = (12, 13, 14)  # (z, y, x)
    g = identity_grid(shape, dtype=torch.float64)
    z, y, x = g[0, 0] * sz, g[0, 1] * sy, g[0, 2] * sx  # mm
    def det_of(ux, uy, uz):
        flow = torch.stack([uz / sz, uy / sy, ux / sx])[None]
        return jacobian_determinant(flow, spacing)
    d = det_of(0.5 * x, 0 * x, 0 * x)
    assert torch.allclose(d, torch.full_like(d, 1.5), atol=1e-9)
    # J = [[1.5, 0.3, 0], [0.2, 1, 0], [0, 0, 0.8]] (rows x, y, z; columns d/dx, d/dy, d/dz)
    d = det_of(0.5 * x + 0.3 * y, 0.2 * x, -0.2 * z)
    assert torch.allclose(d, torch.full_like(d, (1.5 * 1.0 - 0.3 * 0.2) * 0.8), atol=1e-9)
    # a shear in y only, and a z-dependent y displacement: det = (1 + 0.4) * 1 * 1 - 0
    d = det_of(0 * x, 0.4 * y + 0.7 * z, 0 * x)
    assert torch.allclose(d, torch.full_like(d, 1.4), atol=1e-9)


def test_scaling_and_squaring_of_linear_velocity_is_matrix_exponential():
    """exp of the linear velocity ``v(p) = M (p - c)`` is ``(expm(M) - I)(p - c)``; returning ``v`` is caught."""
    M = np.array([[0.0, -0.35, 0.0], [0.35, 0.0, 0.1], [0.0, -0.1, 0.05]])
    shape = (24, 24, 24)
    v = linear_field(M, shape)
    expm, term = np.eye(3), np.eye(3)
    for k in range(1, 30):  # Taylor series of the matrix exponential
        term = term @ M / k
        expm = expm + term
    want = linear_field(expm - np.eye(3), shape)
    got = integrate_velocity(v, 8)
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8), slice(8, -8))
    assert (got[inner] - want[inner]).abs().max() < 0.02
    assert (v[inner] - want[inner]).abs().max() > 0.1


def test_scaling_and_squaring_is_diffeomorphic_for_large_smooth_velocity():
    torch.manual_seed(1)
    v = torch.nn.functional.avg_pool3d(torch.randn(1, 3, 24, 24, 24), 9, 1, 4) * 60  # up to ~8 voxels
    assert folding_percent(v) > 10.0, "the velocity itself, used as a displacement, folds"
    assert folding_percent(integrate_velocity(v)) < 0.1


def test_gaussian_smooth_keeps_constant_and_linear_fields_and_damps_noise():
    from DeepRegLib.spatial import gaussian_smooth
    shape = (20, 22, 24)
    const = torch.full((1, 3, *shape), 1.5)
    assert torch.allclose(gaussian_smooth(const, 2.0), const, atol=1e-5)
    ramp = torch.arange(shape[2], dtype=torch.float32).expand(1, 3, *shape).contiguous()
    inner = (slice(None), slice(None), slice(7, -7), slice(7, -7), slice(7, -7))
    assert torch.allclose(gaussian_smooth(ramp, 2.0)[inner], ramp[inner], atol=1e-4)  # linear: unchanged away from borders
    torch.manual_seed(0)
    noise = torch.randn(1, 3, *shape)
    smoothed = gaussian_smooth(noise, 2.0)
    assert smoothed.shape == noise.shape and float(smoothed.std()) < 0.2 * float(noise.std())
    assert gaussian_smooth(noise, 0.0) is noise
    with pytest.raises(ValueError, match="expected a"):
        gaussian_smooth(noise[0], 1.0)
