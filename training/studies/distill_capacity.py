"""Can the student *represent* the refined teacher's flow? Fit it to single training pairs.

The distilled students followed the refined teacher (``ldr_brain_v1`` + per-pair Refine) only a
quarter of the way over the 132 training pairs (RESULTS.md, issue 7). This separates the two
possible reasons. For each given pair, a fresh copy of the bundle's network is trained on the
distillation term alone (the distill strategy's: squared displacement difference to the refined
flow, summed over components, mean over voxels, mm^2) for ``--steps`` Adam steps on that pair only.
If it gets far below the 132-pair plateau, the architecture can hold the flow and the limit is
inferring it from unseen images; if not, the architecture is the limit.

    python -m training.studies.distill_capacity --pairs 0 66 --steps 300 --out training/results/distill_capacity.json

The refined flows are read from the cache ``python -m training run ldr_refinedistill`` filled
(the pairs must have been refined there).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import List, Tuple

import torch

from DeepRegLib.bundles import load_bundle

from ..config import to_dict
from ..data import load_split, make_batch
from ..experiments import load as load_experiment
from ..losses import flow_distillation_loss
from ..networks.refined_teacher import flows_folder

REPO = Path(__file__).resolve().parents[2]


def fit_flow(net: torch.nn.Module, fixed: torch.Tensor, moving: torch.Tensor, target: torch.Tensor,
             spacing: torch.Tensor, steps: int, lr: float, label: str = "") -> List[Tuple[int, float]]:
    """Train ``net`` on ``flow_distillation_loss(net(fixed, moving), target)`` alone for ``steps`` Adam
    steps; returns ``[(step, loss mm^2), ...]`` at 11 points from step 0 to ``steps``.
    ``fixed``/``moving`` ``(1, 1, D, H, W)``, ``target`` ``(1, 3, D, H, W)`` voxels, ``spacing`` (3,) mm."""
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr)
    curve = []
    for step in range(steps + 1):
        loss = flow_distillation_loss(net(fixed, moving)[0], target, spacing)
        if step % max(1, steps // 10) == 0 or step == steps:
            curve.append((step, float(loss.detach())))
            print(f"[capacity] {label} step {step}: distill {curve[-1][1]:.4f} mm^2", flush=True)
        if step == steps:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    return curve


def fit_pairs(pairs: List[int], steps: int, lr: float, experiment: str = "ldr_refinedistill") -> dict:
    """:func:`fit_flow` from the experiment's teacher bundle, on each training pair's cached refined flow."""
    cfg = load_experiment(experiment)
    teacher = REPO / cfg.strategy.teacher
    folder = flows_folder(teacher, to_dict(cfg)["data"], REPO / cfg.data.cache_dir)
    train = load_split(cfg.data, "train")
    out = {"experiment": experiment, "teacher": cfg.strategy.teacher, "steps": steps, "lr": lr, "pairs": []}
    for pair in pairs:
        path = folder / f"{pair:05d}.pt"
        if not path.exists():
            raise FileNotFoundError(f"no refined flow for training pair {pair} under {folder}: run {experiment} first")
        batch = make_batch(train, [pair], "cpu", None)
        t0 = time.perf_counter()
        curve = fit_flow(load_bundle(str(teacher)).network("cpu"), batch["fixed"], batch["moving"],
                         torch.load(path, weights_only=True).float()[None], batch["spacing"], steps, lr, f"pair {pair}")
        out["pairs"].append({"pair": pair, "curve": curve, "start": curve[0][1], "end": curve[-1][1],
                             "minutes": round((time.perf_counter() - t0) / 60, 1)})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, nargs="+", default=[0, 66])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--experiment", default="ldr_refinedistill")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    res = fit_pairs(a.pairs, a.steps, a.lr, a.experiment)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps([{k: p[k] for k in ("pair", "start", "end")} for p in res["pairs"]]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
