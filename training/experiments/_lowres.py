"""Shared settings of the low-resolution (CRD) experiments: the brain students' data, loss, budget."""
from __future__ import annotations

from ..config import ExperimentConfig
from ._base import brain_student, smoke

#: the frozen high-resolution model the CRD student and ablation (b) learn from (the distilled 2 mm default)
HR_TEACHER = "training/runs/ldr_flowdistill"  # the distilled 2 mm student (not bundled: RESULTS.md)
#: the low-resolution student: LDR cascades on the network grid average-pooled 2x (2 mm -> 4 mm)
LOWRES = {"architecture": "lowres_ldr", "kwargs": {"factor": 2}}


def lowres_student(description: str, **strategy) -> ExperimentConfig:
    """:func:`brain_student` (2 cascades, same data and loss) at 4 mm, from scratch: 6000 steps, lr 2e-4."""
    cfg = brain_student(2, description, **strategy)
    cfg.model.init = ""  # the 2 mm students start from ldr_brain_v1; a 4 mm network starts from scratch
    cfg.optim.lr, cfg.loop.steps, cfg.loop.val_every = 2e-4, 6000, 200
    cfg.model.architecture = LOWRES["architecture"]
    cfg.model.kwargs = dict(LOWRES["kwargs"])
    return cfg


def lowres_smoke(strategy: str = "standard", **kw) -> ExperimentConfig:
    """:func:`smoke` with the low-resolution student (synthetic 32^3 at 2 mm -> 16^3 at 4 mm)."""
    cfg = smoke(strategy, **kw)
    cfg.model.architecture = LOWRES["architecture"]
    cfg.model.kwargs = dict(LOWRES["kwargs"])
    return cfg
