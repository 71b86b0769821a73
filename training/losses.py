"""Training losses. Flows are ``(B, 3, D, H, W)`` in voxels of a grid with ``spacing`` mm
(array order z, y, x); images ``(B, 1, D, H, W)``; labels ``(B, 1, D, H, W)`` int.

Regularisers and distillation work in physical units, so that their weights do not
depend on the grid: displacements are converted to mm and differentiated per mm.
:class:`CompositeLoss` returns every named term so that each can be logged.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F

from DeepRegLib.spatial import warp


def _spacing(spacing: Optional[Sequence[float] | torch.Tensor], ref: torch.Tensor) -> torch.Tensor:
    s = torch.ones(3) if spacing is None else torch.as_tensor(spacing, dtype=torch.float32)
    return s.to(device=ref.device, dtype=ref.dtype).view(1, 3, 1, 1, 1)


def to_mm(flow: torch.Tensor, spacing: Optional[Sequence[float] | torch.Tensor]) -> torch.Tensor:
    """Voxel flow -> displacement in mm (channel c scaled by the spacing of array axis c)."""
    return flow * _spacing(spacing, flow)


# ----------------------------------------------------------------------------- similarity
def correlation_coefficient_loss(fixed: torch.Tensor, warped: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``1 - CorrCoef`` over the whole grid, per sample, averaged (the VTN / LDR reconstruction loss)."""
    f = fixed.flatten(1)
    w = warped.flatten(1)
    f = f - f.mean(1, keepdim=True)
    w = w - w.mean(1, keepdim=True)
    cc = (f * w).mean(1) / torch.sqrt((f * f).mean(1) * (w * w).mean(1) + eps)
    return (1.0 - cc).mean()


def box_filter(x: torch.Tensor, window: int) -> torch.Tensor:
    """Separable box mean over ``window`` voxels per axis (three 1-D ``avg_pool3d``, replicate padding)."""
    p = window // 2
    x = F.avg_pool3d(F.pad(x, (0, 0, 0, 0, p, p), mode="replicate"), (window, 1, 1), 1)
    x = F.avg_pool3d(F.pad(x, (0, 0, p, p, 0, 0), mode="replicate"), (1, window, 1), 1)
    return F.avg_pool3d(F.pad(x, (p, p, 0, 0, 0, 0), mode="replicate"), (1, 1, window), 1)


def local_ncc_loss(fixed: torch.Tensor, warped: torch.Tensor, window: int = 9, eps: float = 1e-5) -> torch.Tensor:
    """``1 - mean squared local NCC`` in a ``window``^3 box (separable, ~8x cheaper than a dense conv)."""
    mf, mw = box_filter(fixed, window), box_filter(warped, window)
    cov = box_filter(fixed * warped, window) - mf * mw
    vf = (box_filter(fixed * fixed, window) - mf * mf).clamp_min(0)
    vw = (box_filter(warped * warped, window) - mw * mw).clamp_min(0)
    return 1.0 - (cov * cov / (vf * vw + eps)).mean()


# ----------------------------------------------------------------------------- regularisers
def smoothness_loss(flow: torch.Tensor, spacing: Optional[Sequence[float] | torch.Tensor] = None) -> torch.Tensor:
    """Mean squared spatial derivative of the displacement, both in mm (dimensionless, grid-independent).

    With ``spacing=None`` the flow is taken in unit voxels (the derivative is the same
    for isotropic grids: voxels cancel).
    """
    u = to_mm(flow, spacing)
    s = _spacing(spacing, flow).flatten()
    dz = (u[:, :, 1:] - u[:, :, :-1]) / s[0]
    dy = (u[:, :, :, 1:] - u[:, :, :, :-1]) / s[1]
    dx = (u[:, :, :, :, 1:] - u[:, :, :, :, :-1]) / s[2]
    return (dz.pow(2).mean() + dy.pow(2).mean() + dx.pow(2).mean()) / 3.0


# ----------------------------------------------------------------------------- labels
def soft_dice_loss(fixed_labels: torch.Tensor, moving_labels: torch.Tensor, flow: torch.Tensor,
                   labels: Sequence[int], eps: float = 1e-5) -> torch.Tensor:
    """``1 - mean soft Dice`` over ``labels``: one-hot moving labels warped (trilinear) by ``flow``."""
    if len(labels) == 0:
        return flow.sum() * 0.0
    lab = torch.as_tensor(list(labels), device=flow.device).view(1, -1, 1, 1, 1)
    fixed_1h = (fixed_labels == lab).to(flow.dtype)
    moving_1h = (moving_labels == lab).to(flow.dtype)
    warped = warp(moving_1h, flow)
    inter = (warped * fixed_1h).sum(dim=(2, 3, 4))
    denom = warped.sum(dim=(2, 3, 4)) + fixed_1h.sum(dim=(2, 3, 4))
    return 1.0 - ((2 * inter + eps) / (denom + eps)).mean()


