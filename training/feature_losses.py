"""Feature distillation losses: attention transfer on 3D feature maps (for CRD).

An attention map is the channel-wise sum of squared activations, flattened and
L2-normalised per sample (Zagoruyko & Komodakis' activation-based attention with p = 2),
so that it describes *where* a layer responds, independent of its channel count and scale.
Features are ``(B, C, D, H, W)``; the student and target of one level must share the
spatial shape (the channel counts may differ).
"""
from __future__ import annotations

from typing import Sequence

import torch


def attention_map(features: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``(B, C, D, H, W)`` -> ``(B, D*H*W)``: ``sum_c F_c^2``, divided by its L2 norm per sample."""
    a = features.float().pow(2).sum(1).flatten(1)
    return a / a.norm(dim=1, keepdim=True).clamp_min(eps)


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
