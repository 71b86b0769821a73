"""CRD as published (issue 27): a pre-trained, frozen feature-shifted teacher with one subnet shared by the
HR and LR inputs, decoder features shifted one level and fused, a high-resolution flow; the LR student
learns from flow and raw attention-map MSE."""
from __future__ import annotations

import copy
import csv
from pathlib import Path

import pytest
import torch

from DeepRegLib.models.ldr import LDRSubnet
from DeepRegLib.models.lowres import downsample
from training import experiments
from training.losses import raw_attention_loss
from training.networks import SharedFeatureShiftedTeacher, build_model
from training.trainer import Trainer


def _fst(base: int = 4) -> SharedFeatureShiftedTeacher:
    torch.manual_seed(0)
    return SharedFeatureShiftedTeacher(LDRSubnet(base=base))


def test_the_fst_shares_one_subnet_over_both_resolutions_and_outputs_a_high_resolution_flow():
    fst = _fst()
    calls = []
    orig = fst.subnet.forward_features
    fst.subnet.forward_features = lambda f, m, keep=True: (calls.append(tuple(f.shape[2:])), orig(f, m, keep))[1]
    f, m = torch.rand(1, 1, 40, 48, 36), torch.rand(1, 1, 40, 48, 36)
    with torch.no_grad():
        flow, fused = fst.features(f, m)
    assert calls == [(40, 48, 36), (20, 24, 18)]            # one subnet, run on the HR pair and on its 2x block mean
    assert flow.shape == (1, 3, 40, 48, 36)                 # a flow on the HR grid
    # fused maps at 1/16, 1/8, 1/4, 1/2 of the HR grid = the LR student's u3, u2, u1 sizes (1/8, 1/4, 1/2 of 4 mm)
    assert [tuple(x.shape[2:]) for x in fused] == [(3, 3, 3), (5, 6, 5), (10, 12, 9), (20, 24, 18)]
    # only the shared subnet and the fusion decoder have weights: no second encoder
    subnet_params = {id(p) for p in fst.subnet.parameters()}
    others = [n for n, p in fst.named_parameters() if id(p) not in subnet_params]
    assert others and all(n.split(".")[0] in ("fuse16", "fuse8", "fuse4", "fuse2", "flow") for n in others)


def test_the_shift_pairs_lr_level_k_with_hr_level_k_plus_1():
    """The fused 1/8 map takes the LR u2 (LR 1/4 = HR 1/8) beside the HR u3: cutting the LR columns changes it."""
    fst = _fst()
    f, m = torch.rand(1, 1, 32, 32, 32), torch.rand(1, 1, 32, 32, 32)
    _, hr = fst.subnet.forward_features(f, m)
    _, lr = fst.subnet.forward_features(downsample(f, 2), downsample(m, 2))
    assert lr[5].shape[2:] == hr[4].shape[2:]               # LR u2 has the size of HR u3: one level shifted
    with torch.no_grad():
        _, fused = fst.features(f, m)
        c16, c8 = fst.attention_channels[:2]                # inputs of fuse8: [up(f16), LR u2, HR u3]
        fst.fuse8[0].weight[:, c16:c16 + c8] = 0             # the LR u2 columns
        _, fused_no_lr = fst.features(f, m)
    assert not torch.allclose(fused[1], fused_no_lr[1])
    assert torch.equal(fused[0], fused_no_lr[0])             # the deeper level is untouched


def test_raw_attention_loss_known_answer():
    s = [torch.ones(1, 2, 2, 2, 2), torch.zeros(1, 3, 1, 1, 1)]
    t = [torch.zeros(1, 5, 2, 2, 2), torch.full((1, 1, 1, 1, 1), 2.0)]
    # level 1: (2 - 0)^2 = 4 everywhere; level 2: (0 - 4)^2 = 16; summed over levels
    assert float(raw_attention_loss(s, t)) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="expected"):
        raw_attention_loss([torch.ones(1, 2, 2, 2, 2)], [torch.ones(1, 2, 3, 2, 2)])


