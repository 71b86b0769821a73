"""Flow discriminator for adversarial distillation (ALDK).

Six 3D convolutions over a deformation (3 channels), conditioned on the fixed image
(concatenated, resized to the flow grid); the output is the mean feature ``M`` of the
last layer, one score per sample (WGAN-GP critic: no sigmoid).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import ConvAct


class FlowDiscriminator(nn.Module):
    def __init__(self, base: int = 16, condition_channels: int = 1) -> None:
        super().__init__()
        c = [3 + condition_channels, base, base * 2, base * 4, base * 8, base * 8]
        layers = [ConvAct(a, b, 4, 2, 1, act="leaky") for a, b in zip(c[:-1], c[1:])]
        layers.append(nn.Conv3d(c[-1], 1, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, flow: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        if condition.shape[2:] != flow.shape[2:]:
            condition = F.interpolate(condition, size=flow.shape[2:], mode="trilinear", align_corners=True)
        return self.net(torch.cat([flow, condition], dim=1)).mean(dim=(1, 2, 3, 4))
