"""VTN-style teacher subnets (Zhao et al., Volume Tweening Network).

``VTNDense``: a deeper dense deformable subnet (3x3x3 convolutions with extra
same-resolution layers, LeakyReLU, multi-scale flow predictions refined coarse to
fine).  ``VTNAffine``: a convolutional encoder regressing a 3x4 affine matrix, returned
as a voxel flow so that it composes like any cascade.  Both are used as the expensive
teacher of the distillation work in ``training/``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from DeepRegLib.spatial import identity_grid
from DeepRegLib.models.blocks import ConvAct, small_init


def centred_points(image: torch.Tensor) -> torch.Tensor:
    """The voxel coordinates of ``image``'s grid ``(B, C, D, H, W)``, centred on the grid: ``(1, 3, D*H*W)``
    (channel ``c`` along array axis ``c``), what the affine subnets' matrices act on."""
    shape = image.shape[2:]
    grid = identity_grid(shape, image.device, image.dtype)
    centre = torch.tensor([(s - 1) / 2.0 for s in shape], device=image.device, dtype=image.dtype)
    return (grid - centre.view(1, 3, 1, 1, 1)).flatten(2)


class VTNDense(nn.Module):
    """Dense deformable subnet. Input sides must be multiples of 32."""

    multiple = 32

    def __init__(self, in_channels: int = 2, base: int = 16) -> None:
        super().__init__()
        c = [base, base * 2, base * 4, base * 8, base * 16]
        self.enc = nn.ModuleList([
            ConvAct(in_channels, c[0], 3, 2, act="leaky"),
            ConvAct(c[0], c[1], 3, 2, act="leaky"),
            nn.Sequential(ConvAct(c[1], c[2], 3, 2, act="leaky"), ConvAct(c[2], c[2], act="leaky")),
            nn.Sequential(ConvAct(c[2], c[3], 3, 2, act="leaky"), ConvAct(c[3], c[3], act="leaky")),
            nn.Sequential(ConvAct(c[3], c[4], 3, 2, act="leaky"), ConvAct(c[4], c[4], act="leaky")),
        ])
        # decoder: at each level upsample features and the coarser flow, concatenate the skip
        self.pred5 = small_init(nn.Conv3d(c[4], 3, 3, 1, 1))
        self.up = nn.ModuleList()
        self.pred = nn.ModuleList()
        cin = c[4]
        for skip in (c[3], c[2], c[1], c[0]):
            self.up.append(nn.Sequential(nn.ConvTranspose3d(cin, skip, 4, 2, 1), nn.LeakyReLU(0.1, inplace=True)))
            cin = skip * 2 + 3
            self.pred.append(small_init(nn.Conv3d(cin, 3, 3, 1, 1)))
        self.final = small_init(nn.ConvTranspose3d(cin, 3, 4, 2, 1))

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        feats = []
        x = torch.cat([fixed, moving], dim=1)
        for layer in self.enc:
            x = layer(x)
            feats.append(x)
        flow = self.pred5(x)
        for up, pred, skip in zip(self.up, self.pred, reversed(feats[:-1])):
            flow_up = F.interpolate(flow, scale_factor=2, mode="trilinear", align_corners=False) * 2.0
            x = torch.cat([up(x), skip, flow_up], dim=1)
            flow = pred(x) + flow_up
        flow_up = F.interpolate(flow, scale_factor=2, mode="trilinear", align_corners=False) * 2.0
        return self.final(x) + flow_up


class VTNAffine(nn.Module):
    """Affine subnet: regresses ``A`` (3x3) and ``b`` (3) in centred voxel coordinates; returns a flow."""

    multiple = 32

    def __init__(self, in_channels: int = 2, base: int = 16) -> None:
        super().__init__()
        chans = [in_channels, base, base * 2, base * 4, base * 8, base * 16]
        self.encoder = nn.Sequential(*[ConvAct(a, b, 3, 2, act="leaky") for a, b in zip(chans[:-1], chans[1:])])
        self.head = nn.Linear(chans[-1], 12)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def matrix(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 4)`` affine ``[I + dA | b]`` acting on voxel coordinates centred on the grid."""
        feat = self.encoder(torch.cat([fixed, moving], dim=1)).mean(dim=(2, 3, 4))
        p = self.head(feat).view(-1, 3, 4)
        eye = torch.eye(3, 4, device=p.device, dtype=p.dtype).unsqueeze(0)
        return eye + p

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        theta = self.matrix(fixed, moving)
        shape = fixed.shape[2:]
        p = centred_points(fixed)  # (1, 3, N)
        mapped = theta[:, :, :3] @ p + theta[:, :, 3:]
        return (mapped - p).view(fixed.shape[0], 3, *shape)
