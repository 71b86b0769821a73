"""Cross-resolution distillation: the low-resolution student's mapping, feature losses, the FST,
the crd strategy (smoke), the bundle round trip and ``deepreg models``."""
from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn as nn

from DeepRegLib.grid import Grid
from DeepRegLib.models import LowResolution, build_network, count_parameters
from DeepRegLib.models.lowres import downsample, space_to_depth
from DeepRegLib.transforms import flow_to_displacement
from training import experiments
from training.config import to_dict
from training.losses import attention_loss, attention_map
from training.strategies.crd import ATTENTION_LEVELS, FeatureShiftedTeacher, match_shape
from training.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]


class StubCascade(nn.Module):
    """Stands in for the inner cascade: records its inputs, returns a fixed low-resolution flow."""

    def __init__(self, make_flow) -> None:
        super().__init__()
        self.subnets = nn.ModuleList()
        self.make_flow = make_flow
        self.seen = None

    def forward(self, fixed, moving):
        self.seen = (fixed, moving)
        flow = self.make_flow(fixed.shape[2:])
        return flow, [flow, 0.5 * flow]


def ramp(shape, a, b):
    """Low-resolution voxel flow: channel c = a[c] * q_c + b[c] (q_c = index along array axis c)."""
    q = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij")
    return torch.stack([a[c] * q[c] + b[c] for c in range(3)])[None]


# ----------------------------------------------------------------------------- the low-resolution mapping
def test_lowres_flow_is_the_upsampled_scaled_low_resolution_flow():
    a, b = (0.1, -0.2, 0.05), (0.5, -1.0, 0.25)  # a different ramp and offset per axis
    stub = StubCascade(lambda shape: ramp(shape, a, b))
    net = LowResolution(stub, factor=2)
    fixed = torch.rand(1, 1, 12, 16, 20)
    moving = torch.rand(1, 1, 12, 16, 20)
    flow, flows = net(fixed, moving)
    assert flow.shape == (1, 3, 12, 16, 20) and len(flows) == 2
    # the inner network saw the 2x2x2 block means
    blocks = fixed[0, 0].reshape(6, 2, 8, 2, 10, 2).mean(dim=(1, 3, 5))
    assert torch.allclose(stub.seen[0][0, 0], blocks, atol=1e-6)
    assert stub.seen[1].shape == (1, 1, 6, 8, 10)
    # input voxel p lies at low-resolution coordinate (p - 0.5) / 2; displacements double (4 mm -> 2 mm voxels)
    p = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in (12, 16, 20)], indexing="ij")
    interior = (slice(1, -1), slice(1, -1), slice(1, -1))
    for c in range(3):
        expected = a[c] * (p[c] - 0.5) + 2 * b[c]
        assert torch.allclose(flow[0, c][interior], expected[interior], atol=1e-5), c
    # beyond the outermost low-resolution centres the field is held constant (voxel 0 -> q = 0)
    assert torch.allclose(flow[0, 0, 0], torch.full((16, 20), 2 * b[0]), atol=1e-5)
    # per-cascade flows are upsampled the same way
    assert torch.allclose(flows[1], 0.5 * flow, atol=1e-6)


def test_lowres_handles_odd_sizes():
    stub = StubCascade(lambda shape: torch.ones(1, 3, *shape))
    flow, _ = LowResolution(stub, 2)(torch.rand(1, 1, 13, 16, 21), torch.rand(1, 1, 13, 16, 21))
    assert stub.seen[0].shape == (1, 1, 7, 8, 11)
    assert flow.shape == (1, 3, 13, 16, 21) and torch.allclose(flow, torch.full_like(flow, 2.0))


