"""The RCN teacher as published (issue 27): the reference subnets, the affine stem's det/ortho losses,
free-form augmentation, with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training import experiments
from training.augment import augment_free_form, cubic_bspline, free_form_field, sample_power
from training.config import LossConfig, ModelConfig
from training.losses import CompositeLoss, affine_det_loss, affine_matrix, affine_ortho_loss, smoothness_loss
from training.networks import VTN, VTNAffineStem, build_model
from training.trainer import Trainer

from DeepRegLib.spatial import identity_grid


def _rotation(deg: float, axis: int) -> torch.Tensor:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    i, j = [k for k in range(3) if k != axis]
    r = torch.eye(3, dtype=torch.float64)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _affine_flow(a_mm: torch.Tensor, shape, spacing) -> torch.Tensor:
    """Voxel flow of ``x_mm -> A x_mm + t`` (x in mm from the grid centre) on a grid with ``spacing``."""
    s = torch.tensor(spacing, dtype=torch.float64)
    p = (identity_grid(shape, dtype=torch.float64)[0].flatten(1) - torch.tensor([(n - 1) / 2 for n in shape],
                                                                               dtype=torch.float64)[:, None])
    x = p * s[:, None]
    y = a_mm @ x + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)[:, None]
    return ((y - x) / s[:, None]).view(1, 3, *shape)


def test_affine_matrix_recovers_a_known_physical_matrix_on_an_anisotropic_grid():
    a = _rotation(7, 0) @ _rotation(-4, 2) @ torch.diag(torch.tensor([1.1, 0.95, 1.0], dtype=torch.float64))
    a[0, 1] += 0.05  # and a shear
    flow = _affine_flow(a, (9, 11, 7), (3.0, 1.0, 1.5))
    got = affine_matrix(flow, torch.tensor([3.0, 1.0, 1.5], dtype=torch.float64))
    assert torch.allclose(got[0], a, atol=1e-10)
    # ignoring the spacing would be wrong on this grid
    assert not torch.allclose(affine_matrix(flow)[0], a, atol=1e-3)


def test_det_and_ortho_losses_have_the_references_values():
    rot = (_rotation(20, 1) @ _rotation(-35, 0))[None]
    assert float(affine_det_loss(rot)) == pytest.approx(0.0, abs=1e-12)
    assert float(affine_ortho_loss(rot)) == pytest.approx(0.0, abs=1e-4)  # eps = 1e-5 terms only
    for s in (0.8, 1.0, 1.25):
        a = (s * torch.eye(3, dtype=torch.float64))[None]
        assert float(affine_det_loss(a)) == pytest.approx((s ** 3 - 1) ** 2 / 2, rel=1e-9, abs=1e-12)
        assert float(affine_ortho_loss(a)) == pytest.approx(3 * (s * s + 1 / (s * s) - 2), abs=1e-4)
    # a pure shear keeps the volume (det 0) but is not orthogonal
    shear = torch.eye(3, dtype=torch.float64)[None].clone()
    shear[0, 0, 1] = 0.3
    assert float(affine_det_loss(shear)) == pytest.approx(0.0, abs=1e-12)
    assert float(affine_ortho_loss(shear)) > 0.08
    # the batch is summed, as the reference's l2_loss / reduce_sum
    two = torch.cat([(1.2 * torch.eye(3))[None]] * 2)
    assert float(affine_det_loss(two)) == pytest.approx(2 * float(affine_det_loss(two[:1])))


def test_composite_loss_regularises_the_affine_cascade_by_det_and_ortho_only():
    shape, spacing = (8, 10, 8), (2.0, 2.0, 2.0)
    affine = _affine_flow(1.2 * torch.eye(3, dtype=torch.float64), shape, spacing).float()
    dense = torch.randn(1, 3, *shape) * 0.3
    batch = {"fixed": torch.rand(1, 1, *shape), "moving": torch.rand(1, 1, *shape), "spacing": torch.tensor(spacing)}
    cfg = LossConfig(similarity="cc", smooth=0.5, affine_det=0.1, affine_ortho=0.1)
    terms = CompositeLoss(cfg, affine_index=0)(batch, dense, [affine, dense])
    assert float(terms["smooth"]) == pytest.approx(float(smoothness_loss(dense, spacing)), rel=1e-6)
    assert float(terms["det"]) == pytest.approx((1.2 ** 3 - 1) ** 2 / 2, rel=1e-4)
    assert float(terms["total"]) == pytest.approx(float(terms["sim"] + 0.5 * terms["smooth"] + 0.1 * terms["det"]
                                                        + 0.1 * terms["ortho"]), rel=1e-6)
    # without det/ortho weights the old behaviour: every cascade smoothed, no affine terms
    old = CompositeLoss(LossConfig(similarity="cc", smooth=0.5), affine_index=0)(batch, dense, [affine, dense])
    assert "det" not in old and float(old["smooth"]) > float(terms["smooth"])
    with pytest.raises(ValueError, match="affine_subnet"):
        CompositeLoss(cfg, affine_index=None)


def test_vtn_is_the_reference_architecture():
    net = VTN(channels=4, flow_multiplier=0.5)
    convs = [m for m in net.encoder.modules() if isinstance(m, torch.nn.Conv3d)]
    # six stride-2 levels (c .. 32c), levels 3-6 with a same-size convolution: 10 convolutions
    assert [c.out_channels for c in convs] == [4, 8, 16, 16, 32, 32, 64, 64, 128, 128]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 2, 1, 2, 1, 2, 1]
    # the flow is upsampled by learned transposed convolutions, one per level, not interpolated
    assert len(net.upflow) == 5 and all(isinstance(u, torch.nn.ConvTranspose3d) for u in net.upflow)
    f, m = torch.rand(1, 1, 21, 30, 17), torch.rand(1, 1, 21, 30, 17)
    out = net(f, m)
    assert out.shape == (1, 3, 21, 30, 17)           # any size
    out.abs().sum().backward()
    assert all(u.weight.grad is not None and u.weight.grad.abs().sum() > 0 for u in net.upflow)
    # output scaling: 20 * flow_multiplier times the last layer
    other = VTN(channels=4, flow_multiplier=1.0)
    other.load_state_dict(net.state_dict())
    assert torch.allclose(other(f, m), 2 * net(f, m), rtol=1e-5, atol=1e-9)


def test_affine_stem_flow_is_its_matrix():
    stem = VTNAffineStem(channels=2)
    with torch.no_grad():
        stem.head.weight.normal_(0, 0.05)
    f, m = torch.rand(1, 1, 12, 14, 10), torch.rand(1, 1, 12, 14, 10)
    w, b = stem.matrix(f, m)
    flow = stem(f, m)
    a = affine_matrix(flow.double())
    assert torch.allclose(a[0], torch.eye(3, dtype=torch.float64) + w[0].double(), atol=1e-5)
    centre = torch.tensor([5.5, 6.5, 4.5])
    assert torch.allclose(flow[0, :, 0, 0, 0], w[0] @ (-centre) + b[0], atol=1e-5)
    # zero head at construction: the identity
    assert VTNAffineStem(channels=2)(f, m).abs().max() == 0


def test_reference_teacher_is_at_least_ten_times_the_student():
    teacher_cfg = experiments.load("teacher_rcn_ref")
    teacher = build_model(teacher_cfg.model)
    student = build_model(ModelConfig(architecture="ldr", cascades=2))
    n = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert n(teacher) >= 10 * n(student)
    assert teacher.affine_index == 0 and isinstance(teacher.subnets[0], VTNAffineStem)
    assert [s.scale for s in teacher.subnets[1:]] == pytest.approx([20 / 3] * 3)  # flow_multiplier 1 / cascades
    assert teacher_cfg.loss.affine_det == 0.1 and teacher_cfg.loss.affine_ortho == 0.1 and teacher_cfg.data.free_form[0]
    assert teacher_cfg.loss.known_flow == 0 and teacher_cfg.loss.dice == 0  # unsupervised


def test_cubic_bspline_and_sample_power():
    t = torch.linspace(-0.5, 0.5, 11)
    shifts = sum(cubic_bspline(t - k) for k in range(-3, 4))
    assert torch.allclose(shifts, torch.ones_like(t), atol=1e-6)       # partition of unity
    assert float(cubic_bspline(torch.tensor(0.0))) == pytest.approx(2 / 3)
    v = sample_power(np.random.default_rng(0), -0.4, 0.4, 3, 200_000)
    assert v.min() > -0.4 and v.max() < 0.4
    assert np.mean(np.abs(v)) == pytest.approx(0.1, rel=0.02)          # E|u|^3 over U(-r, r), r^3 = 0.4


def test_free_form_field_bounds_and_augmentation():
    shape = (24, 32, 20)
    field = free_form_field(np.random.default_rng(3), shape, 0.4, 5)
    assert field.shape == (1, 3, *shape)
    # weights are non-negative and sum to <= 1: |field_c| <= 0.4 * side_c // 4
    for c, side in enumerate(shape):
        assert 0 < float(field[0, c].abs().max()) <= 0.4 * (side // 4) + 1e-5
    again = free_form_field(np.random.default_rng(3), shape, 0.4, 5)
    assert torch.equal(field, again)

    labels = torch.zeros(1, 1, *shape, dtype=torch.int32)
    labels[:, :, 6:18, 8:24, 5:15] = 7
    batch = {"fixed": torch.rand(1, 1, *shape), "moving": torch.rand(1, 1, *shape), "moving_labels": labels,
             "spacing": torch.tensor([2.0, 2.0, 2.0])}
    rng = np.random.default_rng(5)
    state = rng.bit_generator.state
    assert augment_free_form(dict(batch), rng, (0.0, 5)) == batch and rng.bit_generator.state == state
    out = augment_free_form(dict(batch), rng, (0.4, 5))
    assert torch.equal(out["fixed"], batch["fixed"]) and not torch.equal(out["moving"], batch["moving"])
    assert set(out["moving_labels"].unique().tolist()) <= {0, 7} and bool(out["augmented"])


def test_reference_teacher_trains_and_resumes_exactly(tmp_path):
    def cfg(steps):
        c = experiments.load("smoke_teacher_ref")
        c.run_dir = str(tmp_path / "run")
        c.loop.steps = steps
        return c
    full = experiments.load("smoke_teacher_ref")
    full.run_dir = str(tmp_path / "full")
    full.loop.steps = 2
    a = Trainer(full, verbose=False)
    a.fit()
    import csv
    rows = list(csv.DictReader(open(tmp_path / "full" / "log.csv")))
    assert {"det", "ortho", "smooth", "sim"} <= set(rows[0])
    Trainer(cfg(1), verbose=False).fit()
    b = Trainer(cfg(2), verbose=False)
    b.fit()
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
