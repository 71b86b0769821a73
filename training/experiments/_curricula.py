"""The curriculum ablation: one network (2-cascade LDR, no teacher), one step budget, four curricula."""
from __future__ import annotations

from ..config import ExperimentConfig
from ._base import brain_student

#: the step budget of the ablation (every arm the same)
STEPS = 3000


def arm(curriculum: str, seed: int = 0) -> ExperimentConfig:
    cfg = brain_student(2, f"curriculum ablation: {curriculum}, seed {seed}", name="standard")
    cfg.loop.steps, cfg.loop.seed = STEPS, seed
    c = cfg.curriculum
    if curriculum == "blur":  # the seed's proposal: sigma 4 mm -> 0 over the first half
        c.blur_sigma_mm, c.blur_steps, c.blur_shape = 4.0, STEPS // 2, "linear"
    elif curriculum == "dropout":  # retain 1 -> 0.7, exponential (Morerio et al.)
        c.dropout_floor, c.dropout_gamma = 0.7, 10.0 / STEPS
    elif curriculum == "smoothing":  # feature sigma 1 voxel, x0.9 every 5 % of the budget (Sinha et al.)
        c.smoothing_sigma, c.smoothing_decay, c.smoothing_every = 1.0, 0.9, STEPS // 20
    elif curriculum != "none":
        raise ValueError(curriculum)
    cfg.description = f"curriculum ablation ({STEPS} steps, 2-cascade LDR, 1 - CC + 0.5 smoothness): {curriculum}"
    return cfg
