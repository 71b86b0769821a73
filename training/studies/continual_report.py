"""Compare continual-learning runs: accuracy matrices, ACC / BWT table and a plot.

    python -m training.studies.continual_report training/runs/cl_sequential training/runs/cl_joint \\
        training/runs/cl_replay training/runs/cl_sam training/runs/cl_samcl --out training/runs/cl_report

Reads each run's ``continual.json`` (written by :class:`training.continual.TaskBoundary`)
and writes ``<out>/report.md`` (one accuracy matrix per method, then a table of the final
per-task accuracy, average accuracy and backward transfer) and ``<out>/accuracy.png``: one
panel per task (plus the average), accuracy after each task of the sequence, one line
per method.

Every matrix also gets the affine stage's own row (a zero flow: what a network must beat), and
runs that start from trained weights (``model.init``, e.g. the bundled brain model) a "start"
row: those weights evaluated on every task's validation pairs (each reference row is computed
once and kept in ``<out>/start.json``). With it the table adds, per method, the mean gain of
each task over the start right after training it (``LEARN = mean_j R[j][j] - S[j]``) and the
forward transfer (``FWT = mean_{j>0} R[j-1][j] - S[j]``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..continual import accuracy_summary  # noqa: E402
from ..evaluate import ZeroFlow, evaluate_pairs  # noqa: E402


def _config(run: Dict):
    from ..config import from_dict
    return from_dict(json.loads((Path(run["run"]) / "config.json").read_text()))


def reference_rows(run: Dict, cache: Optional[Path] = None) -> Dict[str, Optional[List[float]]]:
    """Every task's validation accuracy of the affine stage alone (``'affine'``: a zero flow, what any
    network must beat) and of the weights ``run`` started from (``'start'``: its ``model.init``; None
    for a run from scratch). ``cache``: a JSON file of rows already computed; missing rows are added
    to it, the tasks' data loaded once for all of them."""
    from ..networks import load_trained
    cfg = _config(run)
    tasks = ", ".join(cfg.continual.tasks)
    nets = {"affine": (f"affine stage only | {tasks}", ZeroFlow)}
    if cfg.model.init:
        nets["start"] = (f"{cfg.model.init} | {tasks}", lambda: load_trained(cfg.model.init))
    known = json.loads(cache.read_text()) if cache is not None and cache.exists() else {}
    missing = [(key, make) for key, make in nets.values() if key not in known]
    if missing:
        from ..continual import Continual
        data = Continual(cfg, verbose=False)
        for key, make in missing:
            net = make().eval()
            known[key] = [evaluate_pairs(net, val, info.metric)["accuracy"] for val, info in zip(data.val, data.infos)]
        if cache is not None:
            cache.write_text(json.dumps(known, indent=1) + "\n")
    return {"affine": known[nets["affine"][0]], "start": known[nets["start"][0]] if "start" in nets else None}


def start_row(run: Dict, cache: Optional[Path] = None) -> Optional[List[float]]:
    """:func:`reference_rows`' ``'start'`` row: the initial weights' accuracy (None from scratch)."""
    return reference_rows(run, cache)["start"]


def affine_row(run: Dict, cache: Optional[Path] = None) -> List[float]:
    """:func:`reference_rows`' ``'affine'`` row: the affine stage's accuracy (a zero flow)."""
    return reference_rows(run, cache)["affine"]


def transfer(matrix: List[List[float]], start: List[float]) -> Dict[str, float]:
    """``LEARN = mean_j R[j][j] - S[j]`` and ``FWT = mean_{j>0} R[j-1][j] - S[j]`` over the rows present."""
    rows = len(matrix)
    learn = [matrix[j][j] - start[j] for j in range(min(rows, len(start)))]
    fwt = [matrix[j - 1][j] - start[j] for j in range(1, min(rows + 1, len(start)))]
    return {"learn": sum(learn) / len(learn), "forward_transfer": sum(fwt) / len(fwt) if fwt else 0.0}


