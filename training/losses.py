"""Training losses: similarity and regularisation (all on voxel-unit flows)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def correlation_coefficient_loss(fixed: torch.Tensor, warped: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``1 - CorrCoef`` over the whole grid, per sample, averaged (VTN / LDR reconstruction loss)."""
    f = fixed.flatten(1)
    w = warped.flatten(1)
    f = f - f.mean(1, keepdim=True)
    w = w - w.mean(1, keepdim=True)
    cc = (f * w).mean(1) / torch.sqrt((f * f).mean(1) * (w * w).mean(1) + eps)
    return (1.0 - cc).mean()


def local_ncc_loss(fixed: torch.Tensor, warped: torch.Tensor, window: int = 9, eps: float = 1e-5) -> torch.Tensor:
    """``1 - mean local NCC`` with a separable box window (three 1-D ``avg_pool3d`` passes)."""
    def box(x: torch.Tensor) -> torch.Tensor:
        p = window // 2
        x = F.avg_pool3d(F.pad(x, (0, 0, 0, 0, p, p), mode="replicate"), (window, 1, 1), 1)
        x = F.avg_pool3d(F.pad(x, (0, 0, p, p, 0, 0), mode="replicate"), (1, window, 1), 1)
        return F.avg_pool3d(F.pad(x, (p, p, 0, 0, 0, 0), mode="replicate"), (1, 1, window), 1)

    mf, mw = box(fixed), box(warped)
    cov = box(fixed * warped) - mf * mw
    vf = (box(fixed * fixed) - mf * mf).clamp_min(0)
    vw = (box(warped * warped) - mw * mw).clamp_min(0)
    ncc = cov * cov / (vf * vw + eps)
    return 1.0 - ncc.mean()


def smoothness_loss(flow: torch.Tensor) -> torch.Tensor:
    """Mean squared forward difference of the flow along each axis (diffusion regulariser)."""
    dz = flow[:, :, 1:] - flow[:, :, :-1]
    dy = flow[:, :, :, 1:] - flow[:, :, :, :-1]
    dx = flow[:, :, :, :, 1:] - flow[:, :, :, :, :-1]
    return (dz.pow(2).mean() + dy.pow(2).mean() + dx.pow(2).mean()) / 3.0
