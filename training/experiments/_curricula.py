"""The curriculum ablation (issue 9): one network, one step budget, four curricula, several seeds.

The network is a 1-cascade LDR trained **from scratch**: a curriculum acts on the early phase of
learning (blurred inputs, weak dropout, smoothed features first), so a warm start from a trained
model would hide it. One cascade (1.55 M parameters, ~0.2 s per step on one core) lets four arms x
three seeds fit on two CPU cores in one session; the loss and data are the brain students'.
"""
from __future__ import annotations

from ..config import ExperimentConfig
from ._base import brain_student
from DeepRegLib.names import look_up_option

#: the step budget of the ablation (every arm the same)
STEPS = 3000
#: the seeds every arm is run with (run folders ``curriculum_<arm>_s<seed>``)
SEEDS = (0, 1, 2)
#: the arms, in table order ("blurshort": the blur arm's sigma over the first 20 % instead of the first half)
ARMS = ("none", "blur", "dropout", "smoothing", "blurshort")


def arm(curriculum: str, seed: int = 0) -> ExperimentConfig:
    cfg = brain_student(1, f"curriculum ablation: {curriculum}, seed {seed}", name="standard")
    cfg.model.init = ""
    cfg.optim.lr = 2e-4
    cfg.loop.steps, cfg.loop.seed, cfg.loop.val_every = STEPS, seed, 200
    c = cfg.curriculum
    if curriculum == "blur":  # the seed's proposal: sigma 4 mm -> 0 over the first half
        c.blur_sigma_mm, c.blur_steps, c.blur_shape = 4.0, STEPS // 2, "linear"
    elif curriculum == "blurshort":  # the same, over the first 20 % (is a long blurred phase what costs?)
        c.blur_sigma_mm, c.blur_steps, c.blur_shape = 4.0, STEPS // 5, "linear"
    elif curriculum == "dropout":  # retain 1 -> 0.7, exponential (Morerio et al.)
        c.dropout_floor, c.dropout_gamma = 0.7, 10.0 / STEPS
    elif curriculum == "smoothing":  # feature sigma 1 voxel, x0.9 every 5 % of the budget (Sinha et al.)
        c.smoothing_sigma, c.smoothing_decay, c.smoothing_every = 1.0, 0.9, STEPS // 20
    else:
        look_up_option(curriculum, ARMS, "curriculum")
    cfg.description = (f"curriculum ablation ({STEPS} steps from scratch, 1-cascade LDR, "
                       f"1 - CC + 0.5 smoothness): {curriculum}")
    return cfg