def test_lowres_mapping_agrees_with_simpleitk_in_physical_space():
    """The 2 mm field (mm) equals ITK's linear interpolation of the 4 mm field at the same physical points."""
    torch.manual_seed(0)
    low = torch.randn(1, 3, 6, 8, 10)
    net = LowResolution(StubCascade(lambda shape: low), 2)
    hr_grid = Grid((10.0, -20.0, 5.0), (2.0, 2.0, 2.0), (20, 16, 12))  # size x, y, z; arrays (12, 16, 20)
    # a low-resolution voxel is the mean of a 2x2x2 block: centre half a 2 mm voxel beyond the block's first voxel
    lr_grid = Grid(tuple(o + 1.0 for o in hr_grid.origin), (4.0, 4.0, 4.0), (10, 8, 6))
    flow, _ = net(torch.zeros(1, 1, 12, 16, 20), torch.zeros(1, 1, 12, 16, 20))
    hr_mm = flow_to_displacement(flow, hr_grid)
    lr_field = sitk.DisplacementFieldTransform(
        lr_grid.image_from_array(flow_to_displacement(low, lr_grid).astype(np.float64), is_vector=True))
    pts = hr_grid.physical_points()
    for k, j, i in [(1, 1, 1), (5, 7, 9), (10, 14, 18), (3, 12, 2), (7, 2, 15)]:
        x = pts[k, j, i]
        itk_disp = np.array(lr_field.TransformPoint(tuple(x))) - x
        assert np.allclose(hr_mm[k, j, i], itk_disp, atol=1e-4), (k, j, i, hr_mm[k, j, i], itk_disp)


def test_forward_features_agree_with_forward():
    torch.manual_seed(0)
    f, m = torch.rand(1, 1, 32, 32, 48), torch.rand(1, 1, 32, 32, 48)
    net = build_network("ldr", 2, base=4)
    with torch.no_grad():
        flow, flows = net(f, m)
        flow2, flows2, feats = net.forward_features(f, m)
    assert torch.equal(flow, flow2) and all(torch.equal(x, y) for x, y in zip(flows, flows2))
    sub = net.subnets[0]
    assert [t.shape[1] for t in feats[0]] == sub.feature_channels == [4, 8, 16, 32, 16, 8, 4]
    assert [tuple(t.shape[2:]) for t in feats[0]] == [(16, 16, 24), (8, 8, 12), (4, 4, 6), (2, 2, 3),
                                                        (4, 4, 6), (8, 8, 12), (16, 16, 24)]
    low = build_network("lowres_ldr", 2, factor=2, base=4)
    with torch.no_grad():
        a, _ = low(f, m)
        b, bs, lfeats = low.forward_features(f, m)
    assert torch.equal(a, b) and len(bs) == 2 and tuple(lfeats[0][0].shape[2:]) == (8, 8, 16)  # 16x16x24 padded to 16
    assert count_parameters(low) == count_parameters(net)


def test_lowres_network_keeps_no_full_resolution_cascade_flows_at_inference():
    net = build_network("lowres_ldr", 2).eval()
    with torch.no_grad():
        flow, flows = net(torch.rand(1, 1, 32, 32, 32), torch.rand(1, 1, 32, 32, 32))
    assert all(t.shape[2:] == (16, 16, 16) for t in flows._flows)  # stored at 4 mm
    assert flows[0].shape == flow.shape and len(list(flows)) == 2  # upsampled when read


# ----------------------------------------------------------------------------- attention-map losses
def test_attention_loss_known_answers():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 4, 4, 4)
    assert float(attention_loss([x], [x])) < 1e-12
    assert float(attention_loss([x], [3.0 * x])) < 1e-10  # normalised: scale-free
    a = attention_map(x)
    assert a.shape == (2, 64) and torch.allclose(a.norm(dim=1), torch.ones(2))
    assert torch.allclose(a[0], (x[0] ** 2).sum(0).flatten() / (x[0] ** 2).sum(0).norm())
    n = 64
    one = torch.zeros(1, 3, 4, 4, 4)
    one[0, 1, 2, 3, 1] = 5.0  # a single active voxel: a_s = e_k
    uniform = torch.ones(1, 16, 4, 4, 4)  # a_t = 1/sqrt(n) everywhere (channel count may differ)
    expected = 2.0 - 2.0 / math.sqrt(n)
    assert abs(float(attention_loss([one], [uniform])) - expected) < 1e-6
    other = torch.zeros(1, 3, 4, 4, 4)
    other[0, 0, 0, 0, 0] = 1.0  # disjoint support: the maximum, 2
    assert abs(float(attention_loss([one], [other])) - 2.0) < 1e-6
    # several scales: the mean of the levels' values
    assert abs(float(attention_loss([one, x[:1, :, :2]], [other, x[:1, :, :2]])) - 1.0) < 1e-6
    with pytest.raises(ValueError, match="spatial shape"):
        attention_loss([one], [torch.ones(1, 3, 4, 4, 2)])


