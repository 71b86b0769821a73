"""The LDR + ALDK ablation's plan and paired statistics (training/studies/aldk_ablation.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from training import experiments
from training.config import apply_overrides
from training.studies.aldk_ablation import ARMS, CONTROL, Arm, paired, plan, table


def test_every_arm_is_one_command_with_its_matched_control_in_the_plan():
    runs = plan(["aldk_linear", "flowdistill"], [1, 3], [0, 1])
    assert {r.arm for r in runs} == {"noteacher", "aldk_linear", "flowdistill"}  # the control is always there
    assert len(runs) == 3 * 2 * 2 and runs[0].arm == CONTROL
    names = {r.name for r in runs}
    assert all(r.control.name in names for r in runs)
    cmd = Arm("aldk_linear", 3, 1).command("training/runs/T", 50, Path("runs/abl"))
    assert cmd[1:5] == ["-m", "training", "run", "ldr_aldk_linear"]
    sets = [cmd[i + 1] for i, x in enumerate(cmd) if x == "--set"]
    assert sets == ["strategy.teacher=training/runs/T", "strategy.teacher_store=true", "model.cascades=3", "loop.seed=1", "loop.steps=50",
                    "loop.minutes=0"]
    assert cmd[-2:] == ["--run-dir", str(Path("runs/abl") / "aldk_linear_c3_s1")]
    # the command's config is the experiment's with exactly these overrides
    cfg = experiments.load(ARMS["aldk_linear"])
    apply_overrides(cfg, sets)
    assert (cfg.model.cascades, cfg.loop.seed, cfg.strategy.teacher) == (3, 1, "training/runs/T")
    assert cfg.strategy.teacher_store is True
    assert "strategy.teacher" not in " ".join(Arm(CONTROL, 2, 0).command("T", 5, Path("r")))
    # --set KEY=VALUE: added to every run's command after the study's own settings (a resume may change threads)
    extra = Arm(CONTROL, 2, 0).command("T", 5, Path("r"), ["loop.threads=1"])
    assert extra[-2:] == ["--set", "loop.threads=1"]
    with pytest.raises(ValueError, match="unknown arms"):
        plan(["aldk"], [2], [0])


def test_paired_differences_known_answer():
    runs = plan(["aldk_linear"], [2], [0, 1])
    rows = {"noteacher_c2_s0": {"x": 0.60}, "noteacher_c2_s1": {"x": 0.62},
            "aldk_linear_c2_s0": {"x": 0.61}, "aldk_linear_c2_s1": {"x": 0.65}}
    s = paired(rows, runs, "x")
    assert s["aldk_linear_c2"]["mean"] == pytest.approx(0.63)
    assert s["aldk_linear_c2"]["diff_mean"] == pytest.approx((0.01 + 0.03) / 2)
    assert s["aldk_linear_c2"]["diff_sd"] == pytest.approx(0.0141421, rel=1e-4)   # sd of (0.01, 0.03)
    assert "diff_mean" not in s["noteacher_c2"] and s["noteacher_c2"]["n"] == 2
    # a run whose control is missing gives no difference, not a wrong one
    del rows["noteacher_c2_s1"]
    s = paired(rows, runs, "x")
    assert s["aldk_linear_c2"]["diff_mean"] == pytest.approx(0.01) and s["aldk_linear_c2"]["n"] == 2
    full = {k: {c: v["x"] for c in ("dice_subcortical", "dice_cortical", "hd95_mm", "folding_percent", "sdlogj",
                                    "known_error_mm", "identical_max_mm", "network_seconds", "peak_forward_mb")}
            for k, v in rows.items()}
    text = table(full, runs)
    assert "| aldk_linear_c2 | 2 |" in text and "[+0.01 ± 0]" in text


def test_grid_report_reads_each_runs_last_validation(tmp_path):
    from training.studies.aldk_ablation import GRID_COLUMNS, last_validation
    run = tmp_path / "r"
    run.mkdir()
    (run / "val.csv").write_text("step,dice,dice_subcortical,dice_cortical,folding_percent\n"
                                 "100,0.40,0.5,0.3,0.0\n200,0.45,0.55,0.35,0.001\n")
    row = last_validation(run)
    assert row["step"] == 200 and row["dice"] == pytest.approx(0.45)
    runs = plan(["flowdistill"], [2], [0])
    text = table({"noteacher_c2_s0": {c: 0.5 for c in GRID_COLUMNS}, "flowdistill_c2_s0": row}, runs, GRID_COLUMNS)
    assert "| flowdistill_c2 | 1 |" in text and "[-0.05 ± 0]" in text and "hd95" not in text
