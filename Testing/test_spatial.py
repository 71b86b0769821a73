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


def test_compose_two_translations_adds():
    a = torch.zeros(1, 3, 10, 10, 10); a[:, 0] = 1.5
    b = torch.zeros(1, 3, 10, 10, 10); b[:, 2] = -2.0
    c = compose(a, b)
    assert torch.allclose(c[:, 0], torch.full_like(c[:, 0], 1.5), atol=1e-5)
    assert torch.allclose(c[:, 2], torch.full_like(c[:, 2], -2.0), atol=1e-5)


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


def test_scaling_and_squaring_of_constant_velocity_is_translation():
    v = torch.zeros(1, 3, 12, 12, 12); v[:, 0] = 1.0
    assert torch.allclose(integrate_velocity(v)[:, :, 3:-3, 3:-3, 3:-3], v[:, :, 3:-3, 3:-3, 3:-3], atol=1e-4)


def test_scaling_and_squaring_is_diffeomorphic_for_large_smooth_velocity():
    torch.manual_seed(1)
    v = torch.nn.functional.avg_pool3d(torch.randn(1, 3, 24, 24, 24), 9, 1, 4) * 20
    assert folding_percent(integrate_velocity(v)) < folding_percent(v) + 1e-9
