"""Training losses. Flows are ``(B, 3, D, H, W)`` in voxels of a grid with ``spacing`` mm
(array order z, y, x); images ``(B, 1, D, H, W)``; labels ``(B, 1, D, H, W)`` int.

Regularisers and distillation work in physical units, so that their weights do not
depend on the grid: displacements are converted to mm and differentiated per mm.
:class:`CompositeLoss` returns every named term so that each can be logged.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch

from DeepRegLib.names import look_up_option
from DeepRegLib.similarity import Similarity
from DeepRegLib.spatial import warp

from .curricula import gaussian_blur


def _spacing(spacing: Optional[Sequence[float] | torch.Tensor], ref: torch.Tensor) -> torch.Tensor:
    s = torch.ones(3) if spacing is None else torch.as_tensor(spacing, dtype=torch.float32)
    return s.to(device=ref.device, dtype=ref.dtype).view(1, 3, 1, 1, 1)


def to_mm(flow: torch.Tensor, spacing: Optional[Sequence[float] | torch.Tensor]) -> torch.Tensor:
    """Voxel flow -> displacement in mm (channel c scaled by the spacing of array axis c)."""
    return flow * _spacing(spacing, flow)


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


# ----------------------------------------------------------------------------- affine subnets (RCN)
def affine_matrix(flow: torch.Tensor, spacing: Optional[Sequence[float] | torch.Tensor] = None) -> torch.Tensor:
    """The linear part ``A`` ``(B, 3, 3)`` of an affine flow ``(B, 3, D, H, W)`` (voxels), in physical
    units: ``A = I + S G S^-1``, ``G[i, j]`` the mean difference of channel ``i`` between neighbours
    along axis ``j`` (exact for an affine flow) and ``S = diag(spacing)``. Rows and columns are in
    array order (z, y, x); the determinant and the orthogonality of ``A`` do not depend on that order."""
    grads = [(flow.narrow(2 + j, 1, flow.shape[2 + j] - 1) - flow.narrow(2 + j, 0, flow.shape[2 + j] - 1))
             .flatten(2).mean(-1) for j in range(3)]                 # each (B, 3): d flow / d index_j
    g = torch.stack(grads, dim=-1)                                     # (B, 3 [i], 3 [j])
    s = _spacing(spacing, flow).flatten()
    eye = torch.eye(3, device=flow.device, dtype=flow.dtype)
    return eye + g * s.view(1, 3, 1) / s.view(1, 1, 3)


def affine_det_loss(a: torch.Tensor) -> torch.Tensor:
    """RCN's determinant loss: ``sum_b (det A_b - 1)^2 / 2`` (the reference's ``l2_loss(det - 1)``);
    0 for any rotation, ``(s^3 - 1)^2 / 2`` for an isotropic scaling by ``s``. ``a``: ``(B, 3, 3)``."""
    return 0.5 * (torch.linalg.det(a) - 1.0).pow(2).sum()


def affine_ortho_loss(a: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """RCN's orthogonality loss: with ``C = A^T A + eps I`` and ``k_i`` its eigenvalues,
    ``sum_i (k_i + (1 + eps)^2 / k_i) - 6 (1 + eps)``, summed over the batch: 0 for a rotation, positive
    otherwise (``3 (s^2 + 1/s^2 - 2)`` for an isotropic scaling by ``s``, to ``eps``). Computed from the
    invariants of ``C`` (trace, sum of principal 2x2 minors, determinant), as the reference does,
    so no eigen-decomposition is differentiated."""
    eye = torch.eye(3, device=a.device, dtype=a.dtype)
    c = a.transpose(1, 2) @ a + eps * eye
    s1 = c.diagonal(dim1=1, dim2=2).sum(-1)
    s2 = (c[:, 0, 0] * c[:, 1, 1] + c[:, 1, 1] * c[:, 2, 2] + c[:, 2, 2] * c[:, 0, 0]
          - c[:, 0, 1] * c[:, 1, 0] - c[:, 1, 2] * c[:, 2, 1] - c[:, 2, 0] * c[:, 0, 2])
    s3 = torch.linalg.det(c)
    return (s1 + (1 + eps) ** 2 * s2 / s3 - 6 * (1 + eps)).sum()


# ----------------------------------------------------------------------------- labels
def label_masks(labels: torch.Tensor, ids: Sequence[int], encoding: str = "values") -> torch.Tensor:
    """One float mask per id, ``(B, len(ids), D, H, W)``, from integer labels ``(B, 1, D, H, W)``.

    ``encoding='values'``: each label value is a region (``labels == id``); ``'bits'``: bit ``id``
    is channel ``id`` of a bit-packed map (the prostate task: bit 0 gland, bits 1.. landmarks),
    so overlapping structures each get their own mask.
    """
    lab = torch.as_tensor(list(ids), device=labels.device).view(1, -1, 1, 1, 1)
    if encoding == "values":
        return (labels == lab).float()
    if encoding == "bits":
        return ((labels.long() >> lab) & 1).float()
    look_up_option(encoding, ("values", "bits"), "label encoding")
    raise AssertionError("unreachable")


def soft_dice_loss(fixed_labels: torch.Tensor, moving_labels: torch.Tensor, flow: torch.Tensor,
                   labels: Sequence[int], eps: float = 1e-5, encoding: str = "values",
                   sigmas: Sequence[float] = (0.0,)) -> torch.Tensor:
    """``1 - mean soft Dice`` over ``labels``: moving label masks warped (trilinear) by ``flow``.

    ``sigmas`` (voxels): multi-scale Dice, the mean over scales of the Dice of both masks
    Gaussian-smoothed with each sigma (0: unsmoothed; smoothed scales use ``2 sum(ab) /
    (sum(a^2) + sum(b^2))``, 1 for identical masks), which gives small or distant structures
    (landmarks, a gland far off) a gradient before they overlap.
    """
    if len(labels) == 0:
        return flow.sum() * 0.0
    fixed_1h = label_masks(fixed_labels, labels, encoding).to(flow.dtype)
    warped = warp(label_masks(moving_labels, labels, encoding).to(flow.dtype), flow)
    losses = []
    for sigma in (sigmas or (0.0,)):
        if sigma <= 0:
            f, w = fixed_1h, warped
            denom = w.sum(dim=(2, 3, 4)) + f.sum(dim=(2, 3, 4))
        else:  # soft masks: squared terms, so that identical smoothed masks still score 1
            f, w = gaussian_blur(fixed_1h, sigma), gaussian_blur(warped, sigma)
            denom = w.pow(2).sum(dim=(2, 3, 4)) + f.pow(2).sum(dim=(2, 3, 4))
        inter = (w * f).sum(dim=(2, 3, 4))
        losses.append(1.0 - ((2 * inter + eps) / (denom + eps)).mean())
    return torch.stack(losses).mean()


def present_labels(labels: torch.Tensor, encoding: str = "values") -> torch.Tensor:
    """The non-zero label values (``'values'``) or the set bits (``'bits'``) found in ``labels``."""
    if encoding == "bits":
        found = torch.unique(labels)
        bits = [b for b in range(int(found.max()).bit_length()) if bool(((found.long() >> b) & 1).any())]
        return torch.tensor(bits, dtype=torch.long)
    present = torch.unique(labels)
    return present[present != 0]


def sample_labels(fixed_labels: torch.Tensor, k: int, generator: torch.Generator, encoding: str = "values") -> list:
    """``k`` random labels present in ``fixed_labels`` (all of them if fewer); see :func:`present_labels`."""
    present = present_labels(fixed_labels, encoding)
    if present.numel() <= k:
        return present.tolist()
    pick = torch.randperm(present.numel(), generator=generator)[:k]
    return present[pick].tolist()


# ----------------------------------------------------------------------------- distillation
def flow_distillation_loss(student: torch.Tensor, teacher: torch.Tensor,
                           spacing: Optional[Sequence[float] | torch.Tensor] = None) -> torch.Tensor:
    """Mean squared difference of the two displacements, in mm^2."""
    return (to_mm(student, spacing) - to_mm(teacher.detach(), spacing)).pow(2).sum(1).mean()


def endpoint_error(flow: torch.Tensor, target: torch.Tensor,
                   spacing: Optional[Sequence[float] | torch.Tensor] = None) -> torch.Tensor:
    """Mean end-point error ``|flow - target|`` in mm (a robust supervised flow loss: large known
    deformations do not drown the small ones, as their squared error would)."""
    d = to_mm(flow, spacing) - to_mm(target.detach(), spacing)
    return (d.pow(2).sum(1) + 1e-6).sqrt().mean()


# ----------------------------------------------------------------------------- feature distillation
# Attention transfer on 3D feature maps (for CRD). An attention map is the channel-wise sum of
# squared activations, flattened and L2-normalised per sample (Zagoruyko & Komodakis'
# activation-based attention with p = 2), so that it describes *where* a layer responds,
# independent of its channel count and scale. Features are ``(B, C, D, H, W)``; the student and
# target of one level must share the spatial shape (the channel counts may differ).
def attention_map(features: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``(B, C, D, H, W)`` -> ``(B, D*H*W)``: ``sum_c F_c^2``, divided by its L2 norm per sample."""
    a = features.float().pow(2).sum(1).flatten(1)
    return a / a.norm(dim=1, keepdim=True).clamp_min(eps)


