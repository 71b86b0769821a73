"""The light-weight deformable registration (LDR) student subnet.

As described by Tran et al. (LDR + ALDK): four 4x4x4 stride-2 convolutions with
ReLU, 16 -> 32 -> 64 -> 128 channels; three transposed convolutions with skip
connections (concatenation); a final transposed convolution predicts the 3-channel
flow (voxel units, see :mod:`DeepRegLib.spatial`) at the input size.

Sizes: by default every input side must be a multiple of 16 (the cascade pads it so). With
``pad_inside=True`` any size works: before each stride-2 convolution an odd side is padded by one
replicated slice at its high end, and each decoder output is cropped to its skip connection's size.
On sides that are multiples of 16 the two are identical; on others ``pad_inside`` does far less
work (a 40 x 48 x 40 grid runs as it is instead of padded to 48^3: 30 % fewer voxels).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import ConvAct, UpConvAct, small_init


def even_sides(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, D, H, W)`` with each odd spatial side grown by one replicated slice at its high end."""
    pads = []
    for n in reversed(x.shape[2:]):
        pads += [0, n % 2]
    return F.pad(x, pads, mode="replicate") if any(pads) else x


def crop_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` cropped (high end) to ``like``'s spatial size."""
    d, h, w = like.shape[2:]
    return x[:, :, :d, :h, :w]


def down(conv: nn.Module, x: torch.Tensor, pad_inside: bool) -> torch.Tensor:
    """A stride-2 encoder step: ``conv(x)``, odd sides of ``x`` padded first when ``pad_inside``."""
    return conv(even_sides(x) if pad_inside else x)


def up(dec: nn.Module, x: torch.Tensor, like: torch.Tensor, pad_inside: bool) -> torch.Tensor:
    """A transposed-convolution decoder step: ``dec(x)``, cropped to ``like``'s size when ``pad_inside``."""
    y = dec(x)
    return crop_to(y, like) if pad_inside else y


class LDRSubnet(nn.Module):
    """One LDR cascade: ``(fixed, moving) -> flow``, both ``(B, 1, D, H, W)``, flow ``(B, 3, D, H, W)``.

    Input sides must be multiples of :attr:`multiple`: 16, or 1 with ``pad_inside`` (module docstring).
    """

    def __init__(self, in_channels: int = 2, base: int = 16, pad_inside: bool = False) -> None:
        super().__init__()
        self.pad_inside = bool(pad_inside)
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

    @property
    def multiple(self) -> int:
        """What every input side must be a multiple of: 16, or 1 with ``pad_inside``."""
        return 1 if self.pad_inside else 16

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        return self.forward_features(fixed, moving, keep=False)[0]

    def forward_features(self, fixed: torch.Tensor, moving: torch.Tensor, keep: bool = True
                         ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(flow, features)``: the same flow as :meth:`forward` and the intermediate features
        ``[e1, e2, e3, e4, u3, u2, u1]`` (encoder outputs at 1/2 .. 1/16 of the input size, then the
        decoder's upsampled outputs at 1/8, 1/4, 1/2, before concatenation with the skips).

        Used for feature distillation in ``training/``; with ``keep=False`` (what :meth:`forward`,
        i.e. inference, uses) no features are returned and each is freed as soon as it is used.
        """
        x = torch.cat([fixed, moving], dim=1)
        p = self.pad_inside
        e1 = down(self.enc1, x, p)
        e2 = down(self.enc2, e1, p)
        e3 = down(self.enc3, e2, p)
        e4 = down(self.enc4, e3, p)
        u3 = up(self.dec3, e4, e3, p)
        u2 = up(self.dec2, torch.cat([u3, e3], dim=1), e2, p)
        u1 = up(self.dec1, torch.cat([u2, e2], dim=1), e1, p)
        flow = up(self.flow, torch.cat([u1, e1], dim=1), x, p)
        return flow, ([e1, e2, e3, e4, u3, u2, u1] if keep else [])
