"""The ALDK flow discriminator (critic).

``layers`` 3D convolutions, 4x4x4 kernels, stride 2, ReLU, channels 16 doubling up to 256, a
1x1x1 projection and, for ``output='sigmoid'``, a sigmoid; the critic value of a flow
``(B, 3, D, H, W)`` is the mean of that last map, one number per sample ``(B,)``.

* ``layers=5`` is the seed text's and the reference code's layout: 16, 32, 64, 128, 256 channels,
  a 128^3 flow reduced to 64^3 x 16, ..., 4^3 x 256 (``strategy.critic_layers=5``, the
  ``ldr_aldk_linear`` / ``ldr_aldk_squared`` experiments).
* ``layers=6`` (the default, kept so that earlier runs resume and reproduce) adds a sixth
  256-channel convolution.
* ``output='logit'``: no sigmoid, the critic of the reference code's linear (Wasserstein) gap
  (``strategy.critic_objective='linear'``); ``'sigmoid'``: the seed text's bounded score.

Flows smaller than 2^layers voxels along an axis (smoke tests) are zero-padded to it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from DeepRegLib.names import look_up_option

OUTPUTS = ("sigmoid", "logit")


class FlowDiscriminator(nn.Module):
    def __init__(self, in_channels: int = 3, base: int = 16, layers: int = 6, max_channels: int = 256,
                 output: str = "sigmoid") -> None:
        super().__init__()
        self.output = look_up_option(output, OUTPUTS, "critic output")
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
        out = self.head(self.body(flow))
        if self.output == "sigmoid":
            out = torch.sigmoid(out)
        return out.mean(dim=(1, 2, 3, 4))
