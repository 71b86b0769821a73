"""``training.studies.gpu_profile``: the ``gpu`` profile's real training steps, timed (the CPU run of its code).

On a lent GPU machine the study times each paper-scale experiment; here the same code runs on the CPU on a
small grid, which checks what it measures and reports, not any GPU speed.
"""
from __future__ import annotations

import json

import pytest

from training.studies import gpu_profile


def test_median_step_seconds_leaves_out_the_warm_up_row(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("step,total,sec_per_step\n10,1.0,9.0\n20,1.0,0.2\n30,1.0,0.4\n40,1.0,0.3\n")
    assert gpu_profile.median_step_seconds(log) == pytest.approx(0.3)
    log.write_text("step,total,sec_per_step\n10,1.0,9.0\n")
    assert gpu_profile.median_step_seconds(log) == pytest.approx(9.0)
    log.write_text("step,total,sec_per_step\n")
    with pytest.raises(ValueError, match="no sec_per_step rows"):
        gpu_profile.median_step_seconds(log)


def test_a_student_needs_its_teachers_row(tmp_path):
    with pytest.raises(SystemExit, match="crd_published needs the run of crd_fst_pretrain"):
        gpu_profile.main(["--device", "cpu", "--experiments", "crd_published", "--out", str(tmp_path)])


def test_the_crd_chain_runs_under_the_gpu_profile_on_synthetic_pairs(tmp_path):
    report = gpu_profile.main(["--device", "cpu", "--steps", "2", "--log-every", "1", "--size", "32", "32", "32",
                               "--experiments", "crd_fst_pretrain", "crd_published", "--out", str(tmp_path)])
    rows = {r["experiment"]: r for r in report["rows"]}
    assert list(rows) == ["crd_fst_pretrain", "crd_published"]
    for name, r in rows.items():
        assert r["batch"] == 4 and r["grid"] == [32, 32, 32] and r["profile_steps"] == 25_000  # the paper's schedule
        assert r["sec_per_step"] > 0 and r["profile_hours"] == pytest.approx(25_000 * r["sec_per_step"] / 3600)
        assert r["parameters"] > 0 and r["peak_gpu_gib"] is None and r["device"] == "cpu"
        cfg = json.loads((tmp_path / name / "config.json").read_text())
        assert cfg["data"]["task"] == "synthetic" and cfg["loop"]["batch_size"] == 4
    assert rows["crd_published"]["strategy"] == "crd_published"
    student = json.loads((tmp_path / "crd_published" / "config.json").read_text())
    assert student["strategy"]["teacher"] == str(tmp_path / "crd_fst_pretrain")  # the row before it, not the brains' run
    saved = json.loads((tmp_path / "gpu_profile.json").read_text())
    assert saved["rows"] == report["rows"]
    assert "| crd_published | crd_published |" in (tmp_path / "gpu_profile.md").read_text()
