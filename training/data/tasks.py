"""Registration tasks for multi-task / continual training: each a data module with its own
split, its natural network grid, its loss weights and its metric.

``TASKS[name]`` is a :class:`TaskInfo`. ``task_data_config(base, name)`` is the
:class:`training.config.DataConfig` of one task (the task's grid and normalisation,
everything else from ``base``), so that ``load_split`` serves every task.

=============  ======================================  =================  =========================
task           data (split)                            grid               loss / metric
=============  ======================================  =================  =========================
synthhead      SynthSeg label maps 01-16 / 17-20       64^3 at 3.5 mm     Dice only / brain Dice
prostate       MR->US cases 0-21 / 22-24 (25-26 test)  48x64x48 at 0.4    Dice only / gland Dice, TRE
ct             CT crops sup. half+chest / inf. half     64x64x48 at 3 mm   CC + Dice / organ Dice, TRE
mindboggle     OASIS-TRT-20 12 subjects / 17,18,19      80x96x80 at 2 mm   CC / Dice
synthetic*     synthetic ellipsoids (seconds)           16^3 at 2 mm       CC + Dice / Dice
=============  ======================================  =================  =========================
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from DeepRegLib.preprocess import Normalisation

from . import ct, mindboggle, prostate, synthhead
from DeepRegLib.names import look_up_option


@dataclass(frozen=True)
class TaskInfo:
    name: str
    description: str
    licence: str
    split: str  # the train / validation split, in words
    spacing: float
    size: Tuple[int, int, int]
    normalisation: str = "percentile"
    metric: str = "dice"  # 'dice' (mean over labels) | 'brain' | 'prostate' | 'ct'
    loss_weights: Dict[str, float] = field(default_factory=dict)  # CompositeLoss weight overrides
    flip_lr: bool = False  # left-right flips are a valid augmentation
    modalities: Tuple[str, str] = ("MR", "MR")  # (fixed, moving)
    label_encoding: str = "values"  # 'values': a label value per structure | 'bits': bit k = structure k (overlapping)
    dice_sigmas: Tuple[float, ...] = ()  # multi-scale label Dice for this task (voxels); () = the config's


TASKS: Dict[str, TaskInfo] = {t.name: t for t in [
    TaskInfo("synthhead", synthhead.DESCRIPTION, synthhead.LICENCE,
             "train: label maps 01-16 (48 random ordered pairs, one random contrast per image); "
             "validation: maps 17-20, all 12 ordered pairs", 3.5, (64, 64, 64), metric="brain",
             loss_weights={"sim": 0.0, "dice": 1.0}, flip_lr=True, modalities=("any MR contrast", "any MR contrast")),
    TaskInfo("prostate", prostate.DESCRIPTION, prostate.LICENCE,
             "train: train/ cases 0-21; validation: train/ cases 22-24; test/ 25-26 never used",
             prostate.SPEC.spacing, prostate.SPEC.size, metric="prostate",
             loss_weights={"sim": 0.0, "dice": 1.0}, modalities=("US", "MR"), label_encoding="bits",
             dice_sigmas=(0.0, 2.0, 4.0, 8.0)),
    TaskInfo("ct", ct.DESCRIPTION, ct.LICENCE,
             "train: 12 chest crops + 12 crops centred in the superior half of the labelled CT; "
             "validation: 6 crops centred in its inferior half; own deformations each", ct.SPEC.spacing,
             ct.SPEC.size, normalisation="window", metric="ct", loss_weights={"dice": 0.5}, modalities=("CT", "CT")),
    TaskInfo("mindboggle", mindboggle.DESCRIPTION, mindboggle.LICENCE,
             "train: 12 subjects (132 ordered pairs); validation: subjects 17, 18, 19", 2.0, (80, 96, 80),
             metric="brain", flip_lr=True, modalities=("T1", "T1")),
    TaskInfo("synthetic", "synthetic ellipsoid pairs (smoke)", "Apache-2.0", "seed 0 / seed 1", 2.0, (16, 16, 16)),
    TaskInfo("synthetic_inverted", "synthetic ellipsoid pairs, inverted contrast (smoke)", "Apache-2.0",
             "seed 10 / seed 11", 2.0, (16, 16, 16)),
    TaskInfo("synthetic_large", "synthetic ellipsoid pairs, larger deformations (smoke)", "Apache-2.0",
             "seed 20 / seed 21", 2.0, (16, 16, 16)),
]}


def task_info(name: str) -> TaskInfo:
    look_up_option(name, sorted(TASKS), "task")
    return TASKS[name]


def task_data_config(base, name: str, size: Optional[Tuple[int, int, int]] = None):
    """A copy of ``base`` (a DataConfig) for task ``name`` on the task's own grid (``size`` overrides)."""
    info = task_info(name)
    cfg = copy.deepcopy(base)
    cfg.task = name
    cfg.spacing = info.spacing
    cfg.size = tuple(size or info.size)
    cfg.normalisation = info.normalisation
    cfg.flip_lr = bool(base.flip_lr and info.flip_lr)
    return cfg


def run_task_config(cfg, name: str):
    """The DataConfig of task ``name`` in the experiment config ``cfg``: a continual run's per-task copy
    (:func:`task_data_config`, on ``continual.size`` when set), else ``cfg.data`` itself."""
    if not cfg.continual.tasks:
        return cfg.data
    return task_data_config(cfg.data, name, tuple(cfg.continual.size) if cfg.continual.size else None)


def normalisation_of(data_cfg) -> Normalisation:
    if data_cfg.task == "ct":
        return ct.SPEC.normalisation
    return Normalisation(kind=data_cfg.normalisation)