def sample_labels(fixed_labels: torch.Tensor, k: int, generator: torch.Generator) -> list:
    """``k`` random non-zero labels present in ``fixed_labels`` (all of them if fewer)."""
    present = torch.unique(fixed_labels)
    present = present[present != 0]
    if present.numel() <= k:
        return present.tolist()
    pick = torch.randperm(present.numel(), generator=generator)[:k]
    return present[pick].tolist()


# ----------------------------------------------------------------------------- distillation
def flow_distillation_loss(student: torch.Tensor, teacher: torch.Tensor,
                           spacing: Optional[Sequence[float] | torch.Tensor] = None) -> torch.Tensor:
    """Mean squared difference of the two displacements, in mm^2."""
    return (to_mm(student, spacing) - to_mm(teacher.detach(), spacing)).pow(2).sum(1).mean()


# ----------------------------------------------------------------------------- adversarial (ALDK)
def gradient_penalty(critic, teacher_flow: torch.Tensor, student_flow: torch.Tensor,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """WGAN-GP term ``(||grad_phi_hat D(phi_hat)||_2 - 1)^2`` averaged over the batch.

    ``phi_hat = beta * phi_t + (1 - beta) * phi_s`` with ``beta ~ U(0, 1)`` drawn per sample;
    the gradient is of the critic value (one scalar per sample) with respect to the whole
    interpolated flow, and its norm is taken per sample over all of the flow's elements.
    """
    b = teacher_flow.shape[0]
    beta = torch.rand(b, 1, 1, 1, 1, generator=generator).to(teacher_flow)
    hat = (beta * teacher_flow.detach() + (1 - beta) * student_flow.detach()).requires_grad_(True)
    score = critic(hat)
    (grad,) = torch.autograd.grad(score.sum(), hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1.0).pow(2).mean()


def critic_gap(critic, student_flow: torch.Tensor, teacher_flow: torch.Tensor) -> torch.Tensor:
    """``||D(phi_s) - D(phi_t)||^2``, averaged over the batch (the ALDK discrimination term)."""
    return (critic(student_flow) - critic(teacher_flow)).pow(2).mean()


# ----------------------------------------------------------------------------- composite
class CompositeLoss:
    """Weighted sum of named terms: ``__call__`` returns ``{'total': ..., name: value, ...}``.

    Terms with weight 0 are not computed. Inputs: a batch dict (``fixed``, ``moving``,
    optional labels, ``spacing``), the student's total flow and per-cascade flows, and
    optionally the teacher's flow.
    """

    def __init__(self, cfg, generator: Optional[torch.Generator] = None) -> None:
        self.cfg = cfg
        self.generator = generator or torch.Generator().manual_seed(0)

    def similarity(self, fixed: torch.Tensor, warped: torch.Tensor) -> torch.Tensor:
        if self.cfg.similarity == "cc":
            return correlation_coefficient_loss(fixed, warped)
        if self.cfg.similarity == "lncc":
            return local_ncc_loss(fixed, warped, self.cfg.ncc_window)
        raise ValueError(f"unknown similarity {self.cfg.similarity!r}; use 'cc' or 'lncc'")

    def __call__(self, batch: Dict[str, torch.Tensor], flow: torch.Tensor, flows: Sequence[torch.Tensor],
                 teacher_flow: Optional[torch.Tensor] = None, weights: Optional[Dict[str, float]] = None
                 ) -> Dict[str, torch.Tensor]:
        w = {"sim": 1.0, "smooth": self.cfg.smooth, "dice": self.cfg.dice, "distill": self.cfg.distill}
        w.update(batch.get("loss_weights") or {})  # the task's own weights (multi-task data, training/continual.py)
        w.update(weights or {})
        spacing = batch.get("spacing")
        terms: Dict[str, torch.Tensor] = {}
        if w["sim"]:
            terms["sim"] = self.similarity(batch["fixed"], warp(batch["moving"], flow))
        if w["smooth"]:
            terms["smooth"] = sum(smoothness_loss(f, spacing) for f in flows)
        if w["dice"] and "fixed_labels" in batch:
            labels = sample_labels(batch["fixed_labels"], self.cfg.dice_labels_per_step, self.generator)
            terms["dice"] = soft_dice_loss(batch["fixed_labels"], batch["moving_labels"], flow, labels)
        if w["distill"] and teacher_flow is not None:
            terms["distill"] = flow_distillation_loss(flow, teacher_flow, spacing)
        total = sum(w[k] * v for k, v in terms.items())
        return {"total": total, **terms}