@pytest.fixture(scope="module")
def fst_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("fst")
    cfg = experiments.load("smoke_crd_fst")
    cfg.run_dir = str(tmp / "smoke_crd_fst")
    cfg.loop.steps = 2
    Trainer(cfg, verbose=False).fit()
    return Path(cfg.run_dir)


def test_stage_two_freezes_the_fst_and_learns_from_flow_and_attention_only(fst_run, tmp_path):
    cfg = experiments.load("smoke_crd_published")
    cfg.strategy.teacher = str(fst_run)
    cfg.run_dir = str(tmp_path / "student")
    cfg.loop.steps = 2
    tr = Trainer(cfg, verbose=False)
    teacher_before = copy.deepcopy(tr.strategy.teacher.state_dict())
    assert all(not p.requires_grad for p in tr.strategy.teacher.parameters()) and not tr.strategy.teacher.training
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.fit()
    assert any(not torch.equal(before[k], v) for k, v in tr.model.state_dict().items())
    for k, v in tr.strategy.teacher.state_dict().items():
        assert torch.equal(teacher_before[k], v), k               # the FST never changes in stage 2
    rows = list(csv.DictReader(open(Path(cfg.run_dir) / "log.csv")))
    assert "sim" not in rows[0] and "smooth" not in rows[0]         # no similarity, no smoothness term
    for r in rows:  # the total is exactly the published weighting of the two distillation terms
        assert float(r["total"]) == pytest.approx(float(r["distill"]) / 12 + float(r["attention"]), rel=1e-5)


def test_stage_two_refuses_a_teacher_that_is_not_an_fst(tmp_path):
    plain = experiments.load("smoke_standard")
    plain.run_dir = str(tmp_path / "plain")
    plain.loop.steps = 1
    Trainer(plain, verbose=False).fit()
    cfg = experiments.load("smoke_crd_published")
    cfg.strategy.teacher = plain.run_dir
    cfg.run_dir = str(tmp_path / "student")
    with pytest.raises(ValueError, match="expected a pre-trained FST"):
        Trainer(cfg, verbose=False)


def test_the_fst_experiment_starts_from_the_default_models_first_cascade():
    cfg = experiments.load("crd_fst_pretrain")
    fst = build_model(cfg.model)
    from DeepRegLib.bundles import load_bundle
    v3 = load_bundle("ldr_brain_v3").network()
    for k, v in v3.subnets[0].state_dict().items():
        assert torch.equal(fst.subnet.state_dict()[k], v), k
    assert all(p.requires_grad for p in fst.parameters())          # fine-tuned with the fusion decoder
    stage2 = experiments.load("crd_published")
    assert stage2.strategy.name == "crd_published" and stage2.strategy.teacher.endswith("crd_fst_pretrain")
    assert stage2.loss.similarity_weight == 0 and stage2.loss.smooth == 0


def test_normalised_attention_variant_uses_the_scale_free_maps(fst_run, tmp_path):
    from training.losses import attention_loss
    cfg = experiments.load("smoke_crd_published")
    cfg.strategy.teacher = str(fst_run)
    cfg.strategy.crd_attention = "normalised"
    cfg.run_dir = str(tmp_path / "student")
    cfg.loop.steps = 1
    Trainer(cfg, verbose=False).fit()
    row = next(csv.DictReader(open(Path(cfg.run_dir) / "log.csv")))
    assert 0 <= float(row["attention"]) <= 2.0  # normalised maps: a bounded term (raw maps are unbounded)
    x = [torch.rand(1, 4, 3, 3, 3)]
    assert float(attention_loss(x, [3 * x[0]])) == pytest.approx(0.0, abs=1e-6)  # scale-free
    assert float(raw_attention_loss(x, [3 * x[0]])) > 1.0
    cfg.strategy.crd_attention = "rawest"
    cfg.run_dir = str(tmp_path / "bad")
    with pytest.raises(ValueError, match="crd_attention"):
        Trainer(cfg, verbose=False).fit()
