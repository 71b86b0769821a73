"""Accuracy and speed of a CT model through the engine's own path, against a known displacement.

The CT task's validation pairs (``training/data/ct.py``: 6 crops of the pelvis of the labelled
TotalSegmentator CT, each warped by its own smooth random displacement ``u``, fixed -> moving, with
10 HU noise on each image) are handed to ``register()`` as SimpleITK images in Hounsfield units with
their physical geometry, exactly as the CLI and the Slicer panel would: the card's affine stage,
the network, then the card's default refinement. Reported per pair and as medians:

* organ Dice: mean over the labels with >= 20 voxels in the fixed crop (moving labels warped by the
  transform, nearest neighbour);
* error against the known displacement: mean ``|T(x) - (x + u(x))|`` in mm over the body voxels of
  the fixed crop (> -500 HU), ``T`` the written fixed -> moving transform;
* ``register()`` seconds (median of ``--rounds`` calls).

for the affine stage alone, the network alone and the default call. Writes ``OUT.json``, ``OUT.md``
and ``OUT_pair<N>.png`` (differences to the fixed image: affine stage, default call).

    python benchmarks/bench_ct.py --model universal:ct --rounds 3 --out benchmarks/results/bench_ct [--update-card]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from DeepRegLib.bundles import load_bundle, update_card  # noqa: E402
from DeepRegLib.inference import register  # noqa: E402
from DeepRegLib.metrics import dice_scores  # noqa: E402
from DeepRegLib.demos.visualize import overlay_panel, write_png  # noqa: E402

HU_LOW, HU_HIGH = -1000.0, 1000.0  # the CT task's window (training/data/ct.py normalises to [0, 1])
BODY_HU = -500.0
MIN_VOXELS = 20


def validation_pairs() -> List[Dict[str, object]]:
    """The CT task's validation pairs as images in HU with geometry, labels, and the known flow (voxels)."""
    from training.config import DataConfig
    from training.data import cache, ct
    data = ct.load("validation", cache.REPO / DataConfig().cache_dir)
    out = []
    for i, grid in enumerate(data.grids):
        hu = lambda a: grid.image_from_array(a.astype(np.float32) * (HU_HIGH - HU_LOW) + HU_LOW)
        out.append({"pair": i, "grid": grid, "fixed": hu(data.fixed[i]), "moving": hu(data.moving[i]),
                    "fixed_labels": grid.image_from_array(data.fixed_labels[i].astype(np.int16)),
                    "moving_labels": grid.image_from_array(data.moving_labels[i].astype(np.int16)),
                    "flow": data.flows[i].astype(np.float32)})
    return out


def evaluate(transform: sitk.Transform, p: Dict[str, object]) -> Dict[str, float]:
    """Organ Dice and the mean error (mm) against the known displacement over the fixed body."""
    fixed_labels: sitk.Image = p["fixed_labels"]
    warped = sitk.Resample(p["moving_labels"], fixed_labels, transform, sitk.sitkNearestNeighbor, 0,
                           sitk.sitkInt16)
    fl = sitk.GetArrayFromImage(fixed_labels)
    labels = [int(v) for v, n in zip(*np.unique(fl, return_counts=True)) if v != 0 and n >= MIN_VOXELS]
    scores = dice_scores(fl, sitk.GetArrayFromImage(warped), labels)
    vals = [v for v in scores.values() if np.isfinite(v)]
    grid = p["grid"]
    disp = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, grid.size, grid.origin,
                                             grid.spacing, (1, 0, 0, 0, 1, 0, 0, 0, 1))
    est = sitk.GetArrayFromImage(disp)  # (z, y, x, 3) LPS mm, components (x, y, z)
    known = np.moveaxis(p["flow"], 0, -1)[..., ::-1] * np.asarray(grid.spacing)  # voxels (z, y, x) -> mm (x, y, z)
    err = np.linalg.norm(est - known, axis=-1)
    body = sitk.GetArrayFromImage(p["fixed"]) > BODY_HU
    return {"organ_dice": round(float(np.mean(vals)), 4) if vals else float("nan"),
            "error_mm": round(float(err[body].mean() if body.any() else err.mean()), 3), "labels": len(labels)}


