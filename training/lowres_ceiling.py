"""How much accuracy can a low-resolution flow carry? (issue 8, RESULTS.md "How far can a 4 mm student go")

For a trained high-resolution model and the validation pairs, on the network grid (mean label Dice,
subcortical, cortical):

* ``model``: the model's own flow;
* ``projected``: that flow average-pooled by ``factor`` and upsampled back exactly as a
  :class:`DeepRegLib.models.LowResolution` student's flow is (what a perfect low-resolution
  student of this model could output);
* ``weights_at_low_resolution``: the model's weights run unchanged inside a ``LowResolution``
  wrapper, its subnets padding odd sides inside (the warm start of the ``lowres_warm_*`` experiments).

    python -m training.lowres_ceiling Resources/models/ldr_brain_v1 [--factor 2]
"""
from __future__ import annotations

import argparse
import copy
import json
from typing import Dict

import numpy as np
import torch

from DeepRegLib.metrics import dice_scores, summarise_dice
from DeepRegLib.models import LowResolution, RecursiveCascade
from DeepRegLib.models.lowres import downsample, upsample_flow
from DeepRegLib.spatial import warp

from .data import PairSet
from .evaluate import evaluate_grid, predict_pairs
from .networks import load_trained


def projected_flow(flow: torch.Tensor, factor: int) -> torch.Tensor:
    """``(B, 3, D, H, W)`` voxel flow -> the same grid's flow after a round trip through a grid ``factor`` x coarser."""
    return upsample_flow(downsample(flow, factor) / factor, factor, flow.shape[2:])


def ceiling(net: RecursiveCascade, data: PairSet, factor: int = 2) -> Dict[str, Dict[str, float]]:
    """Grid Dice (``dice``, ``dice_subcortical``, ``dice_cortical``) of the three variants in the module docstring."""
    rows = {"model": [], "projected": []}
    for i, b, flow in predict_pairs(net, data):
        for name, f in (("model", flow), ("projected", projected_flow(flow, factor))):
            wl = warp(b["moving_labels"].float(), f, mode="nearest")
            d = summarise_dice(dice_scores(data.fixed_labels[i].astype(np.int32), wl[0, 0].numpy().astype(np.int32)))
            rows[name].append((d["all"], d["subcortical"], d["cortical"]))
    out = {k: dict(zip(("dice", "dice_subcortical", "dice_cortical"), map(float, np.nanmean(v, axis=0))))
           for k, v in rows.items()}
    inner = copy.deepcopy(net)
    for sub in inner.subnets:  # as the lowres_warm_* students run: odd sides padded inside, no padding to 16
        if hasattr(sub, "pad_inside"):
            sub.pad_inside, sub.multiple = True, 1
    inner.multiple = 1
    low = evaluate_grid(LowResolution(inner, factor).eval(), data)
    out["weights_at_low_resolution"] = {k: low[k] for k in ("dice", "dice_subcortical", "dice_cortical")}
    return out


def main(argv=None) -> None:
    from .data import load_split
    from .experiments import load
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="bundle folder, run folder or checkpoint of a high-resolution cascade")
    ap.add_argument("--factor", type=int, default=2)
    ap.add_argument("--experiment", default="ldr_noteacher", help="whose data config gives the validation pairs")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    net = load_trained(a.model).eval()
    print(json.dumps(ceiling(net, load_split(load(a.experiment).data, "val"), a.factor), indent=1))


if __name__ == "__main__":
    main()
