"""Training under torchrun: 2 CPU processes (gloo), sharded data, rank-0 checkpoints, identical weights."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def torchrun(args, tmp_path: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if exe is None:
        pytest.skip("torchrun not found next to this Python")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([exe, "--standalone", "--nproc_per_node=2", "-m", "training", "run", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def test_two_process_training_keeps_ranks_identical(tmp_path):
    teacher = tmp_path / "teacher"
    r = torchrun(["smoke_teacher", "--run-dir", str(teacher), "--set", "loop.steps=2"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "student"
    r = torchrun(["smoke_adversarial", "--run-dir", str(run), "--set", f"strategy.teacher={teacher}",
                  "--set", "loop.steps=3"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    check = json.loads((run / "ddp_check.json").read_text())
    assert check["world_size"] == 2 and check["step"] == 3
    a, b = check["checksums_per_rank"]
    assert set(a) == {"model", "critic"} and a == b  # model (DDP) and critic (averaged) identical
    ck = torch.load(run / "last.pt", weights_only=False)
    assert ck["step"] == 3 and len(ck["rng_per_rank"]) == 2
    # the ranks sampled different shards: their sampler states differ
    assert ck["rng_per_rank"][0]["sampler"] != ck["rng_per_rank"][1]["sampler"]
    assert not list(run.glob("*.tmp"))


def test_two_process_crd_step_all_reduces_the_students_gradients(tmp_path):
    """CRD's student forward goes through the DDP wrapper (its features included): after one step on each
    rank's own pairs, the student's weights are identical on both ranks (a forward that bypasses the
    wrapper leaves each rank with its own gradients, and the ranks part after the first step)."""
    from training import experiments
    from training.trainer import Trainer
    hr = experiments.load("smoke_standard")  # the high-resolution teacher, one process
    hr.run_dir, hr.loop.steps = str(tmp_path / "hr"), 1
    Trainer(hr, verbose=False).fit()
    run = tmp_path / "crd"
    r = torchrun(["smoke_crd", "--run-dir", str(run), "--set", f"strategy.teacher={tmp_path / 'hr'}",
                  "--set", "loop.steps=1", "--set", "loop.val_every=100"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    check = json.loads((run / "ddp_check.json").read_text())
    assert check["world_size"] == 2 and check["step"] == 1
    a, b = check["checksums_per_rank"]
    assert set(a) == {"model", "fst"}
    assert a["model"] == b["model"] and a["fst"] == b["fst"]
    ck = torch.load(run / "last.pt", weights_only=False)
    assert ck["rng_per_rank"][0]["sampler"] != ck["rng_per_rank"][1]["sampler"]  # each rank drew its own pairs
