"""Shared building blocks of the experiment files (not an experiment itself)."""
from __future__ import annotations

from typing import Optional

from ..config import (ContinualConfig, DataConfig, ExperimentConfig, LoopConfig, LossConfig, ModelConfig, OptimConfig,
                      StrategyConfig)

#: the teacher the brain students distil from (see teacher_rcn_v1stack.py / RESULTS.md)
BRAIN_TEACHER = "training/runs/teacher_rcn_v1stack"
#: the bundled plain student: the 2-cascade students are fine-tuned from it, on one budget
BRAIN_STUDENT_INIT = "Resources/models/ldr_brain_v1"
#: steps of the 2-cascade students' comparison (ALDK, no teacher, flow distillation), from BRAIN_STUDENT_INIT
STUDENT_STEPS = 1200


def brain_student(cascades: int = 2, description: str = "", warm: Optional[bool] = None, **strategy) -> ExperimentConfig:
    """An LDR student on the Mindboggle brains at 2 mm, the bundled models' grid and loss.

    Warm students (by default the 2-cascade ones) start from ``ldr_brain_v1`` and train
    :data:`STUDENT_STEPS` steps (the ALDK / no-teacher / flow-distillation comparison); with another
    cascade count they take its first cascade, or its two plus fresh ones (``trainer.cascade_state``).
    Cold students start from scratch (6,000 steps).
    """
    init = BRAIN_STUDENT_INIT if (cascades == 2 if warm is None else warm) else ""
    return ExperimentConfig(
        description=description,
        data=DataConfig(task="mindboggle"),
        model=ModelConfig(architecture="ldr", cascades=cascades, init=init),
        loss=LossConfig(similarity="cc", smooth=0.5),
        optim=OptimConfig(lr=2e-4 if not init else 1e-4),
        strategy=StrategyConfig(**strategy),
        loop=LoopConfig(steps=STUDENT_STEPS if init else 6000, val_every=100 if init else 200, minutes=0),
    )


def smoke(strategy: str = "standard", **kw) -> ExperimentConfig:
    """A synthetic 32^3 run of a few steps (seconds), for tests."""
    return ExperimentConfig(
        description=f"smoke test of the {strategy} strategy on synthetic 32^3 pairs",
        data=DataConfig(task="synthetic", size=(32, 32, 32), spacing=2.0, synthetic_pairs=4),
        model=ModelConfig(architecture="ldr", cascades=1),
        loss=LossConfig(similarity="cc", smooth=0.5, dice=0.1, dice_labels_per_step=4),
        strategy=StrategyConfig(name=strategy, **kw),
        loop=LoopConfig(steps=3, val_every=2, log_every=1, threads=1),
    )


#: the continual-learning sequence of issue 12 (skull-stripped T1 brains, SynthMorph-style heads, prostate MR-US, CT)
CL_TASKS = ["mindboggle", "synthhead", "prostate", "ct"]
#: steps per task of the comparison: 4 tasks x 200 steps fit five methods and the buffer ablation into ~1.5 h of two CPU cores
CL_STEPS_PER_TASK = 200
#: the methods compared on it: experiment suffix -> (strategy, continual mode)
CL_METHODS = {"sequential": ("standard", "sequential"), "joint": ("standard", "joint"),
              "replay": ("replay", "sequential"), "sam": ("sam", "sequential"), "samcl": ("samcl", "sequential")}


def continual(method: str, steps_per_task: int = CL_STEPS_PER_TASK, buffer_size: int = 64, tasks=None,
              init: str = BRAIN_STUDENT_INIT) -> ExperimentConfig:
    """One method of the continual-learning comparison: one LDR backbone, the same budget for all.

    The backbone starts from the bundled brain model (``init``), so the sequence asks the question a
    user's "universal" model raises: can the brain network learn new tasks without forgetting brains?
    """
    strategy, mode = CL_METHODS[method]
    tasks = list(tasks or CL_TASKS)
    return ExperimentConfig(
        description=f"continual learning ({method}) over {', '.join(tasks)}: {steps_per_task} steps per task",
        data=DataConfig(task=tasks[0]),
        model=ModelConfig(architecture="ldr", cascades=2, init=init),
        loss=LossConfig(similarity="ncc", ncc_window=7, smooth=0.5, dice=0.0, dice_labels_per_step=16),
        optim=OptimConfig(lr=2e-4),
        strategy=StrategyConfig(name=strategy, sam_rho=0.05, sam_adaptive=True, reptile_inner_steps=5,
                                reptile_beta=0.5),
        loop=LoopConfig(steps=steps_per_task * len(tasks), val_every=steps_per_task // 2, log_every=20),
        continual=ContinualConfig(tasks=tasks, mode=mode, steps_per_task=steps_per_task,
                                  buffer_size=buffer_size if strategy in ("replay", "reptile", "samcl") else 0),
    )


def smoke_continual(method: str) -> ExperimentConfig:
    """A continual run over three synthetic 16^3 tasks, 2 steps each (seconds), for tests."""
    cfg = continual(method, steps_per_task=2, buffer_size=4,
                    tasks=["synthetic", "synthetic_inverted", "synthetic_large"], init="")
    cfg.description = f"smoke test of continual learning ({method}) on three synthetic 16^3 tasks"
    cfg.data = DataConfig(task="synthetic", synthetic_pairs=4)
    cfg.model = ModelConfig(architecture="ldr", cascades=1)
    cfg.loss = LossConfig(similarity="cc", smooth=0.5, dice=0.1, dice_labels_per_step=4)
    cfg.strategy.reptile_inner_steps = 2
    cfg.loop = LoopConfig(steps=6, val_every=3, log_every=1, threads=1)
    return cfg

#: the tasks of the `universal` bundle: those a network plus per-task refinement registers (not synthhead)
UNIVERSAL_TASKS = ["mindboggle", "prostate", "ct"]
UNIVERSAL_STEPS_PER_TASK = 400
#: the universal candidates start from the default brain model, whose brain refinement they keep
UNIVERSAL_INIT = "Resources/models/ldr_brain_v2"
