"""The light-weight deformable registration (LDR) student subnet.

As described by Tran et al. (LDR + ALDK): four 4x4x4 stride-2 convolutions with
ReLU, 16 -> 32 -> 64 -> 128 channels; three transposed convolutions with skip
connections (concatenation); a final transposed convolution predicts the 3-channel
flow (voxel units, see :mod:`DeepRegLib.spatial`) at the input size.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import ConvAct, UpConvAct, small_init


class LDRSubnet(nn.Module):
    """One LDR cascade: ``(fixed, moving) -> flow``. Input sides must be multiples of 16."""

    multiple = 16

    def __init__(self, in_channels: int = 2, base: int = 16) -> None:
        super().__init__()
        c = [base, base * 2, base * 4, base * 8]
        self.enc1 = ConvAct(in_channels, c[0], 4, 2, 1)
        self.enc2 = ConvAct(c[0], c[1], 4, 2, 1)
        self.enc3 = ConvAct(c[1], c[2], 4, 2, 1)
        self.enc4 = ConvAct(c[2], c[3], 4, 2, 1)
        self.dec3 = UpConvAct(c[3], c[2])
        self.dec2 = UpConvAct(c[2] * 2, c[1])
        self.dec1 = UpConvAct(c[1] * 2, c[0])
        self.flow = small_init(nn.ConvTranspose3d(c[0] * 2, 3, 4, 2, 1))
        #: channels of the features :meth:`forward_features` returns (e1, e2, e3, e4, u3, u2, u1)
        self.feature_channels = [c[0], c[1], c[2], c[3], c[2], c[1], c[0]]

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(torch.cat([fixed, moving], dim=1))
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        d3 = torch.cat([self.dec3(e4), e3], dim=1)
        d2 = torch.cat([self.dec2(d3), e2], dim=1)
        d1 = torch.cat([self.dec1(d2), e1], dim=1)
        return self.flow(d1)

    def forward_features(self, fixed: torch.Tensor, moving: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(flow, features)``: the same flow as :meth:`forward` and the intermediate features
        ``[e1, e2, e3, e4, u3, u2, u1]`` (encoder outputs at 1/2 .. 1/16 of the input size, then the
        decoder's upsampled outputs at 1/8, 1/4, 1/2, before concatenation with the skips).

        Used for feature distillation in ``training/``; :meth:`forward` (inference) is kept
        separate so that it does not hold on to the extra tensors.
        """
        e1 = self.enc1(torch.cat([fixed, moving], dim=1))
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        u3 = self.dec3(e4)
        u2 = self.dec2(torch.cat([u3, e3], dim=1))
        u1 = self.dec1(torch.cat([u2, e2], dim=1))
        flow = self.flow(torch.cat([u1, e1], dim=1))
        return flow, [e1, e2, e3, e4, u3, u2, u1]
