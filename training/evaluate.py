"""Validation on the network grid: label Dice (subcortical < 1000, cortical >= 1000) and % folding.

This is the quick per-checkpoint measure used for model selection; the full-resolution
figures (1 mm Dice, HD95, folding of the written transform) come from
``training/studies/benchmark_models.py`` and ``benchmarks/``. The task metrics of the continual
accuracy matrix (prostate gland Dice and landmark TRE, CT organ Dice and known-displacement
error) are :func:`evaluate_pairs`.
"""
from __future__ import annotations

from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch

from DeepRegLib.metrics import dice_scores, summarise_dice
from DeepRegLib.spatial import folding_percent, warp

from .data import PairSet, make_batch


def predict_pairs(net: torch.nn.Module, data: PairSet, device: torch.device | str = "cpu"
                  ) -> Iterator[Tuple[int, Dict[str, torch.Tensor], torch.Tensor]]:
    """``(i, batch, flow)`` for every pair of ``data``: the network in eval mode, no gradients, float32
    flow ``(1, 3, D, H, W)``; the network's training mode is restored afterwards."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            for i in range(len(data)):
                b = make_batch(data, [i], device)
                flow, _ = net(b["fixed"], b["moving"])
                yield i, b, flow.float()
    finally:
        net.train(was_training)


def pair_dice(data: PairSet, i: int, batch: Dict[str, torch.Tensor], flow: torch.Tensor) -> Dict[str, float]:
    """Mean label Dice (``dice``, ``dice_subcortical``, ``dice_cortical``) of pair ``i``'s moving labels
    (``batch['moving_labels']``) warped by the voxel ``flow`` ``(1, 3, D, H, W)`` (nearest neighbour)."""
    wl = warp(batch["moving_labels"].float(), flow, mode="nearest")
    d = summarise_dice(dice_scores(data.fixed_labels[i].astype(np.int32), wl[0, 0].cpu().numpy().astype(np.int32)))
    return {"dice": d["all"], "dice_subcortical": d["subcortical"], "dice_cortical": d["cortical"]}


def evaluate_grid(net: torch.nn.Module, data: PairSet, device: torch.device | str = "cpu") -> Dict[str, float]:
    """Mean over pairs of the mean label Dice (all / subcortical / cortical) and % folding, on the grid."""
    rows = []
    for i, b, flow in predict_pairs(net, data, device):
        row = {"folding_percent": folding_percent(flow.cpu())}
        if data.has_labels:
            row.update(pair_dice(data, i, b, flow))
        rows.append(row)
    return {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}


# ----------------------------------------------------------------------------- task metrics (the accuracy matrix's)
class ZeroFlow(torch.nn.Module):
    """The affine stage alone: a zero voxel flow ``(B, 3, D, H, W)`` for any pair."""

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor):
        zero = torch.zeros(fixed.shape[0], 3, *fixed.shape[2:], device=fixed.device)
        return zero, [zero]


def _centroid_mm(mask: np.ndarray, spacing: Sequence[float]) -> Optional[np.ndarray]:
    w = mask.astype(np.float64)
    if w.sum() <= 0:
        return None
    idx = np.indices(mask.shape).reshape(3, -1)
    return (idx * w.reshape(1, -1)).sum(1) / w.sum() * np.asarray(spacing)  # (z, y, x) mm


def evaluate_pairs(net: torch.nn.Module, data: PairSet, metric: str, device: torch.device | str = "cpu"
                   ) -> Dict[str, float]:
    """Mean over pairs of the task's figures; ``accuracy`` is the one the accuracy matrix uses.

    ``metric``: 'dice' (mean label Dice), 'brain' (labels < 100 of whole-head maps, else all
    < 1000), 'prostate' (gland Dice = bit 0; ``tre_mm`` = landmark centroid distance, bits 1..),
    'ct' (organ Dice over labels with >= 20 voxels in the fixed crop; ``tre_mm`` = mean
    ``|flow - known flow|`` in mm over the body, fixed > -500 HU).
    """
    from .data import prostate
    rows = []
    for i, b, flow in predict_pairs(net, data, device):
        spacing = np.asarray(data.grids[i].spacing[::-1], float)  # (z, y, x)
        row = {"folding_percent": folding_percent(flow.cpu())}
        fl = data.fixed_labels[i].astype(np.int32)
        if metric == "prostate":
            fixed_gland = prostate.unpack(fl, 0)
            moving_bits = torch.from_numpy(data.moving_labels[i].astype(np.int64))[None, None].to(device)
            gland_w = warp(((moving_bits >> 0) & 1).float(), flow)[0, 0].cpu().numpy() > 0.5
            row["accuracy"] = row["gland_dice"] = _dice(fixed_gland, gland_w)
            tre = []
            for k in range(1, prostate.MAX_CHANNELS):
                fk = prostate.unpack(fl, k)
                if not fk.any() or not prostate.unpack(data.moving_labels[i], k).any():
                    continue
                wk = warp(((moving_bits >> k) & 1).float(), flow)[0, 0].cpu().numpy()
                a, c = _centroid_mm(fk, spacing), _centroid_mm(wk, spacing)
                if a is not None and c is not None:
                    tre.append(float(np.linalg.norm(a - c)))
            row["tre_mm"] = float(np.mean(tre)) if tre else float("nan")
        else:
            wl = warp(b["moving_labels"].float(), flow, mode="nearest")[0, 0].cpu().numpy().astype(np.int32)
            if metric == "ct":
                labs = [l for l, n in zip(*np.unique(fl, return_counts=True)) if l != 0 and n >= 20]
            else:
                limit = 100 if metric == "brain" and fl.max() < 1000 and np.any(fl >= 100) else None
                labs = [l for l in np.unique(fl) if l != 0 and (limit is None or l < limit)]
            scores = dice_scores(fl, wl, labs) if labs else {}
            vals = [v for v in scores.values() if np.isfinite(v)]
            row["accuracy"] = row["dice"] = float(np.mean(vals)) if vals else float("nan")
            if metric == "ct" and data.flows is not None:
                known = torch.from_numpy(data.flows[i].astype(np.float32))[None].to(device)
                err = ((flow - known) * torch.tensor(spacing, dtype=torch.float32, device=device).view(1, 3, 1, 1, 1))
                err = err.pow(2).sum(1).sqrt()[0].cpu().numpy()
                body = data.fixed[i].astype(np.float32) > 0.25  # window [-1000, 1000]: > -500 HU
                row["tre_mm"] = float(err[body].mean()) if body.any() else float(err.mean())
        rows.append(row)
    keys = sorted({k for r in rows for k in r})
    return {k: float(np.nanmean([r.get(k, np.nan) for r in rows])) for k in keys}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return float(2.0 * np.logical_and(a, b).sum() / s) if s else float("nan")


# ----------------------------------------------------------------------------- affine stage alone
def affine_only_grid(data: PairSet) -> Dict[str, float]:
    """The same Dice figures with no deformation (the affine stage alone)."""
    rows = [summarise_dice(dice_scores(data.fixed_labels[i].astype(np.int32), data.moving_labels[i].astype(np.int32)))
            for i in range(len(data))]
    return {"dice": float(np.mean([r["all"] for r in rows])),
            "dice_subcortical": float(np.mean([r["subcortical"] for r in rows])),
            "dice_cortical": float(np.mean([r["cortical"] for r in rows]))}


def affine_only_validation(task: str, data: PairSet) -> Dict[str, float]:
    """The validation figures of the affine stage alone (a zero flow) in the task's own metric: label
    Dice for brains and synthetic pairs; gland Dice and landmark TRE (prostate), organ Dice and the error
    against the known displacement (CT), as the accuracy matrix reports them (:func:`evaluate_pairs`)."""
    from .data.tasks import TASKS
    metric = TASKS[task].metric if task in TASKS else "dice"
    if metric in ("prostate", "ct"):  # bit-packed prostate labels are not a label map: their Dice means nothing
        return evaluate_pairs(ZeroFlow().eval(), data, metric)
    return affine_only_grid(data) if data.has_labels else {}


def evaluate_known(net: torch.nn.Module, pairs, device: torch.device | str = "cpu") -> Dict[str, float]:
    """The network against pairs whose answer is known (:func:`training.data.same_subject.validation_pairs`):
    ``known_error_mm`` (mean over pairs of the mean |flow - known| in mm over the fixed brain),
    ``known_error_<kind>_mm`` per kind, and ``identical_max_mm`` (largest displacement on identical pairs)."""
    spacing = torch.tensor(pairs.spacing, dtype=torch.float32).view(1, 3, 1, 1, 1)
    errors: Dict[str, list] = {}
    identical_max = 0.0
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            for i, kind in enumerate(pairs.kinds):
                f = pairs.fixed[i:i + 1].to(device)
                m = pairs.moving[i:i + 1].to(device)
                flow, _ = net(f, m)
                diff = ((flow.float().cpu() - pairs.flows[i:i + 1]) * spacing).norm(dim=1)[0]
                brain = pairs.fixed[i, 0] > 0.05
                errors.setdefault(kind, []).append(float(diff[brain].mean()))
                if kind == "identical":
                    identical_max = max(identical_max, float((flow.float().cpu() * spacing).norm(dim=1)[0][brain].max()))
    finally:
        net.train(was_training)
    out = {f"known_error_{k}_mm": float(np.mean(v)) for k, v in errors.items()}
    out["known_error_mm"] = float(np.mean([x for v in errors.values() for x in v]))
    out["identical_max_mm"] = identical_max
    return out
