"""Does a network follow a known deformation of the fixed image? (the image evidence, not a prior)

For each validation pair ``(f, m)`` and a random smooth displacement ``psi`` (training/augment.py:
``random_smooth_field``), a network that registers from what it sees maps the warped pair
``(f o (id + psi), m)`` by ``compose(s(f, m), psi)``, its own flow of the original pair composed with
``psi``. Reported per network: the mean ``|psi|^2`` (mm^2, summed over components, mean over the voxels inside the warped fixed brain:
where its labels are),
the mean squared difference between its flow of the warped pair and that composition (same units)
and ``followed = 1 - error / |psi|^2``: 1 when the network follows ``psi`` fully, 0 when it ignores
it (a network that always outputs zero scores exactly 0).

    python -m training.studies.warp_probe Resources/models/ldr_brain_v1 training/runs/ldr_refinedistill_warp \
        --amplitude 2.5 --control 20 --draws 2 --out training/results/warp_probe.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch

from DeepRegLib.spatial import compose, warp

from ..augment import random_smooth_field
from .benchmark_models import load_run
from ..data import PairSet, load_split, make_batch
from ..losses import to_mm


def pair_batches(data: PairSet) -> List[Dict[str, torch.Tensor]]:
    """One unflipped batch per pair of ``data`` (``fixed``, ``moving`` ``(1, 1, D, H, W)``, ``spacing`` mm)."""
    return [make_batch(data, [i], "cpu", None) for i in range(len(data))]


def brain_mask(batch: Dict[str, torch.Tensor], psi: torch.Tensor) -> torch.Tensor | None:
    """Where the warped fixed image has a label (``fixed_labels > 0`` warped by ``psi``, nearest), as a
    ``(1, 1, D, H, W)`` bool mask; ``None`` (everywhere) without labels. The background of a skull-stripped
    brain has nothing to follow, so it is left out."""
    if "fixed_labels" not in batch:
        return None
    return warp((batch["fixed_labels"] > 0).float(), psi, mode="nearest") > 0.5


def masked_sq_mm(a: torch.Tensor, b: torch.Tensor, spacing: torch.Tensor, mask: torch.Tensor | None) -> float:
    """Squared displacement difference in mm^2, summed over components, mean over ``mask`` (all voxels if None)."""
    sq = (to_mm(a, spacing) - to_mm(b, spacing)).pow(2).sum(1, keepdim=True)
    return float(sq.mean() if mask is None else sq[mask].mean())


def probe(net: torch.nn.Module, batches: Sequence[Dict[str, torch.Tensor]], amplitude_mm: float, control_mm: float,
          draws: int = 2, seed: int = 0) -> Dict[str, float]:
    """Mean ``|psi|^2``, error and followed fraction (module docstring) over ``draws`` fields per pair."""
    rng = np.random.default_rng(seed)
    size, err = [], []
    net.eval()
    with torch.no_grad():
        for b in batches:
            own = net(b["fixed"], b["moving"])[0]
            for _ in range(draws):
                psi = random_smooth_field(rng, b["fixed"].shape[2:], b["spacing"].tolist(), amplitude_mm, control_mm)
                warped = net(warp(b["fixed"], psi), b["moving"])[0]
                inside = brain_mask(b, psi)
                size.append(masked_sq_mm(psi, torch.zeros_like(psi), b["spacing"], inside))
                err.append(masked_sq_mm(warped, compose(own, psi), b["spacing"], inside))
    s, e = float(np.mean(size)), float(np.mean(err))
    return {"psi_sq_mm2": s, "error_mm2": e, "followed": 1.0 - e / s, "pairs": len(batches), "draws": draws}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run folders (best.pt), checkpoints or bundle folders")
    ap.add_argument("--amplitude", type=float, default=2.5, help="psi's standard deviation at control points, mm")
    ap.add_argument("--control", type=float, default=20.0, help="control-point spacing, mm")
    ap.add_argument("--draws", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    res = json.loads(out.read_text()) if out.exists() else {}
    for run in a.runs:
        cfg, net, _ = load_run(Path(run))
        row = probe(net, pair_batches(load_split(cfg.data, "val")), a.amplitude, a.control, a.draws)
        res[f"{run} @ {a.amplitude:g} mm / {a.control:g} mm"] = row
        print(f"[warp_probe] {run}: followed {row['followed']:.3f} (|psi|^2 {row['psi_sq_mm2']:.2f}, "
              f"error {row['error_mm2']:.2f} mm^2)", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
