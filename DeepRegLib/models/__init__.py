"""Networks: the LDR student, VTN-style teacher subnets, recursive cascades, a flow discriminator."""
from __future__ import annotations

from typing import Any, Dict

import torch.nn as nn

from .cascade import RecursiveCascade
from .discriminator import FlowDiscriminator
from .ldr import LDRSubnet
from .vtn import VTNAffine, VTNDense

SUBNETS = {"ldr": LDRSubnet, "vtn": VTNDense}


def build_network(architecture: str, cascades: int = 1, **kwargs: Any) -> RecursiveCascade:
    """A :class:`RecursiveCascade` of ``cascades`` subnets of type ``architecture`` ('ldr' or 'vtn')."""
    if architecture not in SUBNETS:
        raise ValueError(f"unknown architecture {architecture!r}; choose from {sorted(SUBNETS)}")
    if not 1 <= int(cascades) <= 10:
        raise ValueError("cascades must be between 1 and 10")
    cls = SUBNETS[architecture]
    return RecursiveCascade(lambda: cls(**kwargs), int(cascades))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["build_network", "count_parameters", "RecursiveCascade", "LDRSubnet", "VTNDense",
           "VTNAffine", "FlowDiscriminator", "SUBNETS"]
