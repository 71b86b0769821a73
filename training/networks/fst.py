"""CRD's feature-shifted teacher (FST) as published (Hu et al., TCSVT 2022; the authors' ``voxelmorph_Hinput``).

One registration subnet, **the same weights**, runs twice: on the pair at the network grid (high
resolution, HR) and on the pair block-averaged by 2 (low resolution, LR: 2 mm -> 4 mm). A low-resolution
feature map at level ``k`` has the size of the HR map one level deeper, so the two are **shifted** one
level and concatenated; a fusion decoder runs up these concatenations from the deepest to the
finest, each fused map upsampled (trilinear) to the next level's size, and ends in a **high-resolution
flow**. Stage 1 trains the whole FST (shared subnet + fusion decoder) on that flow as any
registration network (similarity + smoothness; ``architecture='fst_ldr'``, the standard strategy);
stage 2 freezes it and distils a low-resolution student from its flow and from the attention maps
of its fused features (``training/strategies/crd_published.py``).

Here the shared subnet is an LDR cascade (``pad_inside``: any grid size). Its decoder features
``u3, u2, u1`` are at 1/8, 1/4, 1/2 of its input and its bottleneck ``e4`` at 1/16; the fusion
levels are (sizes relative to the HR grid)::

    f16 = LReLU(conv3([LR u3, HR e4]))                   1/16  (the reference pairs LR decode_8x with HR decode_16x)
    f8  = LReLU(conv3([up(f16), LR u2, HR u3]))          1/8
    f4  = LReLU(conv3([up(f8),  LR u1, HR u2]))          1/4
    f2  = LReLU(conv3([up(f4),  HR u1]))                 1/2
    flow = convT4x4x4/2([f2, HR e1])                     1/1, HR voxels

(LDR has no full-resolution feature map, so the last step is LDR's own flow head, a transposed
convolution, where the reference's VoxelMorph decoder has a 1/1 level.) ``f16, f8, f4`` have the sizes of
the LR student's ``u3, u2, u1`` (1/8, 1/4, 1/2 of the 4 mm grid): they are the attention targets.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from DeepRegLib.models.blocks import ConvAct, small_init
from DeepRegLib.models.ldr import LDRSubnet, crop_to
from DeepRegLib.models.lowres import downsample


def match_shape(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Crop or replicate-pad ``x`` ``(B, C, ...)`` at the high end of each spatial axis to ``shape``."""
    x = x[:, :, :shape[0], :shape[1], :shape[2]]
    pads = [int(t) - int(s) for t, s in zip(shape, x.shape[2:])]
    if not any(pads):
        return x
    arg: list = []
    for p in reversed(pads):
        arg += [0, p]
    return F.pad(x, arg, mode="replicate")


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=tuple(like.shape[2:]), mode="trilinear", align_corners=True)


class SharedFeatureShiftedTeacher(nn.Module):
    """``(fixed, moving) -> (flow, [flow])`` on the HR grid, like a one-cascade network (so the trainer,
    validation and checkpoints treat it as any model); :meth:`features` also returns the fused maps.

    Args:
        subnet: the shared registration subnet (an :class:`~DeepRegLib.models.LDRSubnet`; set to
            ``pad_inside`` so that any grid works).
        factor: the LR input's block size; the shift of one level needs 2.
    """

    multiple = 1

    def __init__(self, subnet: LDRSubnet, factor: int = 2) -> None:
        super().__init__()
        if int(factor) != 2:
            raise ValueError(f"the feature shift is one level, i.e. a factor of 2: expected factor 2, got {factor}")
        subnet.pad_inside = True
        self.subnet = subnet
        self.factor = 2
        c = subnet.feature_channels  # e1, e2, e3, e4, u3, u2, u1
        self.fuse16 = ConvAct(c[4] + c[3], c[4], 3, act="leaky")
        self.fuse8 = ConvAct(c[4] + c[5] + c[4], c[5], 3, act="leaky")
        self.fuse4 = ConvAct(c[5] + c[6] + c[5], c[6], 3, act="leaky")
        self.fuse2 = ConvAct(c[6] + c[6], c[6], 3, act="leaky")
        self.flow = small_init(nn.ConvTranspose3d(c[6] + c[0], 3, 4, 2, 1))
        #: channels of the attention targets f16, f8, f4 (the student's u3, u2, u1)
        self.attention_channels = [c[4], c[5], c[6]]

    def features(self, fixed: torch.Tensor, moving: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """``(flow, [f16, f8, f4, f2])``: the HR voxel flow ``(B, 3, D, H, W)`` and the fused maps."""
        _, hr = self.subnet.forward_features(fixed, moving)
        _, lr = self.subnet.forward_features(downsample(fixed, self.factor), downsample(moving, self.factor))
        e1, e4, u3, u2, u1 = hr[0], hr[3], hr[4], hr[5], hr[6]
        f16 = self.fuse16(torch.cat([match_shape(lr[4], e4.shape[2:]), e4], 1))
        f8 = self.fuse8(torch.cat([_up(f16, u3), match_shape(lr[5], u3.shape[2:]), u3], 1))
        f4 = self.fuse4(torch.cat([_up(f8, u2), match_shape(lr[6], u2.shape[2:]), u2], 1))
        f2 = self.fuse2(torch.cat([_up(f4, u1), u1], 1))
        flow = crop_to(self.flow(torch.cat([f2, e1], 1)), fixed)
        return flow, [f16, f8, f4, f2]

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        flow, _ = self.features(fixed, moving)
        return flow, [flow]
