"""Mutual information with Parzen windows: a similarity for pairs whose intensities relate by any mapping.

Each image's intensities are clipped to their own range (0.5 and 99.5 percentiles, taken once) and
spread over ``bins`` Gaussian bins (width ``sigma`` bins), so the joint histogram
``p(a, b) = mean_x w_a(F(x)) w_b(M(x))`` is differentiable in the moving image.  The similarity is the
normalised mutual information ``2 I(F; M) / (H(F) + H(M))`` (the symmetric uncertainty), in ``[0, 1]``:
1 when each image's intensity determines the other's, 0 when they are independent.  Unlike local NCC
it is unchanged by any one-to-one change of either image's intensities, and unlike MIND-SSC it does not
need the two images' edges to have one contrast sign or one relative strength, which is what random
per-label intensities (synthetic-contrast heads) or MR against ultrasound break.

Tensors are ``(B, 1, z, y, x)`` images; the histogram is over all batches and voxels together.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch


def _range(image: torch.Tensor, mask: Optional[torch.Tensor]) -> Tuple[float, float]:
    """The 0.5 and 99.5 percentiles of ``image`` (inside ``mask`` when given), a non-empty interval."""
    values = image.detach().flatten()
    if mask is not None:
        keep = mask.detach().flatten() > 0
        if keep.numel() == values.numel() and bool(keep.any()):
            values = values[keep]
    if values.numel() > 200_000:  # a strided subsample: the percentiles of a few 100k voxels suffice
        values = values[:: values.numel() // 200_000 + 1]
    lo, hi = (float(v) for v in torch.quantile(values.float(), torch.tensor([0.005, 0.995], dtype=torch.float32)))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def parzen_weights(image: torch.Tensor, lo: float, hi: float, bins: int, sigma: float) -> torch.Tensor:
    """``(N, bins)`` Gaussian bin memberships of the ``N`` voxels of ``image`` clipped to ``[lo, hi]``;
    each row sums to 1."""
    x = ((image.reshape(-1, 1).clamp(lo, hi) - lo) / (hi - lo)) * (bins - 1)
    centres = torch.arange(bins, dtype=image.dtype, device=image.device).view(1, -1)
    w = torch.exp(-0.5 * ((x - centres) / sigma) ** 2)
    return w / w.sum(1, keepdim=True)


def _entropy(p: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return -(p * torch.log(p + eps)).sum()


def normalised_mutual_information(fixed: torch.Tensor, moving: torch.Tensor, bins: int = 32,
                                  sigma: float = 0.5, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``2 I(F; M) / (H(F) + H(M))`` in ``[0, 1]`` of two ``(B, 1, z, y, x)`` images of one shape."""
    return MutualInformation(fixed, mask, bins, sigma)(moving)


class MutualInformation:
    """Normalised mutual information against a fixed image whose bin memberships are computed once.

    ``prepare(moving)`` fixes the moving image's intensity range (before it is warped); ``mask``
    ``(B, 1, z, y, x)`` on the fixed grid weights voxels in the joint histogram.
    """

    def __init__(self, fixed: torch.Tensor, mask: Optional[torch.Tensor] = None, bins: int = 32,
                 sigma: float = 0.5) -> None:
        if fixed.dim() != 5 or fixed.shape[1] != 1:
            raise ValueError(f"mutual information expects (B, 1, z, y, x) images, got shape {tuple(fixed.shape)}")
        if bins < 2 or sigma <= 0:
            raise ValueError(f"mutual information needs bins >= 2 and sigma > 0, got {bins}, {sigma}")
        self.bins, self.sigma = bins, sigma
        self.weight = None if mask is None else mask.reshape(-1, 1).to(fixed.dtype)
        wf = parzen_weights(fixed, *_range(fixed, mask), bins, sigma)
        self.wf_t = (wf if self.weight is None else wf * self.weight).t().contiguous()  # (bins, N)
        self.total = float(fixed.numel()) if self.weight is None else float(self.weight.sum().clamp_min(1.0))
        self.moving_range: Optional[Tuple[float, float]] = None

    def prepare(self, moving: torch.Tensor) -> torch.Tensor:
        """Fix the moving intensity range from the unwarped ``moving``; what is warped each step is the image itself."""
        self.moving_range = _range(moving, None)
        return moving

    def __call__(self, moving: torch.Tensor) -> torch.Tensor:
        if moving.numel() * self.bins != self.wf_t.numel():
            raise ValueError(f"moving image of shape {tuple(moving.shape)} does not match the fixed image's "
                             f"{self.wf_t.shape[1]} voxels")
        lo, hi = self.moving_range if self.moving_range is not None else _range(moving, None)
        wm = parzen_weights(moving, lo, hi, self.bins, self.sigma)
        joint = (self.wf_t @ wm) / self.total  # (bins, bins), sums to 1
        pf, pm = joint.sum(1), joint.sum(0)
        hf, hm, hj = _entropy(pf), _entropy(pm), _entropy(joint)
        return 2.0 * (hf + hm - hj) / (hf + hm).clamp_min(1e-6)
