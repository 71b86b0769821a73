"""Inference networks: the LDR student subnet and recursive cascades.

Training-only networks (the VTN teacher subnets, the flow discriminator) live in
``training/networks``; the engine keeps only what a bundled model needs at inference.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from .cascade import RecursiveCascade
from .ldr import LDRSubnet

SUBNETS = {"ldr": LDRSubnet}


def build_network(architecture: str, cascades: int = 1, **kwargs: Any) -> RecursiveCascade:
    """A :class:`RecursiveCascade` of ``cascades`` subnets of type ``architecture`` (see :data:`SUBNETS`).

    ``kwargs`` are the subnet's constructor arguments (saved in the model card).
    """
    if architecture not in SUBNETS:
        raise ValueError(f"unknown architecture {architecture!r}; choose from {sorted(SUBNETS)}")
    if not 1 <= int(cascades) <= 10:
        raise ValueError("cascades must be between 1 and 10")
    cls = SUBNETS[architecture]
    return RecursiveCascade(lambda: cls(**kwargs), int(cascades))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["build_network", "count_parameters", "RecursiveCascade", "LDRSubnet", "SUBNETS"]
