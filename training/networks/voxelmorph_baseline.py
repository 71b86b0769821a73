"""VoxelMorph (Balakrishnan et al.) from the ``voxelmorph`` package, as an outside baseline.

:class:`VoxelMorphSubnet` wraps ``voxelmorph.nn.models.VxmPairwise`` (a U-Net predicting a
stationary velocity field, integrated by scaling and squaring) in the subnet interface of
:class:`DeepRegLib.models.RecursiveCascade`: ``forward(fixed, moving) -> (B, 3, D, H, W)``
voxel displacement, fixed -> moving, channel ``c`` along array axis ``c``. The package
uses the same convention (``warped_source(p) = source(p + disp(p))``, channels in array
order), with source = moving and target = fixed. The package is imported only here.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn


class VoxelMorphSubnet(nn.Module):
    """``VxmPairwise(ndim=3)`` with the package's defaults unless given. Sides must be multiples of
    ``2 ** len(nb_features)``."""

    def __init__(self, nb_features: Sequence[int] = (16, 16, 16, 16, 16), integration_steps: int = 5) -> None:
        super().__init__()
        try:
            from voxelmorph.nn.models import VxmPairwise
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("the VoxelMorph baseline needs the `voxelmorph` package: "
                              "pip install voxelmorph==0.3.4") from exc
        self.multiple = 2 ** len(nb_features)
        self.net = VxmPairwise(ndim=3, source_channels=1, target_channels=1, nb_features=list(nb_features),
                               integration_steps=integration_steps)

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        return self.net(moving, fixed, return_field_type="displacement")
