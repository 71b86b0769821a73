"""Recursive cascades: each subnet refines the warp of the previous ones (Zhao et al., RCN)."""
from __future__ import annotations

import math
from typing import Callable, List, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..spatial import compose, warp


def _pad(x: torch.Tensor, multiple: int) -> Tuple[torch.Tensor, Tuple[int, int, int]]:
    shape = tuple(x.shape[2:])
    pads = [(-s) % multiple for s in shape]
    if not any(pads):
        return x, shape
    arg: list = []
    for p in reversed(pads):
        arg += [0, p]
    return F.pad(x, arg, mode="replicate"), shape


class RecursiveCascade(nn.Module):
    """Compose ``n`` subnets; the final flow is the composition of every cascade's flow.

    ``forward(fixed, moving)`` returns ``(flow, flows)``: the total voxel flow and the
    per-cascade flows, each ``(B, 3, D, H, W)``.  Inputs of any size are padded to the
    subnets' common multiple.  ``make_subnet`` is a factory called ``cascades`` times, or
    a sequence of already-built subnets (e.g. an affine subnet followed by dense ones).
    """

    def __init__(self, make_subnet: Union[Callable[[], nn.Module], Sequence[nn.Module]], cascades: int = 1) -> None:
        super().__init__()
        if callable(make_subnet) and not isinstance(make_subnet, nn.Module):
            subnets = [make_subnet() for _ in range(cascades)]
        else:
            subnets = list(make_subnet)
        self.subnets = nn.ModuleList(subnets)
        self.multiple = 1
        for s in self.subnets:
            m = int(getattr(s, "multiple", 1))
            self.multiple = self.multiple * m // math.gcd(self.multiple, m)

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        fixed_p, shape = _pad(fixed, self.multiple)
        moving_p, _ = _pad(moving, self.multiple)
        flows: List[torch.Tensor] = []
        total = None
        warped = moving_p
        for k, subnet in enumerate(self.subnets):
            flow = subnet(fixed_p, warped)
            flows.append(flow)
            total = flow if total is None else compose(total, flow)
            if k + 1 < len(self.subnets):  # the last cascade's warp is never used
                warped = warp(moving_p, total)
        crop = (slice(None), slice(None), slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2]))
        return total[crop], [f[crop] for f in flows]

    def forward_features(self, fixed: torch.Tensor, moving: torch.Tensor
                         ) -> Tuple[torch.Tensor, List[torch.Tensor], List[List[torch.Tensor]]]:
        """``(flow, flows, features)``: :meth:`forward`'s outputs plus each cascade's features
        (``subnet.forward_features``) on the padded grid (sides rounded up to ``self.multiple``,
        replicate padding at the high end of each axis, so index 0 is the same corner as the input's)."""
        fixed_p, shape = _pad(fixed, self.multiple)
        moving_p, _ = _pad(moving, self.multiple)
        flows: List[torch.Tensor] = []
        features: List[List[torch.Tensor]] = []
        total = None
        warped = moving_p
        for k, subnet in enumerate(self.subnets):
            if not hasattr(subnet, "forward_features"):
                raise TypeError(f"{type(subnet).__name__} cannot return its features (no forward_features)")
            flow, feats = subnet.forward_features(fixed_p, warped)
            flows.append(flow)
            features.append(feats)
            total = flow if total is None else compose(total, flow)
            if k + 1 < len(self.subnets):
                warped = warp(moving_p, total)
        crop = (slice(None), slice(None), slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2]))
        return total[crop], [f[crop] for f in flows], features
