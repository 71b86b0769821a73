"""The low-resolution student of cross-resolution distillation (CRD).

:class:`LowResolution` wraps a :class:`~DeepRegLib.models.cascade.RecursiveCascade` that runs
on the pair average-pooled by ``factor`` (2 mm network grid -> 4 mm for ``factor=2``) and
returns its flows on the input (network) grid again, so that a bundle of it yields the same
fixed -> moving voxel flow on the 2 mm grid as every other model: the engine, the ``.h5``
writer and the Slicer node are unchanged.

Geometry (cell-centred, as average pooling is): low-resolution voxel ``q`` is the mean of
input voxels ``f*q .. f*q + f - 1``, so its centre is at input coordinate ``f*q + (f-1)/2``.
A low-resolution displacement ``v(q)`` (low-resolution voxels) is therefore the input-grid
displacement ``u(p) = f * v((p - (f-1)/2) / f)``, which is exactly
``F.interpolate(v, scale_factor=f, mode='trilinear', align_corners=False) * f`` (border values
are held constant beyond the outermost low-resolution centres).
:func:`DeepRegLib.spatial.resize_flow` is corner-aligned (voxel 0 of both grids at the same
point), which does not match average pooling: it would misplace the field by up to half a
4 mm voxel at the far border.

With ``unshuffle=True`` the inner network sees the same 4 mm grid, but each image comes as
``f^3`` channels (:func:`space_to_depth`: the ``f^3`` 2 mm voxels of each 4 mm cell) instead of
their mean, so the 2 mm detail is not thrown away. Warping those channels by a 4 mm flow is
warping each 2 mm sub-lattice by it, i.e. (for a smooth flow) warping the 2 mm image; the
geometry above is unchanged. Only the first convolution grows (``2 f^3`` input channels).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .cascade import RecursiveCascade, _pad


def downsample(image: torch.Tensor, factor: int) -> torch.Tensor:
    """``(B, C, D, H, W)`` -> ``(B, C, ceil(D/f), ceil(H/f), ceil(W/f))`` by ``f``^3 block means
    (odd sides are first padded by replicating the last slice)."""
    return F.avg_pool3d(_pad(image, factor)[0], factor, factor)


def space_to_depth(image: torch.Tensor, factor: int) -> torch.Tensor:
    """``(B, C, D, H, W)`` -> ``(B, C * f^3, ceil(D/f), ceil(H/f), ceil(W/f))``: channel
    ``c * f^3 + (a * f + b) * f + e`` holds input voxel ``(f*q0 + a, f*q1 + b, f*q2 + e)`` of channel ``c``
    (odd sides padded as :func:`downsample` does). The mean of each block of ``f^3`` channels is
    :func:`downsample` of that channel."""
    x = _pad(image, factor)[0]
    b, c, d, h, w = x.shape
    f = int(factor)
    x = x.reshape(b, c, d // f, f, h // f, f, w // f, f).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * f ** 3, d // f, h // f, w // f)


def upsample_flow(flow: torch.Tensor, factor: int, shape: Sequence[int]) -> torch.Tensor:
    """A low-resolution voxel flow ``(B, 3, d, h, w)`` -> the input grid's ``(B, 3, *shape)`` voxel flow.

    Cell-centred trilinear interpolation (see the module docstring), displacements multiplied
    by ``factor`` (voxel size ratio, the same on every axis), cropped to ``shape``.
    """
    up = trilinear_upsample(flow, factor).mul_(factor)
    return up[:, :, :shape[0], :shape[1], :shape[2]]


def trilinear_upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=factor, mode='trilinear', align_corners=False)`` for ``(B, C, D, H, W)``,
    computed separably: the same values (trilinear interpolation is separable), 2-4x faster on the
    CPU for a 3-channel flow. Linear over D first, on the small input, then bilinear over H, W, whose
    output is already the result's memory layout: the only large temporary is the result itself."""
    b, c, d, h, w = x.shape
    y = F.interpolate(x.reshape(b * c, d, h * w).transpose(1, 2), scale_factor=factor, mode="linear",
                      align_corners=False)  # (B*C, H*W, f*D)
    y = y.transpose(1, 2).reshape(b * c * d * factor, 1, h, w)
    y = F.interpolate(y, scale_factor=factor, mode="bilinear", align_corners=False)
    return y.reshape(b, c, d * factor, h * factor, w * factor)