def run_pair(model: str, p: Dict[str, object], rounds: int, png: Path) -> dict:
    fixed, moving = p["fixed"], p["moving"]
    aff = register(fixed, moving, model=model, device="cpu", mode="affine")
    row = {"pair": p["pair"], "affine": evaluate(aff.transform(), p)}
    net = register(fixed, moving, model=model, device="cpu", refine=False)
    row["network"] = evaluate(net.transform(), p)
    seconds: List[float] = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        res = register(fixed, moving, model=model, device="cpu")
        seconds.append(time.perf_counter() - t0)
    row["default"] = evaluate(res.transform(), p)
    row["refinement"] = res.refinement
    row["register_s"] = seconds
    row["timings"] = {k: round(v, 4) for k, v in res.timings.items()}
    write_png(overlay_panel(fixed, [("affine stage", aff.warp_image(moving)), ("DeepReg", res.warp_image(moving))],
                            "difference"), str(png))
    return row


def medians(rows: List[dict]) -> dict:
    out: dict = {"pairs": [r["pair"] for r in rows]}
    for stage in ("affine", "network", "default"):
        out[stage] = {k: statistics.median(r[stage][k] for r in rows) for k in ("organ_dice", "error_mm")}
    out["register_s_median"] = statistics.median(s for r in rows for s in r["register_s"])
    return out


def markdown(summary: dict) -> str:
    lines = [f"`{summary['model']}` on the CT task's validation pairs through `register()` ({summary['threads']} "
             f"threads, torch {summary['torch']}; {summary['rounds']} timed calls per pair). Written by "
             f"`{summary['command']}`.", "",
             "| pair | affine: organ Dice / error mm | network alone | default call | register() s (median) |",
             "|---|---|---|---|---|"]
    cell = lambda d: f"{d['organ_dice']:.3f} / {d['error_mm']:.2f}"
    for r in summary["rows"]:
        lines.append(f"| {r['pair']} | {cell(r['affine'])} | {cell(r['network'])} | {cell(r['default'])} | "
                     f"{statistics.median(r['register_s']):.2f} |")
    m = summary["validation"]
    lines.append(f"| median | {cell(m['affine'])} | {cell(m['network'])} | {cell(m['default'])} | "
                 f"{m['register_s_median']:.2f} |")
    return "\n".join(lines) + "\n"


def write_card(model: str, summary: dict) -> None:
    update_card(load_bundle(model), {
        "accuracy": {"benchmark": "benchmarks/bench_ct.py", "command": summary["command"],
                     "statistic": "median over the CT task's 6 validation pairs",
                     "what": "register()'s default call through the engine (the card's affine stage, the network, "
                             "the card's default refinement), images in HU with their geometry",
                     "metrics": "organ Dice (labels with >= 20 voxels in the fixed crop) and the mean error (mm) "
                                "against the known displacement over the fixed body (> -500 HU)",
                     "validation": summary["validation"]},
        "speed": {"threads": summary["threads"], "register_s_median": summary["validation"]["register_s_median"],
                  "what": "register() on the validation pairs, median of all timed calls"}})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="universal:ct")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--update-card", action="store_true", help="write accuracy and speed into the model card")
    ap.add_argument("--out", type=Path, required=True, help="output prefix (OUT.json, OUT.md, OUT_pair<N>.png)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(a.threads)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in validation_pairs():
        rows.append(run_pair(a.model, p, a.rounds, a.out.with_name(f"{a.out.name}_pair{p['pair']}.png")))
        r = rows[-1]
        print(f"[bench_ct] pair {r['pair']}: affine {r['affine']}, network {r['network']}, default {r['default']}, "
              f"{statistics.median(r['register_s']):.2f} s", flush=True)
    summary = {"model": a.model, "threads": a.threads, "rounds": a.rounds, "torch": torch.__version__,
               "platform": platform.platform(), "command": "python " + " ".join(sys.argv),
               "rows": rows, "validation": medians(rows)}
    a.out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    a.out.with_suffix(".md").write_text(markdown(summary))
    print(markdown(summary))
    if a.update_card:
        write_card(a.model, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
