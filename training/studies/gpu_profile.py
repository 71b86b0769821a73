"""The ``gpu`` profile (``training/profiles.py``) run for real: each paper-scale experiment's training step, timed.

The brains do not travel to a lent GPU machine (its working tree is limited to 64 MiB; the data live
in ``../shared/data``), so each experiment runs with its data swapped for synthetic pairs on the same
network grid (``data.task = 'synthetic'``, the experiment's own ``data.size`` and spacing). Everything
else is the profile's own: network, strategy, losses, optimisers and their gradient scalers, batch 4,
CUDA with fp16 autocast. Teachers are the rows before them (:data:`CHAIN`): the RCN teacher's run stands
in for the ALDK student's teacher, the FST pre-training run for CRD stage 2's.

Per experiment: parameters, median seconds per step (``log.csv``'s ``sec_per_step``, each row the mean
of ``--log-every`` steps; the first row, which holds CUDA's and cuDNN's warm-up, is left out), peak
GPU memory (``torch.cuda.max_memory_allocated``) and what the profile's full schedule would take at
that rate (steps x seconds per step; data loading of the real brains is not in it).

    python -m training.studies.gpu_profile --steps 60 --out training/results/gpu_profile   # the GPU machine
    python -m training.studies.gpu_profile --device cpu --steps 2 --size 32 32 32 --out DIR  # the same code, CPU

With ``--device cpu`` the profile is applied and then moved to the CPU without AMP (a check of this
script's structure; its times say nothing about a GPU).
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .. import experiments
from ..config import apply_overrides
from ..profiles import apply_profile
from ..trainer import Trainer

#: (experiment, the earlier row whose run is its ``strategy.teacher``, or None)
CHAIN: List[Tuple[str, Optional[str]]] = [
    ("teacher_rcn_ref", None),
    ("ldr_aldk_linear", "teacher_rcn_ref"),
    ("crd_fst_pretrain", None),
    ("crd_published", "crd_fst_pretrain"),
]
#: synthetic training pairs per run (the validation pairs are the task's own)
SYNTHETIC_PAIRS = 8


def synthetic_stand_in(cfg, size: Optional[Sequence[int]] = None):
    """``cfg`` with its pairs made synthetic on the same grid (``size`` overrides it: x, y, z voxels). In place."""
    d = cfg.data
    d.task, d.same_subject, d.ixi_share, d.synthetic_pairs = "synthetic", 0.0, 0.0, SYNTHETIC_PAIRS
    d.train_subjects = d.validation_subjects = None
    if size is not None:
        d.size = tuple(int(s) for s in size)
    cfg.loop.select = "dice"  # the known-answer validation pairs are the brains'
    return cfg


def median_step_seconds(log_csv: Path) -> float:
    """Median of ``sec_per_step`` over ``log.csv``'s rows after the first (the warm-up); the one row if only one."""
    with open(log_csv) as f:
        secs = [float(r["sec_per_step"]) for r in csv.DictReader(f) if r.get("sec_per_step")]
    if not secs:
        raise ValueError(f"{log_csv}: no sec_per_step rows (expected at least one log row)")
    return statistics.median(secs[1:] or secs)


def profile_one(name: str, teacher: Optional[Path], out: Path, steps: int, device: str, log_every: int,
                size: Optional[Sequence[int]], overrides: Sequence[str]) -> Dict:
    """Run ``steps`` steps of ``name`` under the ``gpu`` profile on synthetic pairs; its row of the table."""
    cfg = experiments.load(name)
    apply_profile(cfg, "gpu")
    schedule = int(cfg.loop.steps)
    synthetic_stand_in(cfg, size)
    if teacher is not None:
        cfg.strategy.teacher = str(teacher)
    cfg.run_dir = str(out / name)
    cfg.loop.steps, cfg.loop.val_every, cfg.loop.log_every = steps, steps, log_every
    if device != "cuda":
        cfg.loop.device, cfg.loop.amp, cfg.loop.threads = device, False, 2
    apply_overrides(cfg, list(overrides))
    cuda = cfg.loop.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(cfg, verbose=False)
    run_dir = trainer.fit()
    sec = median_step_seconds(run_dir / "log.csv")
    batch = int(cfg.loop.batch_size)
    return {
        "experiment": name, "strategy": cfg.strategy.name, "architecture": cfg.model.architecture,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "grid": list(cfg.data.size), "spacing_mm": float(cfg.data.spacing), "batch": batch,
        "amp": bool(trainer.amp), "device": str(trainer.device), "steps_timed": steps,
        "sec_per_step": sec, "pairs_per_sec": batch / sec,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None,
        "profile_steps": schedule, "profile_hours": schedule * sec / 3600.0,
    }


def markdown(report: Dict) -> str:
    lines = [f"GPU profile on {report['device_name']} (torch {report['torch']}), synthetic pairs on each "
             "experiment's grid, batch 4 + AMP unless stated.", "",
             "| experiment | strategy | parameters | grid | batch | AMP | s/step | pairs/s | peak GPU GiB "
             "| profile steps | profile hours |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        peak = "-" if r["peak_gpu_gib"] is None else f"{r['peak_gpu_gib']:.1f}"
        lines.append(f"| {r['experiment']} | {r['strategy']} | {r['parameters'] / 1e6:.1f} M | "
                     f"{'x'.join(map(str, r['grid']))} @ {r['spacing_mm']:g} mm | {r['batch']} | {r['amp']} | "
                     f"{r['sec_per_step']:.3f} | {r['pairs_per_sec']:.1f} | {peak} | {r['profile_steps']:,} | "
                     f"{r['profile_hours']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> Dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the runs and gpu_profile.json / .md")
    p.add_argument("--steps", type=int, default=60, help="steps timed per experiment")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--size", type=int, nargs=3, default=None, help="network grid x y z (default: each experiment's)")
    p.add_argument("--experiments", nargs="*", default=None, help="a subset of the chain, in its order")
    p.add_argument("--set", action="append", default=[], help="config override for every run (section.field=value)")
    a = p.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("expected a CUDA device for --device cuda, got none (torch.cuda.is_available() is False)")
    chain = [(n, t) for n, t in CHAIN if a.experiments is None or n in a.experiments]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, teacher in chain:
        if teacher is not None and teacher not in {r["experiment"] for r in rows}:
            raise SystemExit(f"{name} needs the run of {teacher}: include it in --experiments")
        rows.append(profile_one(name, out / teacher if teacher else None, out, a.steps, a.device, a.log_every,
                                a.size, a.set))
        print(json.dumps(rows[-1]), flush=True)
    report = {"device_name": torch.cuda.get_device_name() if a.device == "cuda" else platform.processor() or "CPU",
              "torch": torch.__version__, "rows": rows}
    (out / "gpu_profile.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "gpu_profile.md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
