"""Inference networks: the LDR student subnet and recursive cascades.

Training-only networks (the VTN teacher subnets, the flow discriminator) live in
``training/networks``; the engine keeps only what a bundled model needs at inference.
"""
from __future__ import annotations

from typing import Any, Union

import torch.nn as nn

from .cascade import RecursiveCascade
from .ldr import LDRSubnet
from .lowres import LowResolution
from ..names import look_up_option

SUBNETS = {"ldr": LDRSubnet}
#: low-resolution architectures: name -> the subnet they run at 1/``factor`` resolution
LOWRES = {"lowres_ldr": "ldr"}
#: every architecture a bundle may name
ARCHITECTURES = sorted(SUBNETS) + sorted(LOWRES)


def build_network(architecture: str, cascades: int = 1, **kwargs: Any) -> Union[RecursiveCascade, LowResolution]:
    """The network a model card's ``architecture`` block describes.

    ``ldr``: a :class:`RecursiveCascade` of ``cascades`` LDR subnets; ``kwargs`` are the subnet's
    constructor arguments (saved in the model card). ``lowres_ldr``: the same cascade wrapped in
    :class:`LowResolution` (``kwargs['factor']``, default 2: it runs at twice the input spacing;
    ``kwargs['unshuffle']``: the images reach it as ``factor^3`` channels each, not averaged);
    the other ``kwargs`` go to the subnets.
    """
    look_up_option(architecture, ARCHITECTURES, "architecture")
    if not 1 <= int(cascades) <= 10:
        raise ValueError("cascades must be between 1 and 10")
    if architecture in LOWRES:
        kwargs = dict(kwargs)
        factor = int(kwargs.pop("factor", 2))
        unshuffle = bool(kwargs.pop("unshuffle", False))
        if unshuffle:
            kwargs["in_channels"] = 2 * factor ** 3
        return LowResolution(build_network(LOWRES[architecture], cascades, **kwargs), factor, unshuffle)
    cls = SUBNETS[architecture]
    return RecursiveCascade(lambda: cls(**kwargs), int(cascades))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["build_network", "count_parameters", "RecursiveCascade", "LDRSubnet", "LowResolution", "SUBNETS",
           "LOWRES", "ARCHITECTURES"]
