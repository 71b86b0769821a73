"""Choose RefineConfig settings on the 6 validation pairs as a whole (medians over pairs).

Caches, per ordered pair of subjects 17, 18, 19, the affine stage and the network's flow, then runs
the refinement with each candidate setting and reports median subcortical / cortical Dice, % folding
(det J <= 0 on the 2 mm grid inside the fixed brain) and median refinement seconds (2 threads).

    python benchmarks/tune_refine.py [--configs NAME ...]
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from DeepRegLib import transforms as tr  # noqa: E402
from DeepRegLib.bundles import load_bundle  # noqa: E402
from DeepRegLib.inference import RegistrationResult, _predict  # noqa: E402
from DeepRegLib.metrics import dice_summary  # noqa: E402
from DeepRegLib.pipeline import prepare_pair  # noqa: E402
from DeepRegLib.affine import AffineConfig  # noqa: E402
from DeepRegLib.refine import RefineConfig, refine_flow  # noqa: E402
from DeepRegLib.spatial import folding_percent  # noqa: E402

SHARED = REPO.parent / "shared" / "data" / "brain-mindboggle-oasis-trt20"

CONFIGS = {
    "default": RefineConfig(),
    "w14_l1_lr.5_s20_i4": RefineConfig(ncc_window_mm=14, smooth_weight=1, learning_rate=0.5, max_steps=20, integration_steps=4),
    "w10_l1_lr.5_s20_i4": RefineConfig(ncc_window_mm=10, smooth_weight=1, learning_rate=0.5, max_steps=20, integration_steps=4),
    "w18_l1_lr.5_s20_i4": RefineConfig(ncc_window_mm=18, smooth_weight=1, learning_rate=0.5, max_steps=20, integration_steps=4),
    "w14_l.3_lr.5_s20_i4": RefineConfig(ncc_window_mm=14, smooth_weight=0.3, learning_rate=0.5, max_steps=20, integration_steps=4),
    "w14_l3_lr.5_s20_i4": RefineConfig(ncc_window_mm=14, smooth_weight=3, learning_rate=0.5, max_steps=20, integration_steps=4),
    "w14_l1_lr.25_s30_i4": RefineConfig(ncc_window_mm=14, smooth_weight=1, learning_rate=0.25, max_steps=30, integration_steps=4),
}


def load_pairs():
    bundle = load_bundle(None)
    acfg = AffineConfig.from_card(bundle.card.get("affine_stage"))
    out = []
    for fs, ms in itertools.permutations([17, 18, 19], 2):
        F, M = SHARED / f"OASIS-TRT-20-{fs}", SHARED / f"OASIS-TRT-20-{ms}"
        fixed = sitk.ReadImage(str(F / "t1weighted_brain.nii.gz"), sitk.sitkFloat32)
        moving = sitk.ReadImage(str(M / "t1weighted_brain.nii.gz"), sitk.sitkFloat32)
        prep = prepare_pair(fixed, moving, bundle.input_spec, acfg)
        flow, _ = _predict(bundle, prep.fixed, prep.moving, "cpu", False)
        out.append(dict(pair=(fs, ms), fixed=fixed, prep=prep, flow=flow,
                        fl=sitk.ReadImage(str(F / "labels.DKT31.manual+aseg.nii.gz")),
                        ml=sitk.ReadImage(str(M / "labels.DKT31.manual+aseg.nii.gz"))))
    return out


def evaluate(p, flow) -> dict:
    prep = p["prep"]
    disp = tr.taper_border(tr.flow_to_displacement(flow, prep.grid))
    res = RegistrationResult(p["fixed"], prep.affine, disp, prep.grid, "tune", "cpu")
    d = dice_summary(p["fl"], res.warp_labels(p["ml"]))
    mask = torch.from_numpy((prep.fixed > 0.05).astype(np.float32))[None, None]
    return {**d, "folding_percent": folding_percent(flow.double(), mask)}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", nargs="*", default=None)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "refine_tuning.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(2)
    pairs = load_pairs()
    results = json.loads(a.out.read_text()) if a.out.exists() else {}
    if "network" not in results:
        rows = [evaluate(p, p["flow"]) for p in pairs]
        results["network"] = {"config": None, "rows": rows}
    for name in a.configs or list(CONFIGS):
        cfg = CONFIGS[name]
        rows = []
        for p in pairs:
            t = lambda x: torch.from_numpy(x)[None, None]
            out = refine_flow(t(p["prep"].fixed), t(p["prep"].moving), p["flow"], 2.0, cfg)
            rows.append({**evaluate(p, out.flow), "seconds": out.seconds, "steps": out.steps})
        results[name] = {"config": cfg.to_dict(), "rows": rows}
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(results, indent=1))
        print(line(name, results[name]), flush=True)
    print(line("network", results["network"]))
    md = ["Refinement settings tried on the 6 validation pairs (subjects 17, 18, 19), medians over pairs, "
          "2 threads on a shared, heavily loaded 2-core machine (so seconds are inflated and only comparable "
          "within this table). Written by `benchmarks/tune_refine.py`.", "",
          "| setting | Dice subcortical | Dice cortical | % folding (2 mm grid, median / max) | seconds | steps |",
          "|---|---|---|---|---|---|"]
    for name, r in results.items():
        md.append(table_row(name, r))
    a.out.with_suffix(".md").write_text("\n".join(md) + "\n")


def table_row(name, r) -> str:
    rows = r["rows"]
    m = lambda k: statistics.median(x[k] for x in rows) if all(k in x for x in rows) else float("nan")
    cfg = r.get("config") or {}
    desc = name if not cfg else (f"window {cfg['ncc_window_mm']:g} mm, smooth {cfg['smooth_weight']:g}, lr {cfg['learning_rate']:g}, "
                                 f"max {cfg['max_steps']} steps, {cfg['integration_steps']} squarings")
    return (f"| {desc} | {m('subcortical'):.4f} | {m('cortical'):.4f} | {m('folding_percent'):.4f} / "
            f"{max(x['folding_percent'] for x in rows):.4f} | {m('seconds'):.1f} | {m('steps'):g} |")


def line(name, r) -> str:
    rows = r["rows"]
    m = lambda k: statistics.median(x[k] for x in rows) if all(k in x for x in rows) else float("nan")
    return (f"{name:>14}: sub {m('subcortical'):.4f} cort {m('cortical'):.4f} fold% {m('folding_percent'):.4f} "
            f"max fold% {max(x['folding_percent'] for x in rows):.4f} s {m('seconds'):.1f} steps {m('steps')}")


if __name__ == "__main__":
    main()
