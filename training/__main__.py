"""``python -m training`` — run, list, show and export experiments.

    python -m training list
    python -m training show ldr_aldk [--set optim.lr=1e-4]
    python -m training run ldr_aldk [--profile cpu|gpu] [--set optim.lr=1e-4 ...] [--run-dir DIR]
    python -m training export training/runs/ldr_aldk --name ldr_aldk_brain

A run folder (default ``training/runs/<experiment>``) holds config.json, log.csv,
val.csv, loss.png, val_dice.png, last.pt and best.pt. Running the same command again
resumes from last.pt.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys

from . import experiments
from .config import apply_overrides, to_dict
from .profiles import PROFILES, apply_profile


def _config(a):
    cfg = experiments.load(a.experiment)
    apply_profile(cfg, a.profile)
    apply_overrides(cfg, a.set or [])
    if a.run_dir:
        cfg.run_dir = a.run_dir
    return cfg


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "export":
        from .export import main as export_main
        export_main(argv[1:])
        return 0
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list experiments")
    sub.add_parser("export", help="export a run as a model bundle (see python -m training export -h)")
    for name in ("run", "show"):
        s = sub.add_parser(name)
        s.add_argument("experiment")
        s.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE", help="override a config field")
        s.add_argument("--run-dir", default="")
        s.add_argument("--profile", default="cpu", choices=PROFILES,
                       help="budget: cpu (as the file writes it) or gpu (batch 4, CUDA, the paper's schedule)")
    a = p.parse_args(argv)
    if a.cmd == "list":
        for n, d in experiments.descriptions().items():
            print(f"{n:24s} {d}")
        return 0
    cfg = _config(a)
    if a.cmd == "show":
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    from .trainer import Trainer
    command = "python -m training " + " ".join(shlex.quote(x) for x in argv)
    run_dir = Trainer(cfg, command=command).fit()
    print(f"[train] run folder: {run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
