"""Separable box mean over the spatial axes of ``(B, C, z, y, x)`` tensors (local statistics of NCC and MIND)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: windows wider than this many voxels are summed by cumulative sums (a cost independent of the width)
SHIFTED_SUMS_UP_TO = 7


def box_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """Separable box mean of edge ``k`` voxels (odd) over the spatial axes of ``(B, C, z, y, x)``;
    zero padding is counted out at the borders (``avg_pool3d(..., count_include_pad=False)``).

    Sums of ``k`` shifted views rather than ``avg_pool3d``: the same numbers, ~3x faster forward and
    backward on the CPU (80 x 96 x 80 x 3 channels: 21 ms against 61-87 ms on 2 threads).  Wider windows
    than :data:`SHIFTED_SUMS_UP_TO` (a 10 mm window on a 1 mm grid: 11 voxels) take differences of cumulative
    sums instead, the same numbers to float32 rounding (~1e-6) at a cost that does not grow with ``k``
    (159 x 191 x 159 x 3 channels, forward and backward, one thread: 1.6 s against 2.8 s at ``k = 11``).
    """
    p = k // 2
    for axis in (2, 3, 4):
        n = x.shape[axis]
        pad = [0] * 6
        if k > SHIFTED_SUMS_UP_TO:
            pad[2 * (4 - axis)], pad[2 * (4 - axis) + 1] = p + 1, p  # a leading zero: sum(i..i+k-1) = c[i+k] - c[i]
            c = torch.cumsum(F.pad(x, pad), axis)
            total = c.narrow(axis, k, n) - c.narrow(axis, 0, n)
        else:
            pad[2 * (4 - axis)] = pad[2 * (4 - axis) + 1] = p
            padded = F.pad(x, pad)
            total = padded.narrow(axis, 0, n)
            for i in range(1, k):
                total = total + padded.narrow(axis, i, n)
        idx = torch.arange(n, device=x.device)
        count = (torch.clamp(idx + p, max=n - 1) - torch.clamp(idx - p, min=0) + 1).to(x.dtype)
        shape = [1] * x.dim()
        shape[axis] = n
        x = total / count.view(shape)
    return x
