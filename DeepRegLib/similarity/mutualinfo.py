"""Mutual information with Parzen windows: a similarity for pairs whose intensities relate by any mapping.

Each image's intensities are clipped to their own range (0.5 and 99.5 percentiles, taken once) and
spread over ``bins`` Gaussian bins (width ``sigma`` bins), so the joint histogram
``p(a, b) = mean_x w_a(F(x)) w_b(M(x))`` is differentiable in the moving image (each value weighs
its 4 nearest bins only, so a step costs a few times a local NCC, not 32).  The similarity is the
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


def parzen_weights(image: torch.Tensor, lo: float, hi: float, bins: int, sigma: float
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Gaussian bin memberships of the ``N`` voxels of ``image`` clipped to ``[lo, hi]``, restricted to the
    4 bins nearest each value (further bins weigh < 1 % of the nearest at ``sigma`` <= 0.5 bin):
    ``(index, weight)``, both ``(N, 4)``; each row of ``weight`` sums to 1 (bins outside the range weigh 0)."""
    x = ((image.reshape(-1, 1).clamp(lo, hi) - lo) / (hi - lo)) * (bins - 1)
    first = torch.floor(x.detach()) - 1
    index = first + torch.arange(4, dtype=x.dtype, device=x.device).view(1, 4)
    w = torch.exp(-0.5 * ((x - index) / sigma) ** 2) * ((index >= 0) & (index <= bins - 1)).to(x.dtype)
    return index.clamp(0, bins - 1).long(), w / w.sum(1, keepdim=True)


def joint_histogram(fixed: Tuple[torch.Tensor, torch.Tensor], moving: Tuple[torch.Tensor, torch.Tensor], bins: int,
                    voxel_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``(bins, bins)`` sum over voxels of ``w_fixed(a) * w_moving(b)`` (times ``voxel_weight`` ``(N, 1)``)."""
    (fi, fw), (mi, mw) = fixed, moving
    if voxel_weight is not None:
        fw = fw * voxel_weight
    index = (fi.unsqueeze(2) * bins + mi.unsqueeze(1)).reshape(-1)
    values = (fw.unsqueeze(2) * mw.unsqueeze(1)).reshape(-1)
    return torch.zeros(bins * bins, dtype=values.dtype, device=values.device).index_add(0, index, values).view(bins, bins)


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
        if bins < 2 or not 0 < sigma <= 0.5:
            raise ValueError(f"mutual information needs bins >= 2 and 0 < sigma <= 0.5 (bins), got {bins}, {sigma}")
        self.bins, self.sigma, self.shape = bins, sigma, tuple(fixed.shape)
        self.weight = None if mask is None else mask.reshape(-1, 1).to(fixed.dtype)
        self.fixed_bins = parzen_weights(fixed, *_range(fixed, mask), bins, sigma)
        self.total = float(fixed.numel()) if self.weight is None else float(self.weight.sum().clamp_min(1.0))
        self.moving_range: Optional[Tuple[float, float]] = None

    def prepare(self, moving: torch.Tensor) -> torch.Tensor:
        """Fix the moving intensity range from the unwarped ``moving``; what is warped each step is the image itself."""
        self.moving_range = _range(moving, None)
        return moving

    def __call__(self, moving: torch.Tensor) -> torch.Tensor:
        if tuple(moving.shape) != self.shape:
            raise ValueError(f"moving image of shape {tuple(moving.shape)} does not match the fixed image's {self.shape}")
        lo, hi = self.moving_range if self.moving_range is not None else _range(moving, None)
        joint = joint_histogram(self.fixed_bins, parzen_weights(moving, lo, hi, self.bins, self.sigma), self.bins,
                                self.weight) / self.total  # sums to 1
        pf, pm = joint.sum(1), joint.sum(0)
        hf, hm, hj = _entropy(pf), _entropy(pm), _entropy(joint)
        return 2.0 * (hf + hm - hj) / (hf + hm).clamp_min(1e-6)
