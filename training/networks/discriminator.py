"""The ALDK flow discriminator (critic).

Six 3D convolutions, 4x4x4 kernels, stride 2, ReLU, channels 16 doubling to 256
(16, 32, 64, 128, 256, 256), a 1x1x1 projection and a sigmoid; the critic value of a
flow ``(B, 3, D, H, W)`` is the mean of that last map, one number per sample ``(B,)``.
Flows smaller than 2^layers voxels along an axis (smoke tests) are zero-padded to it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class FlowDiscriminator(nn.Module):
    def __init__(self, in_channels: int = 3, base: int = 16, layers: int = 6, max_channels: int = 256) -> None:
        super().__init__()
        chans = [in_channels] + [min(base * 2 ** i, max_channels) for i in range(layers)]
        body = []
        for a, b in zip(chans[:-1], chans[1:]):
            body += [nn.Conv3d(a, b, 4, 2, 1), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*body)
        self.head = nn.Conv3d(chans[-1], 1, 1)
        self.min_size = 2 ** layers

    def forward(self, flow: torch.Tensor) -> torch.Tensor:
        if flow.dim() != 5 or flow.shape[1] != 3:
            raise ValueError(f"expected a flow (B, 3, D, H, W), got {tuple(flow.shape)}")
        pads = [max(0, self.min_size - s) for s in flow.shape[2:]]
        if any(pads):
            flow = F.pad(flow, [0, pads[2], 0, pads[1], 0, pads[0]])
        return torch.sigmoid(self.head(self.body(flow))).mean(dim=(1, 2, 3, 4))
