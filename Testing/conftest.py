"""Shared fixtures: bundled sample brains (always present) and ../shared/data (CI, developers).

The tests sit in one folder per part (``engine/``, ``bundles/``, ``batch/``, ``slicer/``, ``training/``);
the folders are put on ``sys.path`` here, so that a test can import another folder's helpers
(``test_conventions``'s known-answer cases, ``slicer_standins``) whatever order pytest collects them in.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch

REPO = Path(__file__).resolve().parents[1]
PARTS = ("engine", "bundles", "batch", "slicer", "training")
for _part in PARTS:
    if str(Path(__file__).resolve().parent / _part) not in sys.path:
        sys.path.insert(0, str(Path(__file__).resolve().parent / _part))
SAMPLE = REPO / "Resources" / "SampleData"
SHARED = Path(os.environ.get("DEEPREG_SHARED_DATA", REPO.parent / "shared" / "data"))
MINDBOGGLE = SHARED / "brain-mindboggle-oasis-trt20"

torch.set_num_threads(min(2, os.cpu_count() or 1))
sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(min(2, os.cpu_count() or 1))


def sample_subject(n: int) -> dict:
    base = SAMPLE / f"OASIS-TRT-20-{n}"
    return {"image": base / "t1weighted_brain.nii.gz", "labels": base / "labels.DKT31.manual+aseg.nii.gz"}


@pytest.fixture(scope="session")
def sample_pair() -> dict:
    """The two bundled validation brains: fixed = subject 17, moving = subject 18."""
    return {"fixed": sample_subject(17), "moving": sample_subject(18)}


@pytest.fixture(scope="session")
def shared_mindboggle() -> Path:
    if not MINDBOGGLE.is_dir():
        pytest.skip(f"real data not found at {MINDBOGGLE} (../shared/data is only on CI and developer machines)")
    return MINDBOGGLE


def smoke_run(tmp_path_factory, experiment: str, steps: int = 1) -> Path:
    """A finished ``steps``-step run of a smoke experiment in a fresh folder (a teacher for strategy tests)."""
    from training import experiments
    from training.trainer import Trainer
    cfg = experiments.load(experiment)
    cfg.run_dir = str(tmp_path_factory.mktemp(experiment) / experiment)
    cfg.loop.steps = steps
    return Trainer(cfg, verbose=False).fit()
