"""Validation on the network grid: label Dice (subcortical < 1000, cortical >= 1000) and % folding.

This is the quick per-checkpoint measure used for model selection; the full-resolution
figures (1 mm Dice, HD95, folding of the written transform) come from
``training/benchmark_models.py`` and ``benchmarks/``.
"""
from __future__ import annotations

from typing import Dict, Iterator, Tuple

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
    against the known displacement (CT), as the accuracy matrix reports them (``continual.evaluate_pairs``)."""
    from .data.tasks import TASKS
    metric = TASKS[task].metric if task in TASKS else "dice"
    if metric in ("prostate", "ct"):  # bit-packed prostate labels are not a label map: their Dice means nothing
        from .continual import evaluate_pairs
        from .continual_report import ZeroFlow
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