def read_run(run: Path) -> Dict:
    path = Path(run) / "continual.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {run} a continual run (continual.tasks set)?")
    doc = json.loads(path.read_text())
    doc["run"] = str(run)
    doc["label"] = Path(run).name  # the run folder: unique where one experiment ran with several --set values
    return doc


def markdown(runs: List[Dict]) -> str:
    lines = []
    for r in runs:
        lines += [f"### {r['label']} (strategy {r['strategy']}, {r['mode']}, buffer {r['buffer_size']})", "",
                  "| after task \\ accuracy on | " + " | ".join(r["tasks"]) + " |",
                  "|---|" + "---|" * len(r["tasks"])]
        if r.get("affine"):
            lines.append("| affine stage only (zero flow) | " + " | ".join(f"{a:.3f}" for a in r["affine"]) + " |")
        if r.get("start"):
            lines.append("| start (initial weights) | " + " | ".join(f"{a:.3f}" for a in r["start"]) + " |")
        for i, row in enumerate(r["matrix"]):
            name = r["tasks"][i] if i < len(r["tasks"]) else f"step {r['steps'][i]}"
            lines.append(f"| {name} (step {r['steps'][i]}) | " + " | ".join(f"{a:.3f}" for a in row) + " |")
        lines.append("")
    tasks = runs[0]["tasks"]
    with_start = all(r.get("start") for r in runs)
    extra = " LEARN | FWT |" if with_start else ""
    lines += ["| method | " + " | ".join(tasks) + f" | ACC | BWT |{extra} TRE (last row) |",
              "|---|" + "---|" * (len(tasks) + 3 + 2 * with_start)]
    for r in runs:
        s = accuracy_summary(r["matrix"])
        tre = {k.split("/")[0]: v for k, v in r["details"][-1].items() if k.endswith("/tre_mm")}
        tr = transfer(r["matrix"], r["start"]) if with_start else {}
        lines.append(f"| {r['label']} | " + " | ".join(f"{a:.3f}" for a in r["matrix"][-1])
                     + f" | {s['average_accuracy']:.3f} | {s['backward_transfer']:+.3f} | "
                     + (f"{tr['learn']:+.3f} | {tr['forward_transfer']:+.3f} | " if with_start else "")
                     + ", ".join(f"{t} {v:.2f} mm" for t, v in tre.items()) + " |")
    return "\n".join(lines) + "\n"


def plot(runs: List[Dict], path: Path) -> None:
    tasks = runs[0]["tasks"]
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(3.2 * (len(tasks) + 1), 3.2), sharey=True)
    for r in runs:
        x = list(range(1, len(r["matrix"]) + 1))
        x0, rows = (([0] + x, [r["start"]] + list(r["matrix"])) if r.get("start") else (x, r["matrix"]))
        for j, t in enumerate(tasks):
            axes[j].plot(x0, [row[j] for row in rows], marker="o", label=r["label"])
        axes[-1].plot(x, [accuracy_summary(r["matrix"][:i])["average_accuracy"] for i in x], marker="o",
                      label=r["label"])
    for j, t in enumerate(tasks):
        axes[j].set_title(f"{t} ({runs[0]['metrics'][j]})", fontsize=9)
        if runs[0].get("affine"):
            axes[j].axhline(runs[0]["affine"][j], color="grey", ls="--", lw=1, label="affine stage only")
    axes[-1].set_title("average over tasks seen", fontsize=9)
    for ax in axes:
        ax.set_xlabel("after task # (0: start)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (Dice)")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.studies.continual_report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    runs = [read_run(r) for r in a.runs]
    if len({tuple(r["tasks"]) for r in runs}) > 1:
        raise SystemExit("runs have different task sequences; compare like with like")
    a.out.mkdir(parents=True, exist_ok=True)
    for r in runs:
        r.update(reference_rows(r, a.out / "start.json"))
    (a.out / "report.md").write_text(markdown(runs))
    plot(runs, a.out / "accuracy.png")
    print((a.out / "report.md").read_text())
    print(f"plot: {a.out / 'accuracy.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