def raw_attention_loss(student: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
    """CRD's published feature loss: ``sum_levels mean((sum_c s_c^2 - sum_c t_c^2)^2)``, the mean squared
    difference of *unnormalised* attention maps (channel-wise sums of squares), one term per level, summed
    (the authors' ``MSELoss(fea_s, fea_t)`` over four levels). Pairs must share ``(B, D, H, W)``."""
    terms = []
    for s, t in zip(student, target):
        if s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[2:]:
            raise ValueError(f"attention maps of one level must share batch and spatial shape: "
                             f"expected {tuple(t.shape[:1]) + tuple(t.shape[2:])}, got {tuple(s.shape[:1]) + tuple(s.shape[2:])}")
        terms.append((s.float().pow(2).sum(1) - t.float().pow(2).sum(1)).pow(2).mean())
    return torch.stack(terms).sum()


def attention_loss(student: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over levels (and samples) of ``||a_s - a_t||_2^2`` for the normalised attention maps.

    0 for identical (or proportional) features; at most 2 (disjoint supports). The target is
    detached: only the student is pulled.
    """
    if len(student) != len(target) or not student:
        raise ValueError(f"need the same non-zero number of student and target levels, got {len(student)} and {len(target)}")
    terms = []
    for i, (s, t) in enumerate(zip(student, target)):
        if s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[2:]:
            raise ValueError(f"level {i}: student features {tuple(s.shape)} and target {tuple(t.shape)} "
                             "differ in batch or spatial shape")
        terms.append((attention_map(s) - attention_map(t.detach())).pow(2).sum(1).mean())
    return torch.stack(terms).mean()


# ----------------------------------------------------------------------------- adversarial (ALDK)
#: how the ALDK critic compares student and teacher flows (``strategy.critic_objective``)
CRITIC_OBJECTIVES = ("squared", "linear")


def interpolate_flows(teacher_flow: torch.Tensor, student_flow: torch.Tensor, beta: Optional[float] = None,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``phi_hat = beta * phi_t + (1 - beta) * phi_s`` (both detached).

    ``beta`` a number: that fixed weight (the reference code's 0.1); ``None``: ``beta ~ U(0, 1)``
    drawn per sample from ``generator`` (WGAN-GP's random interpolation).
    """
    if beta is None:
        b = torch.rand(teacher_flow.shape[0], 1, 1, 1, 1, generator=generator).to(teacher_flow)
    else:
        b = float(beta)
    return b * teacher_flow.detach() + (1 - b) * student_flow.detach()


def gradient_penalty(critic, teacher_flow: torch.Tensor, student_flow: torch.Tensor,
                     generator: Optional[torch.Generator] = None, beta: Optional[float] = None) -> torch.Tensor:
    """WGAN-GP term ``(||grad_phi_hat D(phi_hat)||_2 - 1)^2`` averaged over the batch.

    ``phi_hat``: :func:`interpolate_flows` (``beta`` fixed, or ``U(0, 1)`` per sample when None);
    the gradient is of the critic value (one scalar per sample) with respect to the whole
    interpolated flow, and its norm is taken per sample over all of the flow's elements.
    """
    hat = interpolate_flows(teacher_flow, student_flow, beta, generator).requires_grad_(True)
    score = critic(hat)
    (grad,) = torch.autograd.grad(score.sum(), hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1.0).pow(2).mean()


def critic_gap(critic, student_flow: torch.Tensor, teacher_flow: torch.Tensor,
               objective: str = "squared") -> torch.Tensor:
    """The ALDK discrimination term, averaged over the batch: what the critic maximises and the student minimises.

    ``'squared'`` (the seed text's): ``||D(phi_s) - D(phi_t)||^2``; its gradient vanishes wherever
    the two scores are equal. ``'linear'`` (the reference code's, on logits): ``D(phi_t) - D(phi_s)``,
    the Wasserstein critic's gap with the teacher's flows as the real samples.
    """
    look_up_option(objective, CRITIC_OBJECTIVES, "critic objective")
    if objective == "linear":
        return (critic(teacher_flow) - critic(student_flow)).mean()
    return (critic(student_flow) - critic(teacher_flow)).pow(2).mean()


# ----------------------------------------------------------------------------- composite
#: similarity names of older run records, read as today's (``lncc`` is the local NCC, ``ncc``)
RENAMED_SIMILARITIES = {"lncc": "ncc"}


def training_similarity(cfg) -> Similarity:
    """The :class:`~DeepRegLib.similarity.Similarity` a loss config names (``similarity``, ``ncc_window``):
    the engine's own measures, so that training and refinement optimise one local NCC."""
    name = RENAMED_SIMILARITIES.get(cfg.similarity, cfg.similarity)
    return Similarity(name, window=cfg.ncc_window)


class CompositeLoss:
    """Weighted sum of named terms: ``__call__`` returns ``{'total': ..., name: value, ...}``.

    Terms with weight 0 are not computed. Inputs: a batch dict (``fixed``, ``moving``,
    optional labels, ``spacing``), the student's total flow and per-cascade flows, and
    optionally the teacher's flow.
    """

    def __init__(self, cfg, generator: Optional[torch.Generator] = None,
                 similarity: Optional[Similarity] = None, affine_index: Optional[int] = None) -> None:
        self.cfg = cfg
        #: which cascade is an affine subnet (RCN teachers); its flow gets the ``det`` and ``ortho`` terms
        #: (weights ``affine_det``, ``affine_ortho``) and, when either is on, no ``smooth`` term
        self.affine_index = affine_index
        if (getattr(cfg, "affine_det", 0.0) or getattr(cfg, "affine_ortho", 0.0)) and affine_index is None:
            raise ValueError("loss.affine_det / loss.affine_ortho regularise an affine subnet: "
                             "expected model.affine_subnet = True, got a model without one")
        self.generator = generator or torch.Generator().manual_seed(0)
        self.similarity = similarity or training_similarity(cfg)

    def __call__(self, batch: Dict[str, torch.Tensor], flow: torch.Tensor, flows: Sequence[torch.Tensor],
                 teacher_flow: Optional[torch.Tensor] = None, weights: Optional[Dict[str, float]] = None
                 ) -> Dict[str, torch.Tensor]:
        w = {"sim": getattr(self.cfg, "similarity_weight", 1.0), "smooth": self.cfg.smooth, "dice": self.cfg.dice,
             "distill": self.cfg.distill, "known": getattr(self.cfg, "known_flow", 0.0), "det": getattr(self.cfg, "affine_det", 0.0),
             "ortho": getattr(self.cfg, "affine_ortho", 0.0)}
        w.update(batch.get("loss_weights") or {})  # the task's own weights (multi-task data, training/continual.py)
        w.update(weights or {})
        spacing = batch.get("spacing")
        terms: Dict[str, torch.Tensor] = {}
        if w["sim"]:
            terms["sim"] = self.similarity.loss(batch["fixed"], warp(batch["moving"], flow))
        affine = self.affine_index if (w["det"] or w["ortho"]) else None
        if w["smooth"]:  # RCN: the affine cascade is regularised by det/ortho instead
            terms["smooth"] = sum(smoothness_loss(f, spacing) for k, f in enumerate(flows) if k != affine)
        if affine is not None:
            a = affine_matrix(flows[affine], spacing)
            terms["det"], terms["ortho"] = affine_det_loss(a), affine_ortho_loss(a)
        if w["dice"] and "fixed_labels" in batch:
            enc = batch.get("label_encoding", "values")  # the task's (training/data/tasks.py)
            labels = sample_labels(batch["fixed_labels"], self.cfg.dice_labels_per_step, self.generator, enc)
            terms["dice"] = soft_dice_loss(batch["fixed_labels"], batch["moving_labels"], flow, labels,
                                           encoding=enc,
                                           sigmas=tuple(batch.get("dice_sigmas") or self.cfg.dice_sigmas) or (0.0,))
        if w["distill"] and teacher_flow is not None:
            terms["distill"] = flow_distillation_loss(flow, teacher_flow, spacing)
        if w["known"] and batch.get("known_flow") is not None:  # a pair whose answer is known exactly
            terms["known"] = endpoint_error(flow, batch["known_flow"], spacing)
        total = sum(w[k] * v for k, v in terms.items())
        return {"total": total, **terms}
