"""Students of the shipped default (not an experiment itself): ``ldr_brain_v4``'s own recipe, continued.

The issue-27 test of whether a distilled student should ship: every arm starts from the default's
weights and trains on the recipe that made it (``ldr_precise_wide``: same-subject pairs with a known
answer beside Mindboggle/IXI inter-subject pairs, lr 1e-5, end-point error x 1, selection by
``dice_precise``) for the same budget; the arms differ only in what the unsupervised RCN teacher
(``teacher_rcn_ref``) adds on the inter-subject pairs (the teacher is not asked on pairs whose answer
is known, ``DistillStrategy.taught``). ``ldr4_noteacher`` is the matched control.
"""
from __future__ import annotations

from ..config import ExperimentConfig, LoopConfig, StrategyConfig
from . import ldr_precise_wide

#: the shipped default, every arm's start
DEFAULT = "Resources/models/ldr_brain_v4"
#: the unsupervised RCN teacher of the seed (teacher_rcn_ref.py)
TEACHER = "training/runs/teacher_rcn_ref"
#: every arm's budget (steps of batch 1)
STEPS = 1200


def default_student(description: str, **strategy) -> ExperimentConfig:
    """``ldr_precise_wide``'s data, loss and optimiser from :data:`DEFAULT`, :data:`STEPS` steps, the given strategy."""
    cfg = ldr_precise_wide.config()
    cfg.description = description
    cfg.model.init = DEFAULT
    cfg.strategy = StrategyConfig(**strategy)
    cfg.loop = LoopConfig(steps=STEPS, val_every=200, log_every=20, threads=1, select="dice_precise")
    return cfg


def taught(description: str, name: str) -> ExperimentConfig:
    """:func:`default_student` with :data:`TEACHER`, its flows computed once per (pair, flip) and shared on disk."""
    return default_student(description, name=name, teacher=TEACHER, teacher_store=True)
