"""MIND-SSC: a modality-independent local structure descriptor, and a similarity built on it.

The self-similarity context of Heinrich et al. (MIND-SSC, MICCAI 2013): for every voxel, the
patch distances between the 12 pairs of its 6-neighbours that are sqrt(2) * ``dilation`` voxels
apart, ``D_k = box(|I(x + a_k) - I(x + b_k)|^2)`` over patches of ``2 * radius + 1`` voxels, turned
into ``exp(-D_k / V)`` with ``V`` the mean of the 12 distances (a local noise estimate) and divided
by their maximum. The descriptor depends on where the image's intensities change, not on their
values, so two images of one anatomy in different contrasts (T1 / T2, MR / CT) have similar
descriptors; compare it between a fixed image and a warped moving image with a mean absolute
difference.

Tensors are ``(B, 1, z, y, x)`` images and ``(B, 12, z, y, x)`` descriptors with values in [0, 1].
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .boxfilter import box_mean

# the 6-neighbourhood, and the 12 pairs of its members sqrt(2) apart (every pair but the opposite ones)
_SIX = ((0, 1, 1), (1, 1, 0), (1, 0, 1), (1, 1, 2), (2, 1, 1), (1, 2, 1))
_PAIRS = [(i, j) for i in range(6) for j in range(i + 1, 6)
          if sum((a - b) ** 2 for a, b in zip(_SIX[i], _SIX[j])) == 2]


def _shift(image: torch.Tensor, offset, dilation: int) -> torch.Tensor:
    """``image`` read at ``x + dilation * (offset - 1)`` (replicate padding), same shape."""
    d = dilation
    padded = F.pad(image, (d, d, d, d, d, d), mode="replicate")
    z, y, x = image.shape[2:]
    oz, oy, ox = (o * d for o in offset)
    return padded[:, :, oz:oz + z, oy:oy + y, ox:ox + x]


def mind_ssc(image: torch.Tensor, radius: int = 1, dilation: int = 2, eps: float = 1e-6) -> torch.Tensor:
    """The MIND-SSC descriptor ``(B, 12, z, y, x)`` of ``image`` ``(B, 1, z, y, x)`` (values in [0, 1]).

    ``radius``: patch half-size (voxels); ``dilation``: neighbour distance (voxels). Unchanged by a linear
    change of intensities ``a * I + b`` of either sign (up to ``eps``); constant images give 1 everywhere.
    """
    if image.dim() != 5 or image.shape[1] != 1:
        raise ValueError(f"mind_ssc expects a (B, 1, z, y, x) image, got shape {tuple(image.shape)}")
    shifted = [_shift(image, o, dilation) for o in _SIX]
    diff = torch.cat([(shifted[i] - shifted[j]).pow(2) for i, j in _PAIRS], 1)
    dist = box_mean(diff, 2 * radius + 1)
    dist = dist - dist.min(1, keepdim=True)[0]
    var = dist.mean(1, keepdim=True)
    scale = var.mean(dim=(2, 3, 4), keepdim=True)
    var = var.clamp(min=float(0.001 * scale.max()) + eps, max=float(1000 * scale.max()) + eps)
    desc = torch.exp(-dist / var)
    return desc / desc.max(1, keepdim=True)[0]


class MINDSimilarity:
    """``1 - mean |MIND(fixed) - warped moving descriptor|`` (in [0, 1], higher is better).

    The moving image's descriptor is computed once (:meth:`prepare`) and warped each step, as in
    instance optimisation with MIND features; ``mask`` ``(B, 1, z, y, x)`` weights the fixed grid.
    """

    def __init__(self, fixed: torch.Tensor, mask: Optional[torch.Tensor] = None, radius: int = 1,
                 dilation: int = 2) -> None:
        self.radius, self.dilation, self.mask = radius, dilation, mask
        self.target = mind_ssc(fixed, radius, dilation)

    def prepare(self, moving: torch.Tensor) -> torch.Tensor:
        """What is warped each step: the moving image's descriptor."""
        return mind_ssc(moving, self.radius, self.dilation)

    def __call__(self, warped: torch.Tensor) -> torch.Tensor:
        diff = (warped - self.target).abs().mean(1, keepdim=True)
        if self.mask is None:
            return 1.0 - diff.mean()
        return 1.0 - (diff * self.mask).sum() / self.mask.sum().clamp_min(1.0)
