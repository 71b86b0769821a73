"""The RCN teacher's subnets as the reference architecture builds them (Zhao et al., Recursive
Cascaded Networks, ICCV 2019; VTN, IEEE JBHI 2019).

:class:`VTN`, the dense deformable subnet: six stride-2 3x3x3 encoder levels of ``c, 2c, 4c, 8c,
16c, 32c`` channels (``c`` = ``channels``), levels 3-6 followed by a same-resolution 3x3x3
convolution, LeakyReLU(0.1). The decoder predicts a flow at every level from 1/64 up: at level
``k`` the coarser level's features are upsampled by a *learned* 4x4x4 transposed convolution
(+ LeakyReLU) and its flow prediction by a second learned transposed convolution, both
concatenated with the encoder's skip; the full-resolution flow is a last transposed convolution of
the 1/2-level concatenation, multiplied by ``20 * flow_multiplier`` (the reference's output scaling;
RCN sets ``flow_multiplier = 1 / cascades``).

:class:`VTNAffineStem`, the affine subnet: the same six-level encoder, then ``W`` (3x3) and ``b``
(3) regressed from the 1/64-level features; ``A = I + W``; the flow is ``W p + b`` at every voxel
``p`` (voxel coordinates centred on the grid). The reference regresses them with a convolution as
large as the 1/64 grid of its 128^3 input; here the features are average-pooled to 2x2x2 first
(what that grid is at 128^3), so any grid works. Its determinant and orthogonality losses are in
:mod:`training.losses` (``affine_det_loss``, ``affine_ortho_loss``), computed from the flow.

Differences from the reference, on purpose: every input size works (an odd side is padded by one
replicated slice before a stride-2 convolution and decoder outputs are cropped to their skip, as
``ldr`` does with ``pad_inside``); the flow-predicting layers start near zero (``small_init``) and
the affine head at zero, so training starts from the identity (the reference initialises them
randomly); channels follow PyTorch's ``(B, C, D, H, W)`` and the engine's voxel-unit flows.
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

from DeepRegLib.models.blocks import ConvAct, UpConvAct, small_init
from DeepRegLib.models.ldr import crop_to, even_sides

from .vtn import centred_points

#: the reference's output scaling of the dense flow (``pred0 * 20 * flow_multiplier``)
FLOW_SCALE = 20.0


class VTNEncoder(nn.Module):
    """Six stride-2 levels (``c .. 32c`` channels), levels 3-6 with an extra same-size convolution.

    ``forward(x)`` returns the six level outputs, 1/2 .. 1/64 of the input size (odd sides are padded
    by one replicated slice first, so a side ``n`` becomes ``ceil(n / 2)``)."""

    def __init__(self, in_channels: int = 2, channels: int = 16) -> None:
        super().__init__()
        c = [channels * m for m in (1, 2, 4, 8, 16, 32)]
        self.channels = c
        self.levels = nn.ModuleList()
        cin = in_channels
        for k, cout in enumerate(c):
            layer = ConvAct(cin, cout, 3, 2, act="leaky")
            self.levels.append(layer if k < 2 else nn.Sequential(layer, ConvAct(cout, cout, 3, 1, act="leaky")))
            cin = cout

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        feats = []
        for level in self.levels:
            x = level(even_sides(x))
            feats.append(x)
        return feats


class VTN(nn.Module):
    """The reference dense subnet: ``(fixed, moving) -> flow``, inputs ``(B, 1, D, H, W)`` of any size,
    flow ``(B, 3, D, H, W)`` in voxels (channel ``c`` along array axis ``c``; the engine's convention).

    Args:
        in_channels: channels of ``cat(fixed, moving)``.
        channels: ``c``, the first level's width (the reference's 16); the deepest level has ``32 c``.
        flow_multiplier: the reference's ``1 / cascades``; the flow is ``20 * flow_multiplier`` times
            the last layer's output.
    """

    multiple = 1

    def __init__(self, in_channels: int = 2, channels: int = 16, flow_multiplier: float = 1.0) -> None:
        super().__init__()
        self.encoder = VTNEncoder(in_channels, channels)
        c = self.encoder.channels
        self.scale = FLOW_SCALE * float(flow_multiplier)
        self.pred6 = small_init(nn.Conv3d(c[5], 3, 3, 1, 1))
        self.deconv = nn.ModuleList()   # features: level k+1 -> level k (k = 5 .. 1, 1-based)
        self.upflow = nn.ModuleList()   # flow prediction: level k+1 -> level k, learned
        self.pred = nn.ModuleList()     # flow prediction at level k (k = 5 .. 2)
        cin = c[5]
        for k in (4, 3, 2, 1, 0):       # 0-based index of the level being decoded
            self.deconv.append(UpConvAct(cin, c[k], act="leaky"))
            self.upflow.append(small_init(nn.ConvTranspose3d(3, 3, 4, 2, 1)))
            cin = c[k] * 2 + 3
            if k > 0:
                self.pred.append(small_init(nn.Conv3d(cin, 3, 3, 1, 1)))
        self.final = small_init(nn.ConvTranspose3d(cin, 3, 4, 2, 1))

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        x_in = torch.cat([fixed, moving], dim=1)
        feats = self.encoder(x_in)
        x = feats[5]
        pred = self.pred6(x)
        for i, skip in enumerate(reversed(feats[:5])):
            x = torch.cat([skip, crop_to(self.deconv[i](x), skip), crop_to(self.upflow[i](pred), skip)], dim=1)
            if i < len(self.pred):
                pred = self.pred[i](x)
        return crop_to(self.final(x), x_in) * self.scale


class VTNAffineStem(nn.Module):
    """The reference affine subnet: ``(fixed, moving) -> flow`` of the affine ``p -> A p + b``
    (``A = I + W``; ``p`` voxel coordinates centred on the grid), ``(B, 3, D, H, W)`` voxels.

    :meth:`matrix` returns ``(W, b)`` as ``(B, 3, 3)`` and ``(B, 3)``; :func:`training.losses.affine_matrix`
    recovers ``A`` from the flow alone, which is what the det/ortho losses use.
    """

    multiple = 1

    def __init__(self, in_channels: int = 2, channels: int = 16, flow_multiplier: float = 1.0) -> None:
        super().__init__()
        self.encoder = VTNEncoder(in_channels, channels)
        self.flow_multiplier = float(flow_multiplier)
        self.head = nn.Linear(self.encoder.channels[5] * 8, 12, bias=False)  # a 2x2x2 "valid" convolution
        nn.init.zeros_(self.head.weight)

    def matrix(self, fixed: torch.Tensor, moving: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W, b)``: ``(B, 3, 3)`` (dimensionless) and ``(B, 3)`` voxels, axes in array order."""
        feat = self.encoder(torch.cat([fixed, moving], dim=1))[5]
        p = self.head(F.adaptive_avg_pool3d(feat, 2).flatten(1)) * self.flow_multiplier
        return p[:, :9].view(-1, 3, 3), p[:, 9:]

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        w, b = self.matrix(fixed, moving)
        p = centred_points(fixed)  # (1, 3, N)
        return (w @ p + b.unsqueeze(-1)).view(fixed.shape[0], 3, *fixed.shape[2:])