def test_attention_loss_pulls_only_the_student():
    s = torch.randn(1, 4, 4, 4, 4, requires_grad=True)
    t = torch.randn(1, 4, 4, 4, 4, requires_grad=True)
    attention_loss([s], [t]).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


# ----------------------------------------------------------------------------- FST
def test_match_shape_crops_and_pads_at_the_high_end():
    x = torch.arange(4.0).view(1, 1, 4, 1, 1).expand(1, 1, 4, 2, 3)
    y = match_shape(x, (6, 1, 3))
    assert y.shape == (1, 1, 6, 1, 3)
    assert y[0, 0, :, 0, 0].tolist() == [0, 1, 2, 3, 3, 3]


def test_fst_shapes_on_the_brain_grid():
    torch.manual_seed(0)
    student = build_network("lowres_ldr", 2, factor=2, base=4)
    teacher = build_network("ldr", 2, base=8)  # the HR model: other channel counts are fine
    f = torch.rand(1, 1, 40, 48, 40)  # 2 mm: 20x24x20 at 4 mm, padded to 32^3 inside the student
    with torch.no_grad():
        _, _, s_feats = student.forward_features(f, f)
        _, _, t_feats = teacher.forward_features(f, f)
    assert tuple(s_feats[0][0].shape[2:]) == (16, 16, 16) and tuple(t_feats[0][1].shape[2:]) == (12, 12, 12)
    fst = FeatureShiftedTeacher(student.subnets[0].feature_channels, teacher.subnets[0].feature_channels)
    flow, feats = fst(s_feats[0], t_feats[0])
    assert flow.shape == (1, 3, 32, 32, 32)  # on the student's padded 4 mm grid
    assert [t.shape for t in feats] == [t.shape for t in s_feats[0]]
    assert student.to_input_grid(flow, (40, 48, 40)).shape == (1, 3, 40, 48, 40)
    loss = attention_loss([s_feats[0][i] for i in ATTENTION_LEVELS], [feats[i] for i in ATTENTION_LEVELS])
    assert 0.0 < float(loss) < 2.0


def test_fst_shapes_with_subnets_padded_inside():
    """pad_inside: the 4 mm student runs on 16x24x16 as it is (not padded to 16x32x16), teacher level k+1
    matches student level k exactly, and the FST decodes back to the unpadded 4 mm grid."""
    torch.manual_seed(0)
    student = build_network("lowres_ldr", 2, factor=2, base=4, pad_inside=True)
    teacher = build_network("ldr", 2, base=8)
    f = torch.rand(1, 1, 32, 48, 32)  # 2 mm, multiples of 16 as the brain grid 80x96x80 is
    with torch.no_grad():
        _, _, s_feats = student.forward_features(f, f)
        _, _, t_feats = teacher.forward_features(f, f)
    assert [tuple(x.shape[2:]) for x in s_feats[0][:4]] == [(8, 12, 8), (4, 6, 4), (2, 3, 2), (1, 2, 1)]
    assert [tuple(x.shape[2:]) for x in s_feats[0][:3]] == [tuple(x.shape[2:]) for x in t_feats[0][1:4]]
    fst = FeatureShiftedTeacher(student.subnets[0].feature_channels, teacher.subnets[0].feature_channels, True)
    flow, feats = fst(s_feats[0], t_feats[0])
    assert flow.shape == (1, 3, 16, 24, 16)
    assert [t.shape for t in feats] == [t.shape for t in s_feats[0]]


