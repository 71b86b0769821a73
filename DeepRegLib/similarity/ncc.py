"""Normalised cross-correlation: the one local NCC (refinement and training) and the global one.

Both return a *similarity* (higher is better, 1 for a perfect linear match); a loss is ``1 - value``.
Images are ``(B, C, z, y, x)`` tensors on one grid; a ``mask`` ``(B, 1, z, y, x)`` weights voxels of
the fixed grid.
"""
from __future__ import annotations

from typing import Optional

import torch

from .boxfilter import box_mean


class LocalNCC:
    """Mean squared local correlation coefficient in ``[0, 1]`` against a fixed image whose local
    statistics are computed once.

    Args:
        fixed: ``(B, C, z, y, x)``.
        window: edge of the cubic window in voxels (odd); box means count the padding out at the borders
            (:func:`~DeepRegLib.similarity.boxfilter.box_mean`).
        mask: ``(B, 1, z, y, x)`` weights on the fixed grid, or None.
        eps: added to ``var(fixed) * var(moving)``; it must be small against the variances it guards
            (a large one rewards added contrast, so that the identity is no longer the optimum).
        min_std: windows whose fixed standard deviation is below it do not count (flat background
            cannot say where anything is); 0 keeps every window.
    """

    def __init__(self, fixed: torch.Tensor, window: int, mask: Optional[torch.Tensor] = None,
                 eps: float = 1e-5, min_std: float = 0.0) -> None:
        if window < 1 or window % 2 == 0:
            raise ValueError(f"local NCC window must be a positive odd number of voxels, got {window}")
        self.fixed, self.window, self.mask, self.eps = fixed, window, mask, eps
        self.mf = box_mean(fixed, window)
        self.vf = (box_mean(fixed * fixed, window) - self.mf * self.mf).clamp_min(0)
        if min_std > 0:
            informative = (self.vf > min_std * min_std).to(fixed.dtype)
            self.mask = informative if mask is None else mask * informative

    def prepare(self, moving: torch.Tensor) -> torch.Tensor:
        """What is warped each step: the moving image itself."""
        return moving

    def __call__(self, moving: torch.Tensor) -> torch.Tensor:
        c = moving.shape[1]
        stats = box_mean(torch.cat([moving, moving * moving, self.fixed * moving], 1), self.window)
        mm, mm2, fm = stats[:, :c], stats[:, c:2 * c], stats[:, 2 * c:]
        vm = (mm2 - mm * mm).clamp_min(0)
        cov = fm - self.mf * mm
        cc = cov * cov / (self.vf * vm + self.eps)
        if self.mask is None:
            return cc.mean()
        return (cc * self.mask).sum() / self.mask.sum().clamp_min(1.0)


def local_ncc(fixed: torch.Tensor, moving: torch.Tensor, window: int,
              mask: Optional[torch.Tensor] = None, eps: float = 1e-5) -> torch.Tensor:
    """:class:`LocalNCC` of one pair: mean squared local correlation coefficient in ``[0, 1]``."""
    return LocalNCC(fixed, window, mask, eps)(moving)


class GlobalCC:
    """Pearson correlation of the whole grid per sample, averaged over the batch (VTN / LDR's
    reconstruction similarity), in ``[-1, 1]``.

    Args:
        fixed: ``(B, C, z, y, x)``.
        mask: ``(B, 1, z, y, x)`` weights, or None (every voxel counts alike).
        eps: added under the square root of the product of the two variances.
    """

    def __init__(self, fixed: torch.Tensor, mask: Optional[torch.Tensor] = None, eps: float = 1e-6) -> None:
        self.mask, self.eps = mask, eps
        self.weights = None if mask is None else (mask.expand_as(fixed).flatten(1) /
                                                  mask.expand_as(fixed).flatten(1).sum(1, keepdim=True).clamp_min(1e-12))
        self.f = self._centred(fixed.flatten(1))

    def _mean(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1, keepdim=True) if self.weights is None else (x * self.weights).sum(1, keepdim=True)

    def _centred(self, x: torch.Tensor) -> torch.Tensor:
        return x - self._mean(x)

    def prepare(self, moving: torch.Tensor) -> torch.Tensor:
        """What is warped each step: the moving image itself."""
        return moving

    def __call__(self, moving: torch.Tensor) -> torch.Tensor:
        w = self._centred(moving.flatten(1))
        f = self.f
        cc = self._mean(f * w).squeeze(1) / torch.sqrt((self._mean(f * f) * self._mean(w * w)).squeeze(1) + self.eps)
        return cc.mean()
