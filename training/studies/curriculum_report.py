"""The curriculum ablation's table and plots (issue 9), from its run folders and a full-resolution benchmark.

Runs are the folders ``<runs>/curriculum_<arm>_s<seed>`` made by ``python -m training run
curriculum_<arm> --set loop.seed=<seed> --run-dir ...``; full-resolution rows come from
``python -m training.studies.benchmark_models <run>/last.pt ... --no-hd95 --out <bench>`` (the end of the
budget, not a checkpoint selected on the validation pairs). Writes, into ``--out``:

* ``curricula.md``: per arm, mean +- sd over seeds of the grid Dice at the last step, the
  full-resolution Dice (subcortical, cortical), % folding (1 mm, inside the brain), SDlogJ, the
  training wall time and the median seconds per step (``log.csv``); and the paired difference to ``none`` (same seed = same data order and init);
* ``curricula_val.png``: validation Dice against step, all arms overlaid (mean over seeds, min-max band);
* ``curriculum_<arm>.png``: one per arm, one line per seed, ``none``'s mean for reference;
* ``curricula.json``: everything in the table, per run.

    python -m training.studies.curriculum_report --bench training/results/curricula.json --out training/results/curricula
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..experiments._curricula import ARMS  # noqa: E402
from ..plots import read_csv  # noqa: E402

RUN_NAME = re.compile(r"^curriculum_(?P<arm>[a-z]+)_s(?P<seed>\d+)$")
ARM_ORDER = ARMS  # the ablation's arms, in table order


def find_runs(runs_dir: Path) -> Dict[str, Dict[int, Path]]:
    """``{arm: {seed: run folder}}`` of the curriculum runs under ``runs_dir`` that have a ``val.csv``."""
    out: Dict[str, Dict[int, Path]] = {}
    for d in sorted(Path(runs_dir).iterdir()):
        m = RUN_NAME.match(d.name)
        if m and (d / "val.csv").exists():
            out.setdefault(m["arm"], {})[int(m["seed"])] = d
    return dict(sorted(out.items(), key=lambda kv: ARM_ORDER.index(kv[0]) if kv[0] in ARM_ORDER else 99))


def mean_sd(values: Sequence[float]) -> str:
    """``mean +- sd`` (sd over seeds; ``mean`` alone for one value; ``-`` for none; the value for equal integers)."""
    v = [x for x in values if x is not None]
    if not v:
        return "-"
    if len(set(v)) == 1 and float(v[0]).is_integer():
        return f"{int(v[0])}"
    if len(v) == 1:
        return f"{v[0]:.4f}"
    return f"{statistics.mean(v):.4f} ± {statistics.stdev(v):.4f}"


def run_summary(run: Path, bench: Dict[str, dict], steps: Optional[int] = None) -> Dict[str, Optional[float]]:
    """Grid validation Dice at the last validated step (``steps`` if given), best grid Dice, and the
    full-resolution row of ``run/last`` in ``bench`` (None where missing)."""
    val = read_csv(run / "val.csv")
    last = [r for r in val if steps is None or r["step"] <= steps][-1]
    sec = [r["sec_per_step"] for r in read_csv(run / "log.csv") if "sec_per_step" in r]
    row = bench.get(f"{run.name}/last")
    out = {"step": last["step"], "grid_dice": last["dice"], "grid_subcortical": last["dice_subcortical"],
           "grid_cortical": last["dice_cortical"], "grid_best": max(r["dice"] for r in val),
           "train_minutes": last.get("train_minutes"), "sec_per_step": statistics.median(sec) if sec else None}
    for k in ("dice_subcortical", "dice_cortical", "folding_percent", "sdlogj"):
        out[k] = None if row is None else row[k]
    return out


def paired_difference(summ: Dict[str, Dict[int, dict]], arm: str, key: str) -> Optional[str]:
    """Mean +- sd of ``arm - none`` over the seeds both have, and how many seeds were above ``none``."""
    if arm == "none" or "none" not in summ:
        return None
    d = [summ[arm][s][key] - summ["none"][s][key] for s in summ[arm]
         if s in summ["none"] and summ[arm][s][key] is not None and summ["none"][s][key] is not None]
    if not d:
        return None
    above = sum(x > 0 for x in d)
    sd = f" ± {statistics.stdev(d):.4f}" if len(d) > 1 else ""
    return f"{statistics.mean(d):+.4f}{sd} ({above}/{len(d)} seeds above)"


def plot_arms(runs: Dict[str, Dict[int, Path]], out: Path, key: str = "dice") -> List[Path]:
    """The overlay of all arms (mean over seeds, min-max band) and one plot per arm (a line per seed)."""
    curves = {arm: {s: read_csv(p / "val.csv") for s, p in seeds.items()} for arm, seeds in runs.items()}

    def mean_curve(per_seed):
        steps = sorted(set.intersection(*[{r["step"] for r in v} for v in per_seed.values()]))
        vals = [[next(r[key] for r in v if r["step"] == st) for v in per_seed.values()] for st in steps]
        return steps, [statistics.mean(x) for x in vals], [min(x) for x in vals], [max(x) for x in vals]

    written = []
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for arm, per_seed in curves.items():
        st, mu, lo, hi = mean_curve(per_seed)
        line, = ax.plot(st, mu, marker=".", label=f"{arm} (n={len(per_seed)})")
        ax.fill_between(st, lo, hi, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"validation {key.replace('_', ' ')} (2 mm grid)")
    ax.set_title("curriculum ablation: mean over seeds, min-max band")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(out / "curricula_val.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)
    ref = mean_curve(curves["none"])[:2] if "none" in curves else None
    for arm, per_seed in curves.items():
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for s, rows in sorted(per_seed.items()):
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], marker=".", label=f"seed {s}")
        if ref and arm != "none":
            ax.plot(*ref, color="k", ls="--", label="none (mean)")
        ax.set_xlabel("training step")
        ax.set_ylabel(f"validation {key.replace('_', ' ')} (2 mm grid)")
        ax.set_title(f"curriculum: {arm}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(out / f"curriculum_{arm}.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written


def report(runs_dir: Path, bench_path: Optional[Path], out: Path, steps: Optional[int] = None,
           seeds: Optional[Sequence[int]] = None) -> str:
    """Write the table, JSON and plots into ``out`` (only ``seeds`` if given); return the table (markdown)."""
    out.mkdir(parents=True, exist_ok=True)
    runs = {arm: {s: p for s, p in per.items() if seeds is None or s in seeds} for arm, per in find_runs(runs_dir).items()}
    runs = {arm: per for arm, per in runs.items() if per}
    if not runs:
        raise FileNotFoundError(f"no curriculum_<arm>_s<seed> runs with a val.csv under {runs_dir}")
    bench = json.loads(bench_path.read_text()) if bench_path and bench_path.exists() else {}
    summ = {arm: {s: run_summary(p, bench, steps) for s, p in seeds.items()} for arm, seeds in runs.items()}
    cols = [("step", "step"), ("grid_dice", "grid Dice (last step)"), ("dice_subcortical", "Dice subcortical (1 mm)"),
            ("dice_cortical", "Dice cortical (1 mm)"), ("folding_percent", "% folding 1 mm"),
            ("sdlogj", "SDlogJ"), ("train_minutes", "train min"), ("sec_per_step", "s / step (median)")]
    lines = ["| curriculum | seeds | " + " | ".join(c[1] for c in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for arm, per in summ.items():
        lines.append(f"| {arm} | {','.join(map(str, sorted(per)))} | "
                     + " | ".join(mean_sd([r[k] for r in per.values()]) for k, _ in cols) + " |")
    lines += ["", "| curriculum | paired difference to none: grid Dice | Dice subcortical (1 mm) | Dice cortical (1 mm) |",
              "|---|---|---|---|"]
    for arm in summ:
        if arm != "none":
            lines.append(f"| {arm} | " + " | ".join(paired_difference(summ, arm, k) or "-"
                                                     for k in ("grid_dice", "dice_subcortical", "dice_cortical")) + " |")
    table = "\n".join(lines) + "\n"
    (out / "curricula.md").write_text(table)
    (out / "curricula.json").write_text(json.dumps({a: {str(s): r for s, r in p.items()} for a, p in summ.items()},
                                                   indent=1) + "\n")
    plot_arms(runs, out)
    return table


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=Path("training/runs"))
    p.add_argument("--bench", type=Path, default=None, help="benchmark_models JSON with rows <run>/last")
    p.add_argument("--steps", type=int, default=None, help="compare at this step (default: each run's last)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="only these seeds (default: all found)")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    print(report(a.runs, a.bench, a.out, a.steps, a.seeds))


if __name__ == "__main__":
    main()
