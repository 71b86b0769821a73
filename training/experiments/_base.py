"""Shared building blocks of the experiment files (not an experiment itself)."""
from __future__ import annotations

from ..config import DataConfig, ExperimentConfig, LoopConfig, LossConfig, ModelConfig, OptimConfig, StrategyConfig

#: the teacher the brain students distil from (see teacher_rcn_labels.py / RESULTS.md)
BRAIN_TEACHER = "training/runs/teacher_rcn_labels"


def brain_student(cascades: int = 2, description: str = "", **strategy) -> ExperimentConfig:
    """An LDR student on the Mindboggle brains at 2 mm, the bundled models' grid and loss."""
    return ExperimentConfig(
        description=description,
        data=DataConfig(task="mindboggle"),
        model=ModelConfig(architecture="ldr", cascades=cascades),
        loss=LossConfig(similarity="cc", smooth=0.5),
        optim=OptimConfig(lr=2e-4),
        strategy=StrategyConfig(**strategy),
        loop=LoopConfig(steps=6000, val_every=200, minutes=0),
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
