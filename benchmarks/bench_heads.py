"""Do the brain models keep working on whole heads that are not skull-stripped?

There are no whole-head MR images with manual labels here, so heads are rendered from the four SynthSeg
whole-head label maps that no model was trained on (17-20, the synthhead task's validation maps; 256^3 at
1 mm with their own direction matrices) in a T1-like contrast shared by both heads of a pair
(``training.data.synthhead.t1_like_means``: white matter bright, grey matter darker, CSF dark, each
non-brain tissue one fixed intensity), with random per-label noise, blur, bias field and gamma per image.
Each of the 12 ordered pairs is registered by ``register()`` from these images, as a user's files would
be, in two conditions:

* ``head``: the whole head, skull, scalp, eyes and neck included;
* ``stripped``: the same image with every non-brain voxel set to 0 (what the brain models were trained on).

Reported per condition, model and call (the affine stage alone, then each model's default call): mean
Dice over the brain labels (< 100) and over the subcortical ones (thalamus, caudate, putamen, pallidum,
hippocampus, amygdala, accumbens), the moving label map resampled (nearest) onto the fixed map's 1 mm
grid through the result's transform; and the ``register()`` seconds. Writes ``OUT.json``, ``OUT.md`` and
``OUT.png`` (checkerboards of the first pair's head: affine stage, default model).

    python benchmarks/bench_heads.py --models ldr_brain_v2 ldr_brain_v1 --out benchmarks/results/bench_heads
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import SimpleITK as sitk
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from DeepRegLib import DEFAULT_MODEL  # noqa: E402
from DeepRegLib.inference import register  # noqa: E402
from DeepRegLib.metrics import dice_scores  # noqa: E402
from DeepRegLib.demos.visualize import overlay_panel, write_png  # noqa: E402
from training.data.synthhead import BRAIN_LABEL_LIMIT, VALIDATION_MAPS, map_path, render, t1_like_means  # noqa: E402

SUBCORTICAL = (10, 11, 12, 13, 17, 18, 26, 49, 50, 51, 52, 53, 54, 58)


def rendered_heads(maps, seed: int) -> Dict[int, dict]:
    """Per map: its label image, the T1-like head and the same head with non-brain voxels zeroed."""
    out = {}
    for n in maps:
        lab = sitk.ReadImage(str(map_path(n)), sitk.sitkInt16)
        arr = sitk.GetArrayFromImage(lab)
        spacing = float(min(lab.GetSpacing()))
        img = render(arr, np.random.default_rng([seed, n]), spacing, t1_like_means(np.unique(arr)))
        brain = (arr > 0) & (arr < BRAIN_LABEL_LIMIT)

        def image(a):
            im = sitk.GetImageFromArray(a.astype(np.float32))
            im.CopyInformation(lab)
            return im
        out[n] = {"labels": lab, "head": image(img), "stripped": image(np.where(brain, img, 0.0))}
    return out


def dice(fixed_labels: sitk.Image, moving_labels: sitk.Image, transform: sitk.Transform) -> Dict[str, float]:
    fl = sitk.GetArrayViewFromImage(fixed_labels)
    wl = sitk.GetArrayFromImage(sitk.Resample(moving_labels, fixed_labels, transform, sitk.sitkNearestNeighbor, 0))
    brain = [v for v in np.unique(fl) if 0 < v < BRAIN_LABEL_LIMIT]
    scores = dice_scores(fl, wl, brain)
    vals = lambda keys: [scores[k] for k in keys if k in scores and np.isfinite(scores[k])]
    return {"brain": float(np.mean(vals(brain))), "subcortical": float(np.mean(vals(SUBCORTICAL)))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=[DEFAULT_MODEL])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True, help="output prefix (OUT.json, OUT.md, OUT.png)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    heads = rendered_heads(VALIDATION_MAPS, a.seed)
    pairs = [(f, m) for f in VALIDATION_MAPS for m in VALIDATION_MAPS if f != m]
    rows: List[dict] = []
    for fn, mn in pairs:
        for cond in ("head", "stripped"):
            fixed, moving = heads[fn][cond], heads[mn][cond]
            aff = register(fixed, moving, model=a.models[0], device="cpu", mode="affine")
            row = {"fixed": fn, "moving": mn, "condition": cond,
                   "affine": dice(heads[fn]["labels"], heads[mn]["labels"], aff.transform())}
            for model in a.models:
                t0 = time.perf_counter()
                res = register(fixed, moving, model=model, device="cpu")
                row[model] = {**dice(heads[fn]["labels"], heads[mn]["labels"], res.transform()),
                              "seconds": time.perf_counter() - t0}
                if (fn, mn) == pairs[0] and cond == "head" and model == a.models[0]:
                    write_png(overlay_panel(fixed, [("affine", aff.warp_image(moving)), (model, res.warp_image(moving))],
                                            "checkerboard"), str(a.out.with_suffix(".png")))
            rows.append(row)
            print(f"[bench_heads] {fn}<-{mn} {cond}: affine {row['affine']['brain']:.3f} "
                  + " ".join(f"{m} {row[m]['brain']:.3f}" for m in a.models), flush=True)
    summary = {"command": "python benchmarks/bench_heads.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "models": a.models, "maps": VALIDATION_MAPS, "pairs": len(pairs), "torch": torch.__version__,
               "threads": a.threads, "rows": rows, "medians": {}}
    for cond in ("head", "stripped"):
        sel = [r for r in rows if r["condition"] == cond]
        summary["medians"][cond] = {k: {m: statistics.median(r[k][m] for r in sel) for m in ("brain", "subcortical")}
                                    for k in ["affine", *a.models]}
        for m in a.models:
            summary["medians"][cond][m]["seconds"] = statistics.median(r[m]["seconds"] for r in sel)
            summary["medians"][cond][m]["pairs_above_affine"] = sum(r[m]["brain"] > r["affine"]["brain"] for r in sel)
    a.out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [f"T1-like synthetic heads from SynthSeg maps {VALIDATION_MAPS} (held out of all training), "
             f"{len(pairs)} ordered pairs, through `register()`; medians over pairs. Written by `{summary['command']}`.", "",
             "| condition | call | brain Dice | subcortical Dice | pairs above the affine stage | register() s |",
             "|---|---|---|---|---|---|"]
    for cond, med in summary["medians"].items():
        lines.append(f"| {cond} | affine stage | {med['affine']['brain']:.3f} | {med['affine']['subcortical']:.3f} | | |")
        for m in a.models:
            lines.append(f"| {cond} | {m} | {med[m]['brain']:.3f} | {med[m]['subcortical']:.3f} | "
                         f"{med[m]['pairs_above_affine']} / {len(pairs)} | {med[m]['seconds']:.2f} |")
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
