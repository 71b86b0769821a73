"""Budget profiles: one experiment at another scale, one command.

``cpu`` is every experiment as its file writes it (two CPU cores, batch 1, the budgets RESULTS.md
reports). ``gpu`` is the paper-scale run for a lent GPU: batch 4, CUDA with mixed precision
(one gradient scaler per optimiser), no wall-clock limit, and the reference schedule of the method
(:data:`PAPER_STEPS`), or 10x the file's steps where the method's authors give none::

    python -m training run teacher_rcn_ref --profile gpu      # the same command resumes

``--set`` overrides still apply on top of the profile.
"""
from __future__ import annotations

from typing import Dict

from DeepRegLib.names import look_up_option

from .config import ExperimentConfig

#: steps of the published schedules, by strategy or by experiment name (the name wins)
PAPER_STEPS: Dict[str, int] = {
    "teacher_rcn_ref": 100_000,  # RCN train.py: batch 4, 5 epochs x 20,000 iterations
    "adversarial": 100_000,      # ALDK reference code: 100,000 iterations (adversarial term off after 8,000)
    "crd_fst_pretrain": 25_000,  # CRD train.py: 5 epochs x 5,000 rounds, 4 GPUs x batch 1
    "crd_published": 25_000,
}
#: what the ``gpu`` profile sets besides the steps
GPU_LOOP = {"batch_size": 4, "device": "cuda", "amp": True, "minutes": 0.0, "threads": 4}
PROFILES = ("cpu", "gpu")


def apply_profile(cfg: ExperimentConfig, profile: str) -> ExperimentConfig:
    """``cfg`` at the budget of ``profile`` (``cpu``: unchanged; ``gpu``: see the module docstring). In place."""
    look_up_option(profile, list(PROFILES), "profile")
    if profile == "cpu":
        return cfg
    steps = PAPER_STEPS.get(cfg.name, PAPER_STEPS.get(cfg.strategy.name, 10 * int(cfg.loop.steps)))
    scale = steps / max(1, int(cfg.loop.steps))
    for key, value in GPU_LOOP.items():
        setattr(cfg.loop, key, value)
    cfg.loop.steps = int(steps)
    cfg.loop.val_every = max(int(cfg.loop.val_every), int(round(cfg.loop.val_every * scale / 5)))
    if cfg.continual.tasks:  # the continual schedules grow with the budget, task for task
        cfg.continual.steps_per_task = cfg.loop.steps // len(cfg.continual.tasks)
    return cfg
