"""Speed of the default call of two models, interleaved in one run: in-process ``register()`` and the CLI.

For the issue's speed targets of the default model (in-process ``register()`` median <= 1.0 s, CLI
wall <= 3 s, CLI peak RSS <= 1.5 GB, 2 cores) measured beside a baseline model in the same script:
the machines here are noisy, so absolute seconds move from run to run while the ratio is steadier.
Each round times, for every model in turn, ``register()`` on every validation pair (its default
call, i.e. with the card's default refinement if it has one) and one ``deepreg register`` in a
fresh interpreter. Besides wall seconds it records the process CPU seconds (summed over threads),
which other processes on the machine inflate less than wall time.

    python benchmarks/bench_default.py [--models ldr_brain_v2 ldr_brain_v1] [--rounds 3]

Writes ``benchmarks/results/bench_default.{json,md}``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_register import SHARED, VALIDATION, cli_run, subject  # noqa: E402
from DeepRegLib.bundles import DEFAULT_MODEL, load_bundle, update_card  # noqa: E402
from DeepRegLib.inference import register  # noqa: E402
from DeepRegLib.bundles import card_refinement  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=[DEFAULT_MODEL, "ldr_brain_v1"],
                    help="the first is the model under test, the last the baseline")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--update-card", action="store_true",
                    help="write the first model's medians and the ratio to the last into its card (speed.default_call)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(a.threads)
    subjects = VALIDATION if SHARED.is_dir() else [17, 18]
    pairs = list(itertools.permutations(subjects, 2))
    images = {s: sitk.ReadImage(str(subject(s)["image"]), sitk.sitkFloat32) for s in subjects}
    for m in a.models:  # warm-up: weights loaded and cached, first-call costs paid
        register(images[pairs[0][0]], images[pairs[0][1]], model=m, device="cpu")
    runs = {m: {"register_s": [], "register_cpu_s": [], "refine_s": [], "cli_wall_s": [], "cli_peak_rss_mb": []}
            for m in a.models}
    load = [os.getloadavg()[0]]
    for r in range(a.rounds):
        for m in a.models:
            for fs, ms in pairs:
                w, c = time.perf_counter(), time.process_time()
                res = register(images[fs], images[ms], model=m, device="cpu")
                runs[m]["register_s"].append(time.perf_counter() - w)
                runs[m]["register_cpu_s"].append(time.process_time() - c)
                runs[m]["refine_s"].append(res.timings.get("refine", 0.0))
            fs, ms = pairs[r % len(pairs)]
            with tempfile.TemporaryDirectory() as tmp:
                cli = cli_run(subject(fs)["image"], subject(ms)["image"], Path(tmp) / "T.h5", m)
            runs[m]["cli_wall_s"].append(cli["wall_s"])
            runs[m]["cli_peak_rss_mb"].append(cli["peak_rss_mb"])
        load.append(os.getloadavg()[0])
        print(f"round {r + 1}/{a.rounds}: " + ", ".join(
            f"{m} register {statistics.median(runs[m]['register_s']):.2f} s, CLI {statistics.median(runs[m]['cli_wall_s']):.2f} s"
            for m in a.models), flush=True)
    summary = {"pairs": len(pairs), "rounds": a.rounds, "threads": a.threads, "torch": torch.__version__,
               "loadavg_1min": load, "models": {}}
    for m in a.models:
        x = runs[m]
        summary["models"][m] = {
            "default_refinement": "card" if card_refinement(load_bundle(m).card) is not None else "none",
            "register_s_median": statistics.median(x["register_s"]),
            "register_cpu_s_median": statistics.median(x["register_cpu_s"]),
            "refine_s_median": statistics.median(x["refine_s"]),
            "cli_wall_s_median": statistics.median(x["cli_wall_s"]),
            "cli_peak_rss_mb_max": max(x["cli_peak_rss_mb"]), "samples": x}
    test, base = a.models[0], a.models[-1]
    t, b = summary["models"][test], summary["models"][base]
    summary["ratios"] = {f"{test}/{base}": {k: t[k] / b[k] for k in
                                            ("register_s_median", "register_cpu_s_median", "cli_wall_s_median")}}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "bench_default.json").write_text(json.dumps(summary, indent=1))
    md = [f"Default call of each model, interleaved in one run: {len(pairs)} validation pairs x {a.rounds} rounds "
          f"in process, one CLI run per model per round; {a.threads} threads, torch {torch.__version__}; 1-minute load "
          f"average {min(load):.1f}-{max(load):.1f}. Written by `python benchmarks/bench_default.py "
          f"{' '.join(argv if argv is not None else sys.argv[1:])}`.", "",
          "| model | default refinement | register() median s | register() CPU s | of which refinement s | "
          "CLI wall median s | CLI peak RSS MB |", "|---|---|---|---|---|---|---|"]
    for m, s in summary["models"].items():
        md.append(f"| {m} | {s['default_refinement']} | {s['register_s_median']:.3f} | {s['register_cpu_s_median']:.3f} | "
                  f"{s['refine_s_median']:.3f} | {s['cli_wall_s_median']:.2f} | {s['cli_peak_rss_mb_max']:.0f} |")
    ratio = summary["ratios"][f"{test}/{base}"]
    md += ["", f"Ratios {test} / {base}: register() {ratio['register_s_median']:.2f}x (CPU {ratio['register_cpu_s_median']:.2f}x), "
           f"CLI {ratio['cli_wall_s_median']:.2f}x.", ""]
    (a.out / "bench_default.md").write_text("\n".join(md))
    print("\n".join(md))
    if a.update_card:
        bundle = load_bundle(test)
        speed = dict(bundle.card.get("speed") or {})
        speed["default_call"] = {
            "by": "python benchmarks/bench_default.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "threads": a.threads, "loadavg_1min": [min(load), max(load)],
            **{k: t[k] for k in ("register_s_median", "register_cpu_s_median", "refine_s_median", "cli_wall_s_median",
                                 "cli_peak_rss_mb_max")},
            "baseline": {"model": base, "register_s_median": b["register_s_median"],
                         "cli_wall_s_median": b["cli_wall_s_median"]},
            "ratio_register": ratio["register_s_median"],
            "what": "the default call (the card's refinement included), in process and as the CLI, interleaved with "
                    "the baseline model in one run (medians over pairs and rounds)"}
        update_card(bundle, {"speed": speed})
        print(f"[bench_default] {test}: speed.default_call written")
    return summary


if __name__ == "__main__":
    main()