def test_ldr_padded_inside_equals_the_default_on_multiples_of_16_and_takes_any_size():
    torch.manual_seed(0)
    a = build_network("ldr", 2, base=4).eval()
    b = build_network("ldr", 2, base=4, pad_inside=True).eval()
    b.load_state_dict(a.state_dict())
    assert a.multiple == 16 and b.multiple == 1
    f, m = torch.rand(1, 1, 32, 16, 48), torch.rand(1, 1, 32, 16, 48)
    with torch.no_grad():
        assert torch.equal(a(f, m)[0], b(f, m)[0])
        odd = b(torch.rand(1, 1, 21, 13, 40), torch.rand(1, 1, 21, 13, 40))[0]
        # the default pads the input to 32x16x48 and crops back: the same shape, different border handling
        assert odd.shape == a(torch.rand(1, 1, 21, 13, 40), torch.rand(1, 1, 21, 13, 40))[0].shape == (1, 3, 21, 13, 40)


@pytest.mark.parametrize("factor,shape", [(2, (5, 6, 7)), (3, (4, 3, 5)), (2, (1, 2, 1))])
def test_separable_trilinear_upsample_matches_interpolate(factor, shape):
    from DeepRegLib.models.lowres import trilinear_upsample
    x = torch.randn(2, 3, *shape)
    ref = torch.nn.functional.interpolate(x, scale_factor=factor, mode="trilinear", align_corners=False)
    assert torch.allclose(trilinear_upsample(x, factor), ref, atol=1e-6)


