"""Strategies: how one training step updates the weights.

A strategy owns its extra modules (teacher, critic) and optimisers; the
:class:`training.trainer.Trainer` owns the loop, data, callbacks and checkpoints. A
strategy's ``train_step(batch)`` may run any number of forward/backward passes and
optimiser steps (room for SAM's two passes and Reptile's inner loop), and returns the
named scalars to log.
"""
from __future__ import annotations

from .adversarial import AdversarialStrategy
from .base import Strategy
from .continual import ReplayStrategy, ReptileStrategy, SAMCLStrategy, SAMStrategy
from .crd import CRDStrategy
from .crd_published import PublishedCRDStrategy
from .distill import DistillStrategy
from .standard import StandardStrategy
from DeepRegLib.names import look_up_option

STRATEGIES = {"standard": StandardStrategy, "distill": DistillStrategy, "adversarial": AdversarialStrategy,
              "crd": CRDStrategy, "crd_published": PublishedCRDStrategy, "sam": SAMStrategy, "replay": ReplayStrategy,
              "reptile": ReptileStrategy, "samcl": SAMCLStrategy}


def build_strategy(name: str, trainer) -> Strategy:
    look_up_option(name, sorted(STRATEGIES), "strategy")
    return STRATEGIES[name](trainer)


__all__ = ["Strategy", "StandardStrategy", "DistillStrategy", "AdversarialStrategy", "CRDStrategy", "SAMStrategy",
           "PublishedCRDStrategy", "ReplayStrategy", "ReptileStrategy", "SAMCLStrategy", "STRATEGIES", "build_strategy"]
