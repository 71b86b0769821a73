"""How much accuracy can a low-resolution flow carry? (issue 8, RESULTS.md "How far can a 4 mm student go")

For a trained high-resolution model and the validation pairs, on the network grid (mean label Dice,
subcortical, cortical):

* ``model``: the model's own flow;
* ``projected``: that flow average-pooled by ``factor`` and upsampled back exactly as a
  :class:`DeepRegLib.models.LowResolution` student's flow is (what a perfect low-resolution
  student of this model could output);
* ``weights_at_low_resolution``: the model's weights run unchanged inside a low-resolution
  network (:class:`DeepRegLib.models.LowResolution`) whose subnets pad odd sides inside (the warm start of the ``lowres_warm_*``
  experiments, loaded the same way: :func:`training.trainer.init_target`).

    python -m training.studies.lowres_ceiling Resources/models/ldr_brain_v1 [--factor 2]
"""
from __future__ import annotations

import argparse
import json
from typing import Dict

import numpy as np
import torch

from DeepRegLib.models import RecursiveCascade, build_network
from DeepRegLib.models.lowres import downsample, upsample_flow

from ..data import PairSet
from ..evaluate import evaluate_grid, pair_dice, predict_pairs
from ..networks import load_trained
from ..trainer import init_target


def projected_flow(flow: torch.Tensor, factor: int) -> torch.Tensor:
    """``(B, 3, D, H, W)`` voxel flow -> the same grid's flow after a round trip through a grid ``factor`` x coarser."""
    return upsample_flow(downsample(flow, factor) / factor, factor, flow.shape[2:])


def ceiling(net: RecursiveCascade, data: PairSet, factor: int = 2) -> Dict[str, Dict[str, float]]:
    """Grid Dice (``dice``, ``dice_subcortical``, ``dice_cortical``) of the three variants in the module
    docstring; ``net`` is an LDR cascade."""
    rows = {"model": [], "projected": []}
    for i, b, flow in predict_pairs(net, data):
        rows["model"].append(pair_dice(data, i, b, flow))
        rows["projected"].append(pair_dice(data, i, b, projected_flow(flow, factor)))
    out = {k: {m: float(np.nanmean([r[m] for r in v])) for m in v[0]} for k, v in rows.items()}
    # the warm start of the lowres_warm_* students: the same weights, subnets padding odd sides inside
    base = net.subnets[0].feature_channels[0]  # the LDR's first width, its ``base`` argument
    low = build_network("lowres_ldr", len(net.subnets), factor=factor, pad_inside=True, base=base)
    state = net.state_dict()
    init_target(low, state).load_state_dict(state)
    scores = evaluate_grid(low.eval(), data)
    out["weights_at_low_resolution"] = {k: scores[k] for k in ("dice", "dice_subcortical", "dice_cortical")}
    return out


def main(argv=None) -> None:
    from ..data import load_split
    from ..experiments import load
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
