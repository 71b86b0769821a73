"""Accuracy and speed of a prostate MR -> transrectal US model through the engine's own path.

Each case is read from its NIfTI files (physical space, any geometry) and registered by
``register()`` exactly as the CLI and the Slicer panel do: the card's affine stage (centre
alignment for the prostate task), the network, then the card's default refinement. Reported per
case and as medians over the validation cases (``train/`` 22-24, which select settings) and,
separately, the test cases (``test/`` 25-26, never used for a choice; 25 is the bundled sample):
gland Dice (label channel 0, nearest neighbour on the US grid) and mean landmark TRE in mm
(``|T(c_fixed) - c_moving|`` for the centroids of the other label channels, ``T`` fixed -> moving), for
the affine stage alone, the network alone and the default call; ``register()`` seconds (median over
``--rounds``). Writes ``OUT.json``, ``OUT.md`` and ``OUT_case<N>.png`` (checkerboards: affine stage, default call).

    python benchmarks/bench_prostate.py --model prostate_mrus --rounds 3 --out benchmarks/results/bench_prostate \\
        [--update-card]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import List

import SimpleITK as sitk
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from DeepRegLib.affine import affine_register  # noqa: E402
from DeepRegLib.bundles import load_bundle, update_card  # noqa: E402
from DeepRegLib.demos.prostate import evaluate, load_case  # noqa: E402
from DeepRegLib.inference import register  # noqa: E402
from DeepRegLib.bundles.taskspec import task_spec  # noqa: E402
from DeepRegLib.demos.visualize import overlay_panel, write_png  # noqa: E402

VALIDATION_CASES = (22, 23, 24)
TEST_CASES = (25, 26)


def run_case(model: str, case: int, rounds: int, png: Path) -> dict:
    from training.data.prostate import case_files
    fixed, moving, fch, mch = load_case(case_files(case))
    spec = task_spec(load_bundle(model))
    aff = affine_register(fixed, moving, spec.affine)
    row = {"case": case, "affine": evaluate(aff, fch, mch)}
    net = register(fixed, moving, model=model, device="cpu", refine=False)
    row["network"] = evaluate(net.transform(), fch, mch)
    seconds: List[float] = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        res = register(fixed, moving, model=model, device="cpu")
        seconds.append(time.perf_counter() - t0)
    row["default"] = evaluate(res.transform(), fch, mch)
    row["refinement"] = res.refinement
    row["register_s"] = seconds
    row["timings"] = {k: round(v, 4) for k, v in res.timings.items()}
    write_png(overlay_panel(fixed, [("affine stage", sitk.Resample(moving, fixed, aff, sitk.sitkLinear, 0.0)),
                                    ("DeepReg", res.warp_image(moving))], "checkerboard"), str(png))
    return row


def medians(rows: List[dict]) -> dict:
    out = {"cases": [r["case"] for r in rows]}
    for stage in ("affine", "network", "default"):
        out[stage] = {"gland_dice": statistics.median(r[stage]["gland_dice"] for r in rows),
                      "landmark_tre_mm": statistics.median(r[stage]["landmark_tre_mm"] for r in rows
                                                           if r[stage]["landmark_tre_mm"] is not None)}
    out["register_s_median"] = statistics.median(s for r in rows for s in r["register_s"])
    return out


def markdown(summary: dict) -> str:
    lines = [f"`{summary['model']}` on prostate MR -> US cases through `register()` ({summary['threads']} threads, "
             f"torch {summary['torch']}; {summary['rounds']} timed calls per case). Written by `{summary['command']}`.", "",
             "| case | split | affine Dice / TRE mm | network alone | default call | register() s (median) |",
             "|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        split = "validation" if r["case"] in VALIDATION_CASES else "test"
        cell = lambda s: f"{r[s]['gland_dice']:.3f} / {r[s]['landmark_tre_mm']:.2f}"
        lines.append(f"| {r['case']} | {split} | {cell('affine')} | {cell('network')} | {cell('default')} | "
                     f"{statistics.median(r['register_s']):.2f} |")
    for split in ("validation", "test"):
        m = summary.get(split)
        if m:
            cell = lambda s: f"{m[s]['gland_dice']:.3f} / {m[s]['landmark_tre_mm']:.2f}"
            lines.append(f"| median | {split} | {cell('affine')} | {cell('network')} | {cell('default')} | "
                         f"{m['register_s_median']:.2f} |")
    return "\n".join(lines) + "\n"


def write_card(model: str, summary: dict) -> None:
    update_card(load_bundle(model), {
        "accuracy": {"benchmark": "benchmarks/bench_prostate.py", "command": summary["command"],
                     "statistic": "median over cases", "what": "register()'s default call through the engine "
                     "(the card's affine stage, the network, the card's default refinement), from the NIfTI files",
                     "metrics": "gland Dice (label 0) and mean landmark TRE in mm (other labels' centroids)",
                     "validation": summary["validation"], "test": summary.get("test")},
        "speed": {"threads": summary["threads"], "register_s_median": summary["validation"]["register_s_median"],
                  "what": "register() on the validation cases, median of all timed calls"}})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="prostate_mrus")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-test", action="store_true", help="validation cases only")
    ap.add_argument("--update-card", action="store_true", help="write accuracy and speed into the model card")
    ap.add_argument("--out", type=Path, required=True, help="output prefix (OUT.json, OUT.md, OUT_case<N>.png)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    cases = VALIDATION_CASES + (() if a.no_test else TEST_CASES)
    rows = []
    for case in cases:
        rows.append(run_case(a.model, case, a.rounds, a.out.with_name(f"{a.out.name}_case{case}.png")))
        r = rows[-1]
        print(f"[bench_prostate] case {case}: gland Dice {r['affine']['gland_dice']:.3f} -> {r['network']['gland_dice']:.3f}"
              f" -> {r['default']['gland_dice']:.3f}, TRE {r['affine']['landmark_tre_mm']} -> "
              f"{r['default']['landmark_tre_mm']} mm, {statistics.median(r['register_s']):.2f} s", flush=True)
    command = "python benchmarks/bench_prostate.py " + " ".join(argv if argv is not None else sys.argv[1:])
    summary = {"model": a.model, "command": command, "threads": a.threads, "rounds": a.rounds,
               "torch": torch.__version__, "machine": platform.machine(), "rows": rows,
               "validation": medians([r for r in rows if r["case"] in VALIDATION_CASES])}
    test_rows = [r for r in rows if r["case"] in TEST_CASES]
    if test_rows:
        summary["test"] = medians(test_rows)
    a.out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    a.out.with_suffix(".md").write_text(markdown(summary))
    if a.update_card:
        write_card(a.model, summary)
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