@pytest.mark.parametrize("shape", [(12, 16, 20), (13, 16, 21)])
def test_space_to_depth_keeps_every_voxel_and_its_block_means_are_downsample(shape):
    image = torch.rand(2, 1, *shape)
    s2d = space_to_depth(image, 2)
    assert s2d.shape == (2, 8, *[-(-n // 2) for n in shape])
    # channel (a * 2 + b) * 2 + e holds voxel (2q + a, 2r + b, 2s + e)
    for a in range(2):
        for b in range(2):
            for e in range(2):
                sub = image[:, 0, a::2, b::2, e::2]
                got = s2d[:, (a * 2 + b) * 2 + e][:, :sub.shape[1], :sub.shape[2], :sub.shape[3]]
                assert torch.equal(got, sub), (a, b, e)
    assert torch.allclose(s2d.mean(1, keepdim=True), downsample(image, 2), atol=1e-6)


def test_unshuffled_student_started_from_a_lowres_model_computes_the_same_flow(tmp_path):
    """An ``unshuffle`` student whose first convolutions are widened from an averaging student's
    (trainer.widen_inputs) computes that student's flow exactly; training then can use the detail."""
    from training.trainer import widen_inputs
    torch.manual_seed(0)
    avg = build_network("lowres_ldr", 2, factor=2, pad_inside=True, base=4)
    for prm in avg.parameters():  # make the flow layer matter (it starts near zero)
        prm.data.normal_(0, 0.2)
    s2d = build_network("lowres_ldr", 2, factor=2, pad_inside=True, base=4, unshuffle=True)
    assert s2d.inner.subnets[0].enc1[0].weight.shape[1] == 16  # 2 images x 8 sub-voxels
    state, note = widen_inputs(s2d, avg.state_dict())
    assert "widened 8x (2 cascades)" in note
    s2d.load_state_dict(state)
    fixed, moving = torch.rand(1, 1, 20, 24, 18), torch.rand(1, 1, 20, 24, 18)
    with torch.no_grad():
        want, got = avg(fixed, moving)[0], s2d(fixed, moving)[0]
    tol = 1e-4 * float(want.abs().max())  # float32 rounding through a deep random network
    assert want.abs().max() > 0.1 and torch.allclose(got, want, atol=tol)
    # the unshuffled network does see the detail: a change that keeps every 2x2x2 mean moves its flow
    detail = torch.zeros_like(fixed)
    detail[:, :, 0::2] += 0.1
    detail[:, :, 1::2] -= 0.1
    with torch.no_grad():
        assert torch.allclose(avg(fixed + detail, moving)[0], want, atol=tol)
        s2d.inner.subnets[0].enc1.apply(lambda m: m.weight.data.add_(0.1 * torch.randn_like(m.weight))
                                        if isinstance(m, nn.Conv3d) else None)
        assert not torch.allclose(s2d(fixed + detail, moving)[0], s2d(fixed, moving)[0], atol=10 * tol)


def test_a_lowres_student_warm_starts_from_a_2mm_cascade(tmp_path, hr_teacher):
    """model.init = a high-resolution run: its weights load into the 4 mm student's inner cascade."""
    cfg = experiments.load("smoke_standard")
    cfg.model.architecture, cfg.model.kwargs = "lowres_ldr", {"factor": 2, "pad_inside": True}
    cfg.model.init, cfg.run_dir = str(hr_teacher), str(tmp_path / "warm")
    tr = Trainer(cfg, verbose=False)
    hr = torch.load(hr_teacher / "best.pt", weights_only=False)["modules"]["model"]
    inner = tr.model.inner.state_dict()
    assert set(inner) == set(hr) and all(torch.equal(inner[k], hr[k].float()) for k in hr)
    assert tr.extra["init"]["into"] == "inner cascade (low resolution)"


def test_warm_started_ablation_arms_share_the_student_budget_and_start():
    arms = [experiments.load(n) for n in ("lowres_warm_noteacher", "lowres_warm_flowdistill", "crd_lowres_warm")]
    a = arms[0]
    assert a.model.init == "Resources/models/ldr_brain_v1" and a.model.kwargs == {"factor": 2, "pad_inside": True}
    for b in arms[1:]:
        assert (b.model, b.loop, b.data, b.optim) == (a.model, a.loop, a.data, a.optim)
    assert [x.strategy.name for x in arms] == ["standard", "distill", "crd"]
    assert arms[2].loss == experiments.load("crd_lowres").loss  # the same CRD terms as from scratch


# ----------------------------------------------------------------------------- the crd strategy (smoke)
@pytest.fixture(scope="module")
def hr_teacher(tmp_path_factory) -> Path:
    """A smoke high-resolution LDR run (what smoke_crd's teacher path names)."""
    from conftest import smoke_run
    return smoke_run(tmp_path_factory, "smoke_standard")


def crd_cfg(tmp_path: Path, teacher: Path, steps: int = 2):
    cfg = experiments.load("smoke_crd")
    cfg.run_dir = str(tmp_path / "smoke_crd")
    cfg.strategy.teacher = str(teacher)
    cfg.loop.steps = steps
    return cfg


@pytest.fixture(scope="module")
def crd_run(tmp_path_factory, hr_teacher):
    cfg = crd_cfg(tmp_path_factory.mktemp("crd"), hr_teacher)
    tr = Trainer(cfg, command="python -m training run smoke_crd", verbose=False)
    before = {k: {n: v.clone() for n, v in m.state_dict().items()} for k, m in tr.strategy.modules.items()}
    tr.fit()
    return tr, before


def test_crd_smoke_trains_student_and_fst(crd_run):
    tr, before = crd_run
    assert set(tr.strategy.modules) == {"model", "fst"} and set(tr.strategy.optimisers) == {"model", "fst"}
    for k in ("model", "fst"):
        after = tr.strategy.modules[k].state_dict()
        assert any(not torch.equal(before[k][n], after[n]) for n in after), k
    header = (tr.run_dir / "log.csv").read_text().splitlines()[0].split(",")
    assert {"sim", "smooth", "distill", "attention", "fst_flow", "fst_sim", "fst_total", "total"} <= set(header)
    row = dict(zip(header, (tr.run_dir / "log.csv").read_text().splitlines()[1].split(",")))
    assert 0.0 < float(row["attention"]) <= 2.0
    # the logged totals are the configured weightings of the logged terms (student and FST)
    w, x = tr.cfg.loss, {k: float(v) for k, v in row.items() if v}
    assert x["total"] == pytest.approx(x["sim"] + w.smooth * x["smooth"] + w.dice * x.get("dice", 0.0)
                                       + w.distill * x["distill"] + w.fst_flow * x["fst_flow"]
                                       + w.attention * x["attention"], rel=1e-5)
    assert x["fst_total"] == pytest.approx(x["fst_sim"] + w.smooth * x["fst_smooth"] + w.distill * x["fst_distill"],
                                           rel=1e-5)
    assert "fst_dice" not in x  # the FST is not trained on labels
    ck = torch.load(tr.run_dir / "last.pt", weights_only=False)
    assert set(ck["modules"]) == {"model", "fst"}
    assert isinstance(tr.model, LowResolution) and tr.history and "dice" in tr.history[-1]


def test_crd_resume_continues_exactly(tmp_path, hr_teacher):
    """2 steps in one go == 1 step, stop, resume for 1 more: student and FST identical bit for bit."""
    a = crd_cfg(tmp_path / "a", hr_teacher, steps=2)
    ta = Trainer(a, verbose=False)
    ta.fit()
    b = crd_cfg(tmp_path / "b", hr_teacher, steps=1)
    Trainer(b, verbose=False).fit()
    b.loop.steps = 2
    tb = Trainer(b, verbose=False)
    assert tb.step == 1
    tb.fit()
    for k in ("model", "fst"):
        sa, sb = ta.strategy.modules[k].state_dict(), tb.strategy.modules[k].state_dict()
        assert all(torch.equal(v, sb[n]) for n, v in sa.items()), k


def test_crd_without_the_teacher_fails_clearly(tmp_path):
    cfg = crd_cfg(tmp_path, tmp_path / "no_such_run")
    with pytest.raises(FileNotFoundError, match="high-resolution teacher .* has no checkpoint.*run no_such_run"):
        Trainer(cfg, verbose=False)
    brain = experiments.load("crd_lowres")
    # the 2 mm flow-distilled student is the high-resolution teacher; the 4 mm students start from scratch
    assert brain.strategy.teacher == "training/runs/ldr_flowdistill" and brain.model.architecture == "lowres_ldr"
    assert brain.model.init == "" and brain.loop.steps == 6000
    assert brain.data == experiments.load("ldr_flowdistill").data
    for arm in ("lowres_noteacher", "lowres_flowdistill"):  # the ablation arms: same data, budget and start
        other = experiments.load(arm)
        assert (other.data, other.loop.steps, other.model.init, other.optim.lr) == \
            (brain.data, brain.loop.steps, brain.model.init, brain.optim.lr)


def test_crd_refuses_a_teacher_without_features(tmp_path, hr_teacher):
    vtn = experiments.load("smoke_teacher")  # RCN/VTN teacher: no forward_features
    from training.networks import build_model
    (tmp_path / "vtn").mkdir()
    torch.save({"config": to_dict(vtn), "modules": {"model": build_model(vtn.model).state_dict()}},
               tmp_path / "vtn" / "best.pt")
    with pytest.raises(ValueError, match="high-resolution engine network"):
        Trainer(crd_cfg(tmp_path, tmp_path / "vtn"), verbose=False)
    student = crd_cfg(tmp_path, hr_teacher)
    student.model.architecture = "ldr"
    student.model.kwargs = {}
    with pytest.raises(ValueError, match="lowres_ldr"):
        Trainer(student, verbose=False)


def test_ablation_experiments_share_the_student_and_budget():
    a, b, c = (experiments.load(n) for n in ("lowres_noteacher", "lowres_flowdistill", "crd_lowres"))
    assert a.model == b.model == c.model and a.loop == b.loop == c.loop and a.data == b.data == c.data
    assert (a.strategy.name, b.strategy.name, c.strategy.name) == ("standard", "distill", "crd")
    assert a.loss.distill == 0 and b.loss.distill > 0 and b.loss.attention == 0 and c.loss.attention > 0


# ----------------------------------------------------------------------------- export, bundle, CLI
@pytest.fixture(scope="module")
def crd_bundle(crd_run, tmp_path_factory):
    from training.export import export
    tr, _ = crd_run
    out = tmp_path_factory.mktemp("models")
    return export(tr.run_dir / "best.pt", "smoke_crd_bundle", out, "python -m training export X")


def test_bundle_round_trip(crd_run, crd_bundle):
    from DeepRegLib.bundles import load_bundle
    tr, _ = crd_run
    card = json.loads((crd_bundle / "card.json").read_text())
    assert card["kind"] == "low-resolution"
    assert card["teacher"] == "smoke_standard" and card["training"]["teacher"]["experiment"] == "smoke_standard"
    assert card["architecture"] == {"name": "lowres_ldr", "cascades": 1, "kwargs": {"factor": 2},
                                    "parameters": count_parameters(tr.model),
                                    "parameters_per_cascade": count_parameters(tr.model.subnets[0])}
    assert card["input"]["network_grid"]["spacing"] == 4.0 and card["input"]["network_grid"]["size"] == [16, 16, 16]
    b = load_bundle(str(crd_bundle))
    assert b.kind == "low-resolution" and b.network_grid == (4.0, (16, 16, 16))
    net = b.network()
    assert isinstance(net, LowResolution)
    f, m = torch.rand(1, 1, 32, 32, 32), torch.rand(1, 1, 32, 32, 32)
    tr.model.eval()
    with torch.no_grad():
        ref, _ = tr.model(f, m)
        got, _ = net(f, m)
    assert torch.allclose(got, ref, atol=1e-3 * (1 + float(ref.abs().max())))  # float16 weights


def test_register_by_name_with_the_lowres_bundle(crd_bundle, sample_pair, monkeypatch):
    from DeepRegLib.inference import register
    monkeypatch.setenv("DEEPREG_MODELS_PATH", str(crd_bundle.parent))
    res = register(str(sample_pair["fixed"]["image"]), str(sample_pair["moving"]["image"]),
                   model="smoke_crd_bundle", device="cpu")
    assert res.model == "smoke_crd_bundle" and res.grid.shape == (32, 32, 32)  # the 2 mm network grid
    assert res.displacement.shape == (32, 32, 32, 3) and np.isfinite(res.displacement).all()


def test_deepreg_models_lists_kind_grid_parameters_speed(crd_bundle, monkeypatch):
    from DeepRegLib.bundles import load_bundle
    from DeepRegLib.cli import main
    monkeypatch.setenv("DEEPREG_MODELS_PATH", str(crd_bundle.parent))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["models"]) == 0
    text = buf.getvalue()
    low = json.loads((crd_bundle / "card.json").read_text())
    block = text.split("smoke_crd_bundle:")[1].split("ldr_brain_v1")[0] if text.index("smoke_crd_bundle") < text.index(
        "ldr_brain_v1:") else text.split("smoke_crd_bundle:")[1]
    assert "kind: low-resolution" in block
    assert "input grid: 32x32x32 voxels at 2 mm; network runs at 4 mm on 16x16x16" in block
    assert f"parameters: {low['architecture']['parameters']:,}" in block and "speed: not measured" in block
    default = load_bundle("ldr_brain_v1").card
    hr_block = text.split("ldr_brain_v1:")[1].split("smoke_crd_bundle")[0]
    assert "kind: light-weight" in hr_block and "input grid: 80x96x80 voxels at 2 mm\n" in hr_block
    assert f"parameters: {default['architecture']['parameters']:,}" in hr_block
    assert f"network {default['speed']['network_s_median']:.3f} s" in hr_block


def test_lowres_ceiling_round_trip_and_report_on_synthetic_pairs():
    from training.data.synthetic import build
    from training.studies.lowres_ceiling import ceiling, projected_flow
    const = torch.full((1, 3, 8, 10, 12), 1.5)
    assert torch.allclose(projected_flow(const, 2), const)  # a translation is carried exactly
    rough = torch.randn(1, 3, 8, 10, 12)  # detail finer than the coarse grid is lost
    assert not torch.allclose(projected_flow(rough, 2), rough, atol=0.1)
    data = build(2, (16, 16, 16), 2.0, seed=0)
    net = build_network("ldr", 1, base=4).eval()
    out = ceiling(net, data, 2)
    assert set(out) == {"model", "projected", "weights_at_low_resolution"}
    assert all(0.0 <= v["dice"] <= 1.0 for v in out.values())
