"""Summary of a batch: ``summary.csv`` (one row per pair), ``summary.json`` (aggregates, failures)
and ``summary_dice_time.png`` (per-pair Dice against registration time).

Aggregates are over the pairs whose outputs are complete (``ok`` in this run or ``skipped`` as
done before); Dice is a mean over labels, folding in % of voxels with det J <= 0, times in seconds.
"""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..safeio import atomic_text, atomic_write

CSV_NAME, JSON_NAME, PNG_NAME = "summary.csv", "summary.json", "summary_dice_time.png"
FIRST_COLUMNS = ["id", "status", "trusted", "message", "quality_flags", "fixed", "moving", "moving_labels",
                 "fixed_labels", "dice_all", "dice_subcortical", "dice_cortical", "folding_percent", "sdlogj",
                 "similarity_before", "similarity_after", "max_displacement_mm",
                 "time_s", "register_s", "attempt", "worker", "worker_peak_rss_mb", "model", "device", "refined",
                 "transform", "warped", "warped_labels", "finished_at"]
METRICS = ["dice_all", "dice_subcortical", "dice_cortical", "folding_percent", "sdlogj", "similarity_after",
           "max_displacement_mm", "time_s", "register_s", "worker_peak_rss_mb"]


def _row(rec: dict) -> dict:
    row = {k: rec.get(k) for k in FIRST_COLUMNS}
    for stage, sec in (rec.get("timings") or {}).items():
        row[f"time_{stage}_s"] = sec
    return {k: ("" if v is None else v) for k, v in row.items()}


def write_csv(records: Sequence[dict], path: Path) -> None:
    rows = [_row(r) for r in records]
    columns = list(FIRST_COLUMNS)
    for r in rows:
        columns += [k for k in r if k not in columns]
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=columns, restval="")
            w.writeheader()
            w.writerows(rows)
    atomic_write(path, write)  # a unique temporary name: two runs writing at once do not collide


def describe(values: Sequence[float]) -> Optional[Dict[str, float]]:
    """n, median, quartiles, IQR, min, max, mean and standard deviation of the finite values."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return None
    q25, med, q75 = np.percentile(v, [25, 50, 75])
    return {"n": int(v.size), "median": float(med), "q25": float(q25), "q75": float(q75),
            "iqr": float(q75 - q25), "min": float(v.min()), "max": float(v.max()),
            "mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0}


def aggregates(records: Sequence[dict], run: dict) -> dict:
    done = [r for r in records if r["status"] in ("ok", "skipped")]
    counts = {s: sum(r["status"] == s for r in records) for s in ("ok", "failed", "skipped")}
    return {"counts": {"pairs": len(records), **counts},
            "metrics": {m: describe([r.get(m) for r in done]) for m in METRICS},
            "failures": [{"id": r["id"], "fixed": r["fixed"], "moving": r["moving"], "message": r["message"]}
                         for r in records if r["status"] == "failed"],
            # completed pairs whose quality verdict (DeepRegLib.quality) lists reasons not to trust them
            "untrusted": [{"id": r["id"], "flags": r.get("quality_flags", "")}
                          for r in done if r.get("trusted") is False],
            "run": run}


def plot_dice_time(records: Sequence[dict], path: Path) -> Optional[str]:
    """Scatter of per-pair Dice (mean over labels) against registration seconds; None without Dice/matplotlib."""
    pts = [(r.get("register_s"), r.get("dice_all"), r["status"]) for r in records
           if r["status"] in ("ok", "skipped") and r.get("dice_all") is not None and r.get("register_s") is not None]
    if not pts:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    for status, marker in (("ok", "o"), ("skipped", "s")):
        sel = [(t, d) for t, d, s in pts if s == status]
        if sel:
            ax.scatter(*zip(*sel), marker=marker, alpha=0.8,
                       label=f"{status} ({len(sel)})" if status == "ok" else f"done earlier ({len(sel)})")
    ax.set_xlabel("registration time per pair (s)")
    ax.set_ylabel("Dice (mean over labels)")
    n_failed = sum(r["status"] == "failed" for r in records)
    ax.set_title(f"deepreg batch: {len(pts)} pairs with Dice" + (f", {n_failed} failed (not shown)" if n_failed else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp))
    finally:
        plt.close(fig)
    return str(path)


def write_summary(records: Sequence[dict], output_dir: Path, run: dict) -> Dict[str, object]:
    """Write the CSV, JSON and (when there is Dice) PNG; return the aggregates and the files written."""
    output_dir = Path(output_dir)
    write_csv(records, output_dir / CSV_NAME)
    summary = aggregates(records, run)
    png = plot_dice_time(records, output_dir / PNG_NAME)
    summary["files"] = {"csv": CSV_NAME, "json": JSON_NAME, "png": PNG_NAME if png else None}
    atomic_text(output_dir / JSON_NAME, json.dumps(summary, indent=2))
    return summary


def read_csv(path: str | os.PathLike) -> List[dict]:
    """Rows of a ``summary.csv`` as dictionaries of strings (for tests and tools)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
