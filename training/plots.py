"""Plots written next to each run: loss terms and validation Dice against step."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_csv(path: Path) -> List[Dict[str, float]]:
    if not path.exists():
        return []
    with path.open() as fh:
        out = []
        for row in csv.DictReader(fh):
            out.append({k: float(v) for k, v in row.items() if v not in ("", None)})
        return out


def plot_run(run_dir: Path) -> None:
    """``loss.png`` (every logged term) and ``val_dice.png`` (grid Dice and folding) in ``run_dir``."""
    run_dir = Path(run_dir)
    log = read_csv(run_dir / "log.csv")
    if log:
        keys = [k for k in log[0] if k not in ("step", "sec_per_step", "lr")]
        fig, ax = plt.subplots(figsize=(7, 4))
        for k in keys:
            ax.plot([r["step"] for r in log if k in r], [r[k] for r in log if k in r], label=k)
        ax.set_xlabel("step")
        ax.set_ylabel("loss term")
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.legend(fontsize=7)
        ax.set_title(run_dir.name)
        fig.tight_layout()
        fig.savefig(run_dir / "loss.png", dpi=90)
        plt.close(fig)
    val = read_csv(run_dir / "val.csv")
    if val:
        plot_validation({run_dir.name: val}, run_dir / "val_dice.png")


def plot_validation(runs: Dict[str, Sequence[Dict[str, float]]], path: Path,
                    keys: Sequence[str] = ("dice_subcortical", "dice_cortical")) -> None:
    """Validation Dice against step, one line per run and key."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, rows in runs.items():
        for k in keys:
            pts = [(r["step"], r[k]) for r in rows if k in r]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=f"{name} {k.replace('dice_', '')}")
    ax.set_xlabel("step")
    ax.set_ylabel("validation Dice (network grid)" if all("dice" in k for k in keys) else "validation: " + ", ".join(keys))
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> None:
    """``python -m training.plots RUN... --out PNG [--keys dice ...]``: runs' validation curves on one plot."""
    import argparse
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (each with its val.csv)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--keys", nargs="+", default=["dice"], help="val.csv columns to plot")
    a = ap.parse_args(argv)
    missing = [str(r) for r in a.runs if not (r / "val.csv").exists()]
    if missing:
        raise SystemExit(f"no val.csv in: {', '.join(missing)}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    plot_validation({r.name: read_csv(r / "val.csv") for r in a.runs}, a.out, a.keys)
    print(a.out)


if __name__ == "__main__":
    main()
