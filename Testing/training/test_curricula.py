"""Curricula: schedules with known answers, operators, and smoke runs on the trainer."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from DeepRegLib.models import build_network
from training import experiments
from training.curricula import (CurriculumSmoothing, blur_sigma, gaussian_blur, retain_probability,
                                smoothing_sigma)
from training.trainer import Trainer


def test_blur_sigma_at_given_steps():
    assert blur_sigma(0, 4.0, 100) == 4.0
    assert blur_sigma(25, 4.0, 100) == pytest.approx(3.0)
    assert blur_sigma(50, 4.0, 100, "cosine") == pytest.approx(2.0)
    assert blur_sigma(99, 4.0, 100, "step") == 4.0
    assert blur_sigma(100, 4.0, 100) == 0.0 and blur_sigma(1000, 4.0, 100, "cosine") == 0.0
    assert blur_sigma(10, 0.0, 100) == 0.0


def test_retain_probability_at_given_steps():
    assert retain_probability(0, 0.7, 0.01) == pytest.approx(1.0)
    assert retain_probability(100, 0.7, 0.01) == pytest.approx(0.7 + 0.3 * math.exp(-1.0))
    assert retain_probability(10 ** 6, 0.7, 0.01) == pytest.approx(0.7)


def test_smoothing_sigma_schedule():
    assert smoothing_sigma(0, 1.0, 0.5, 10) == 1.0
    assert smoothing_sigma(25, 1.0, 0.5, 10) == 0.25  # two decays
    assert smoothing_sigma(60, 1.0, 0.5, 10) == 0.0  # 1/64 < 0.05 -> off


def test_gaussian_blur_identity_at_sigma_zero_and_preserves_mass():
    x = torch.rand(1, 4, 10, 11, 12)
    assert torch.equal(gaussian_blur(x, 0.0), x)
    y = gaussian_blur(x, [1.5, 0.0, 0.7])
    assert y.shape == x.shape
    assert abs(float(y.mean()) - float(x.mean())) < 0.02
    spike = torch.zeros(1, 1, 21, 21, 21)
    spike[0, 0, 10, 10, 10] = 1.0
    blurred = gaussian_blur(spike, [2.0, 0.0, 0.0])  # only along z
    assert torch.count_nonzero(blurred[0, 0, :, 10, 11]) == 0 and float(blurred.sum()) == pytest.approx(1.0, abs=1e-5)
    prof = blurred[0, 0, :, 10, 10]
    assert float(prof[12] / prof[10]) == pytest.approx(math.exp(-0.5 * (2 / 2.0) ** 2), rel=1e-4)


def test_feature_smoothing_is_identity_at_sigma_zero_and_removed_after_training():
    net = build_network("ldr", 1).train()
    x = torch.rand(1, 1, 32, 32, 32)
    ref, _ = net(x, x)
    cb = CurriculumSmoothing(start=1.0, decay=0.5, every=1)

    class T:  # the two trainer attributes the callback uses
        model, step = net, 0
    cb.on_train_start(T)
    cb.sigma = 0.0
    same, _ = net(x, x)
    assert torch.equal(same, ref)
    cb.sigma = 1.0
    smoothed, _ = net(x, x)
    assert not torch.equal(smoothed, ref)
    cb.on_train_end(T)
    after, _ = net(x, x)
    assert torch.equal(after, ref)  # the shipped network is unchanged


@pytest.mark.parametrize("name,column", [("smoke_blur", "blur_sigma_mm"), ("smoke_cdropout", "retain_probability"),
                                         ("smoke_csmooth", "feature_sigma")])
def test_curriculum_smoke_runs_log_their_schedule(name, column, tmp_path):
    cfg = experiments.load(name)
    cfg.run_dir = str(tmp_path / name)
    cfg.loop.steps = 3
    tr = Trainer(cfg, verbose=False)
    tr.fit()
    rows = list(csv.DictReader((Path(cfg.run_dir) / "log.csv").open()))
    values = [float(r[column]) for r in rows]
    assert len(values) == 3 and values[0] != values[-1], values  # the schedule moved
    assert not tr.input_transforms  # input blur removed after training
    assert not any(m._forward_hooks for m in tr.model.modules())  # feature hooks removed


def test_curriculum_arms_share_network_and_budget():
    arms = [experiments.load(f"curriculum_{c}") for c in ("none", "blur", "dropout", "smoothing")]
    assert len({(a.model.architecture, a.model.cascades, a.loop.steps, a.optim.lr) for a in arms}) == 1
    assert arms[1].curriculum.blur_sigma_mm > 0 and arms[2].curriculum.dropout_floor < 1
    assert arms[3].curriculum.smoothing_sigma > 0 and arms[0].curriculum == type(arms[0].curriculum)()


def _fake_run(root: Path, name: str, dice: list) -> Path:
    d = root / name
    d.mkdir(parents=True)
    with (d / "val.csv").open("w") as fh:
        fh.write("step,folding_percent,dice,dice_subcortical,dice_cortical,train_minutes\n")
        for i, v in enumerate(dice):
            fh.write(f"{200 * (i + 1)},0.0,{v},{v + 0.1},{v - 0.05},{2.0 * (i + 1)}\n")
    (d / "log.csv").write_text("step,sim,sec_per_step\n10,0.1,0.3\n20,0.1,0.2\n30,0.1,0.9\n")
    return d


def test_curriculum_report_pairs_seeds_and_writes_plots(tmp_path):
    from training.studies.curriculum_report import report
    runs = tmp_path / "runs"
    for s, (a, b) in enumerate([(0.40, 0.43), (0.42, 0.44), (0.41, 0.40)]):
        _fake_run(runs, f"curriculum_none_s{s}", [0.3, a])
        _fake_run(runs, f"curriculum_blur_s{s}", [0.3, b])
    _fake_run(runs, "ldr_other", [0.9])  # not an ablation run: ignored
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"curriculum_none_s0/last": {"dice_subcortical": 0.6, "dice_cortical": 0.4,
                                                             "folding_percent": 0.01, "sdlogj": 0.3},
                                 "curriculum_blur_s0/last": {"dice_subcortical": 0.62, "dice_cortical": 0.39,
                                                             "folding_percent": 0.02, "sdlogj": 0.3}}))
    table = report(runs, bench, tmp_path / "out")
    # grid Dice at the last step: none 0.41 +- 0.01, blur (0.43, 0.44, 0.40) -> differences +0.03, +0.02, -0.01
    assert "| none | 0,1,2 | 400 | 0.4100 ± 0.0100 |" in table
    assert "+0.0133 ± 0.0208 (2/3 seeds above)" in table
    assert "+0.0200 (1/1 seeds above)" in table and "-0.0100 (0/1 seeds above)" in table  # full res, seed 0 only
    assert "ldr_other" not in table
    for f in ("curricula.md", "curricula.json", "curricula_val.png", "curriculum_none.png", "curriculum_blur.png"):
        assert (tmp_path / "out" / f).stat().st_size > 0
    summary = json.loads((tmp_path / "out" / "curricula.json").read_text())
    assert summary["blur"]["2"]["grid_dice"] == pytest.approx(0.40) and summary["blur"]["1"]["dice_cortical"] is None
    assert summary["none"]["0"]["sec_per_step"] == pytest.approx(0.3)  # the median, not the mean
    assert "| none | 0,2 |" in report(runs, bench, tmp_path / "out2", seeds=[0, 2])


def test_curriculum_described_in_words_for_the_card():
    from training.curricula import describe
    words = {c: describe(experiments.load(f"curriculum_{c}").curriculum)
             for c in ("none", "blur", "dropout", "smoothing", "blurshort")}
    assert words["none"] == "none"
    assert words["blur"] == "input blur 4 mm -> 0 over 1500 steps (linear)"
    assert words["blurshort"] == "input blur 4 mm -> 0 over 600 steps (linear)"
    assert words["dropout"].startswith("curriculum dropout, retain 1 -> 0.7")
    assert words["smoothing"] == "curriculum by smoothing, feature sigma 1 voxel x0.9 every 150 steps"
