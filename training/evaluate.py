"""Validation on the network grid: label Dice (subcortical < 1000, cortical >= 1000) and % folding.

This is the quick per-checkpoint measure used for model selection; the full-resolution
figures (1 mm Dice, HD95, folding of the written transform) come from
``training/benchmark_models.py`` and ``benchmarks/``.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch

from DeepRegLib.metrics import dice_scores, summarise_dice
from DeepRegLib.spatial import folding_percent, warp

from .data import PairSet, make_batch


def evaluate_grid(net: torch.nn.Module, data: PairSet, device: torch.device | str = "cpu") -> Dict[str, float]:
    """Mean over pairs of the mean label Dice (all / subcortical / cortical) and % folding, on the grid."""
    was_training = net.training
    net.eval()
    rows = []
    with torch.no_grad():
        for i in range(len(data)):
            b = make_batch(data, [i], device)
            flow, _ = net(b["fixed"], b["moving"])
            row = {"folding_percent": folding_percent(flow.float().cpu())}
            if data.has_labels:
                wl = warp(b["moving_labels"].float(), flow.float(), mode="nearest")
                d = summarise_dice(dice_scores(data.fixed_labels[i].astype(np.int32),
                                               wl[0, 0].cpu().numpy().astype(np.int32)))
                row.update({"dice": d["all"], "dice_subcortical": d["subcortical"], "dice_cortical": d["cortical"]})
            rows.append(row)
    net.train(was_training)
    return {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}


def affine_only_grid(data: PairSet) -> Dict[str, float]:
    """The same Dice figures with no deformation (the affine stage alone)."""
    rows = [summarise_dice(dice_scores(data.fixed_labels[i].astype(np.int32), data.moving_labels[i].astype(np.int32)))
            for i in range(len(data))]
    return {"dice": float(np.mean([r["all"] for r in rows])),
            "dice_subcortical": float(np.mean([r["subcortical"] for r in rows])),
            "dice_cortical": float(np.mean([r["cortical"] for r in rows]))}
