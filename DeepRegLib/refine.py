"""Instance optimisation ("Refine"): optimise the network's mapping for one pair.

Starting from the network's voxel flow ``u`` on its 2 mm LPS grid, a stationary velocity
field ``v`` on the same grid is optimised so that the moving image warped by

    total = u o (id + exp(v))        (``spatial.compose(u, exp(v))``)

matches the fixed image under a local normalised cross-correlation (windows of
``ncc_window_mm``, separable box filters), with a diffusion regulariser on ``v`` in
physical units (``|grad v|^2`` with ``v`` in mm and derivatives per mm, i.e. dimensionless).
``exp(v)`` is integrated by scaling and squaring, so the refinement is diffeomorphic by
construction; the network's own field is kept as it is.  Adam, early stop on a loss plateau.

Tensor conventions are those of :mod:`DeepRegLib.spatial`: ``(B, C, z, y, x)``, flows in voxels.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F

from .spatial import compose, integrate_velocity, warp


@dataclass(frozen=True)
class RefineConfig:
    """Settings of the per-pair refinement (lengths in mm, on the network's grid).

    The defaults were chosen on the 6 validation pairs of subjects 17, 18, 19 as a whole, medians
    over pairs (``benchmarks/results/refine_tuning.md``): 20 steps of 0.5 mm with 10 mm windows
    took the network from 0.636 / 0.482 to 0.666 / 0.533 (subcortical / cortical Dice); 14 mm
    windows gave 0.666 / 0.530.  A step (80 x 96 x 80 grid) cost 0.6 s in an isolated profile on 2
    cores and up to 2.8 s on the shared machine of the benchmark (README, *Accuracy and speed*).
    """

    max_steps: int = 20              # Adam steps at most
    learning_rate: float = 0.5       # mm of velocity per step (Adam's step size)
    ncc_window_mm: float = 10.0      # local NCC window edge (mm); 5 voxels at 2 mm
    smooth_weight: float = 1.0       # weight of mean |grad v|^2 (dimensionless) against 1 - LNCC
    integration_steps: int = 4       # scaling-and-squaring steps (velocity / 16, then 4 squarings)
    patience: int = 6                # stop when the loss has not improved by min_delta for this many steps
    min_delta: float = 2e-4
    progress_every: int = 2          # call progress every this many steps
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RefineOutcome:
    """Result of :func:`refine_flow`: the refined total voxel flow (or the input when cancelled)."""

    flow: torch.Tensor               # (1, 3, z, y, x) voxels, fixed -> moving
    steps: int
    losses: List[float]
    cancelled: bool
    seconds: float


def _box(x: torch.Tensor, k: int) -> torch.Tensor:
    """Separable box mean of edge ``k`` voxels (zero padding counted out at the borders)."""
    p = k // 2
    x = F.avg_pool3d(x, (k, 1, 1), 1, (p, 0, 0), count_include_pad=False)
    x = F.avg_pool3d(x, (1, k, 1), 1, (0, p, 0), count_include_pad=False)
    return F.avg_pool3d(x, (1, 1, k), 1, (0, 0, p), count_include_pad=False)


def local_ncc(fixed: torch.Tensor, moving: torch.Tensor, window: int,
              mask: Optional[torch.Tensor] = None, eps: float = 1e-5) -> torch.Tensor:
    """Mean squared local correlation coefficient in ``[0, 1]`` (``(B, 1, z, y, x)`` inputs; ``mask`` weights)."""
    return LocalNCC(fixed, window, mask, eps)(moving)


class LocalNCC:
    """:func:`local_ncc` against a fixed image whose local statistics are computed once."""

    def __init__(self, fixed: torch.Tensor, window: int, mask: Optional[torch.Tensor] = None,
                 eps: float = 1e-5) -> None:
        self.fixed, self.window, self.mask, self.eps = fixed, window, mask, eps
        self.mf = _box(fixed, window)
        self.vf = (_box(fixed * fixed, window) - self.mf * self.mf).clamp_min(0)

    def __call__(self, moving: torch.Tensor) -> torch.Tensor:
        c = moving.shape[1]
        stats = _box(torch.cat([moving, moving * moving, self.fixed * moving], 1), self.window)
        mm, mm2, fm = stats[:, :c], stats[:, c:2 * c], stats[:, 2 * c:]
        vm = (mm2 - mm * mm).clamp_min(0)
        cov = fm - self.mf * mm
        cc = cov * cov / (self.vf * vm + self.eps)
        if self.mask is None:
            return cc.mean()
        return (cc * self.mask).sum() / self.mask.sum().clamp_min(1.0)


def diffusion(v_mm: torch.Tensor, spacing: float) -> torch.Tensor:
    """Mean ``|grad v|^2`` of a mm-valued field on an isotropic grid of ``spacing`` mm (per mm)."""
    dz = (v_mm[:, :, 1:] - v_mm[:, :, :-1]) / spacing
    dy = (v_mm[:, :, :, 1:] - v_mm[:, :, :, :-1]) / spacing
    dx = (v_mm[..., 1:] - v_mm[..., :-1]) / spacing
    return (dz.pow(2).mean() + dy.pow(2).mean() + dx.pow(2).mean())


def refine_flow(fixed: torch.Tensor, moving: torch.Tensor, flow: torch.Tensor, spacing: float,
                config: RefineConfig = RefineConfig(), mask: Optional[torch.Tensor] = None,
                moving_mask: Optional[torch.Tensor] = None,
                progress: Optional[Callable[[float], None]] = None,
                cancel: Optional[Callable[[], bool]] = None) -> RefineOutcome:
    """Refine the voxel ``flow`` ``(1, 3, z, y, x)`` of one pair on an isotropic grid of ``spacing`` mm.

    ``fixed`` and ``moving`` are ``(1, 1, z, y, x)`` normalised intensities on that grid (``moving``
    already through the affine stage); ``mask`` restricts the similarity (fixed grid), ``moving_mask``
    (on the same grid as ``moving``) is warped with it.  ``progress(fraction)`` every
    ``config.progress_every`` steps; ``cancel()`` polled every step: when it returns True the input
    ``flow`` is returned with ``cancelled=True``.  Deterministic for a given device and thread count.
    """
    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    flow = flow.detach()
    window = max(3, int(round(config.ncc_window_mm / spacing)) | 1)
    with torch.no_grad():
        start = warp(moving, flow)  # moving o A o (id + u), resampled once
        m_mask = None if moving_mask is None else (warp(moving_mask, flow) > 0.5).float()
    weight = mask
    if m_mask is not None:
        weight = m_mask if weight is None else weight * m_mask
    similarity = LocalNCC(fixed, window, weight)
    v_mm = torch.zeros_like(flow, requires_grad=True)
    opt = torch.optim.Adam([v_mm], lr=config.learning_rate)
    best, best_v, since, losses = float("inf"), None, 0, []
    for step in range(config.max_steps):
        if cancel is not None and cancel():
            return RefineOutcome(flow, step, losses, True, time.perf_counter() - t0)
        opt.zero_grad(set_to_none=True)
        phi = integrate_velocity(v_mm / spacing, config.integration_steps)
        sim = similarity(warp(start, phi))
        loss = (1.0 - sim) + config.smooth_weight * diffusion(v_mm, spacing)
        loss.backward()
        value = float(loss.detach())
        losses.append(value)
        if value < best - config.min_delta:
            best, best_v, since = value, v_mm.detach().clone(), 0
        else:
            since += 1
        if since >= config.patience:
            break
        opt.step()
        if progress is not None and (step + 1) % config.progress_every == 0:
            progress((step + 1) / config.max_steps)
    if best_v is None:
        best_v = v_mm.detach()
    with torch.no_grad():
        phi = integrate_velocity(best_v / spacing, config.integration_steps)
        total = compose(flow, phi)
    return RefineOutcome(total, len(losses), losses, False, time.perf_counter() - t0)