class UpsampledFlows(Sequence[torch.Tensor]):
    """Per-cascade flows on the input grid, upsampled when read (a sequence of ``(B, 3, *shape)`` tensors).

    Training reads them (per-cascade regularisers); inference ignores them, so that a
    low-resolution forward does not hold full-resolution copies it never uses.
    """

    def __init__(self, flows: Sequence[torch.Tensor], convert) -> None:
        self._flows = list(flows)
        self._convert = convert

    def __len__(self) -> int:
        return len(self._flows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._convert(f) for f in self._flows[i]]
        return self._convert(self._flows[i])


class LowResolution(nn.Module):
    """``(fixed, moving) -> (flow, flows)`` on the input grid, computed by ``inner`` at 1/``factor`` resolution.

    Inputs are ``(B, 1, D, H, W)`` on the network grid; ``flow`` is the total voxel flow and
    ``flows`` the per-cascade flows, each ``(B, 3, D, H, W)`` in input-grid voxels (an
    :class:`UpsampledFlows` sequence: upsampled only when read). ``unshuffle``: the inner network
    gets each image as ``factor^3`` channels (:func:`space_to_depth`) instead of their mean; its
    subnets must then take ``2 * factor^3`` input channels.
    """

    def __init__(self, inner: RecursiveCascade, factor: int = 2, unshuffle: bool = False) -> None:
        super().__init__()
        if int(factor) < 1:
            raise ValueError(f"factor must be a positive integer, got {factor!r}")
        self.inner = inner
        self.factor = int(factor)
        self.unshuffle = bool(unshuffle)
        self.multiple = 1  # any input size: padded to the factor here, to the subnets' multiple inside

    def reduce(self, image: torch.Tensor) -> torch.Tensor:
        """A ``(B, 1, D, H, W)`` input-grid image as the inner network sees it (mean or :func:`space_to_depth`)."""
        return space_to_depth(image, self.factor) if self.unshuffle else downsample(image, self.factor)

    @property
    def subnets(self) -> nn.ModuleList:
        """The inner cascade's subnets (as for a :class:`RecursiveCascade`)."""
        return self.inner.subnets

    def low_shape(self, shape: Sequence[int]) -> Tuple[int, int, int]:
        """Grid size the inner network runs on for an input grid of ``shape`` (D, H, W)."""
        return tuple(-(-int(s) // self.factor) for s in shape)

    def to_input_grid(self, flow: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        """A low-resolution flow (possibly on the inner cascade's padded grid) -> input-grid voxels."""
        low = self.low_shape(shape)
        return upsample_flow(flow[:, :, :low[0], :low[1], :low[2]], self.factor, shape)

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> Tuple[torch.Tensor, Sequence[torch.Tensor]]:
        shape = fixed.shape[2:]
        total, flows = self.inner(self.reduce(fixed), self.reduce(moving))
        return self.to_input_grid(total, shape), UpsampledFlows(flows, lambda f: self.to_input_grid(f, shape))

    def forward_features(self, fixed: torch.Tensor, moving: torch.Tensor
                         ) -> Tuple[torch.Tensor, List[torch.Tensor], List[List[torch.Tensor]]]:
        """:meth:`forward`'s outputs plus each cascade's features on the inner (padded, low-resolution) grid."""
        shape = fixed.shape[2:]
        total, flows, feats = self.inner.forward_features(self.reduce(fixed), self.reduce(moving))
        return self.to_input_grid(total, shape), [self.to_input_grid(f, shape) for f in flows], feats
