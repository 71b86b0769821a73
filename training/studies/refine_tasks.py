"""Per-pair refinement on every continual task's validation pairs (issue 12: what would make one model
register every task?).

Each network (``affine``: the affine stage alone, i.e. a zero flow; or a run, checkpoint or bundle)
is evaluated on the validation pairs of the tasks of a continual run's config, alone and followed by
:func:`DeepRegLib.refine.refine_flow` with each similarity asked for (``ncc``: local NCC; ``mind``:
MIND-SSC descriptors, for pairs of different contrasts or modalities). The refinement's lengths
scale with each task's voxel size (window 5 voxels, Adam steps of ``lr_voxels`` voxels). Figures are
those of the accuracy matrix (``training/evaluate.py: evaluate_pairs``).

    python -m training.studies.refine_tasks --run training/runs/cl_joint --nets affine training/runs/cl_joint/last.pt \\
        --similarities none ncc mind --out training/results/refine_tasks
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from DeepRegLib.refine import RefineConfig, refine_flow

from ..evaluate import ZeroFlow, evaluate_pairs
from .continual_report import _config
from ..data import PairSet, load_split
from ..data.tasks import run_task_config, task_info


class Refined(nn.Module):
    """``net`` followed by the per-pair refinement on a grid of ``spacing`` mm: ``(flow, [flow])``."""

    def __init__(self, net: nn.Module, spacing: float, config: Optional[RefineConfig]) -> None:
        super().__init__()
        self.net, self.spacing, self.config = net, spacing, config
        self.seconds: List[float] = []

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor):
        flow, _ = self.net(fixed, moving)
        if self.config is None:
            return flow, [flow]
        with torch.enable_grad():
            out = refine_flow(fixed.float(), moving.float(), flow.float(), self.spacing, self.config)
        self.seconds.append(out.seconds)
        return out.flow, [out.flow]


def shared_contrast(data: PairSet) -> PairSet:
    """``data`` with both images of every pair rendered from its label maps with one shared lookup table
    (one fixed intensity per label value, background 0; the affine stage's reference rendering)."""
    from ..data.synthhead import reference_lut
    out = copy.copy(data)
    out.fixed = reference_lut(data.fixed_labels)
    out.moving = reference_lut(data.moving_labels)
    return out


def task_refinement(similarity: str, spacing: float, steps: int, lr_voxels: float, smooth: float,
                    control_factor: int, integration_steps: int = 4) -> Optional[RefineConfig]:
    """The refinement for a task on a grid of ``spacing`` mm (None for ``similarity='none'``)."""
    if similarity == "none":
        return None
    return RefineConfig(max_steps=steps, learning_rate=lr_voxels * spacing, ncc_window_mm=5 * spacing,
                        smooth_weight=smooth, integration_steps=integration_steps, control_factor=control_factor,
                        similarity=similarity, patience=steps + 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a continual run whose config names the tasks")
    ap.add_argument("--nets", nargs="+", default=["affine"], help="'affine' or a run / checkpoint / bundle")
    ap.add_argument("--similarities", nargs="+", default=["none", "ncc", "mind"], choices=["none", "ncc", "mind", "mi"])
    ap.add_argument("--tasks", nargs="*", default=None, help="a subset of the run's tasks")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--lr-voxels", type=float, default=0.25)
    ap.add_argument("--smooth", type=float, default=1.0)
    ap.add_argument("--control-factor", type=int, default=2)
    ap.add_argument("--integration-steps", type=int, default=4,
                    help="scaling-and-squaring steps (0: the velocity is used as a displacement, ~2x cheaper)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shared-contrast", action="store_true",
                    help="synthhead: render both images of each pair with one shared contrast (one intensity per "
                         "label, as the affine stage sees them): how far registration gets when contrast is no obstacle")
    ap.add_argument("--update-card", type=Path, default=None, metavar="BUNDLE",
                    help="write the refinement tried into this bundle's card as its default (one task, one net, "
                         "'none' and one similarity), with the validation figures before and after")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    tried = [s for s in a.similarities if s != "none"]
    if a.update_card is not None and (len(a.nets) != 1 or len(tried) != 1 or "none" not in a.similarities
                                      or not a.tasks or len(a.tasks) != 1):
        ap.error("--update-card needs one --tasks entry, one --nets entry and --similarities none <one similarity>")
    torch.set_num_threads(a.threads)
    from ..networks import load_trained
    cfg = _config({"run": str(a.run)})
    tasks = a.tasks or list(cfg.continual.tasks)
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "refine_tasks.json"
    results: Dict[str, dict] = json.loads(path.read_text()) if path.exists() else {}
    command = "python -m training.studies.refine_tasks " + " ".join(argv if argv is not None else sys.argv[1:])
    for task in tasks:
        info = task_info(task)
        val = load_split(run_task_config(cfg, task), "val")
        if a.shared_contrast and task == "synthhead":
            val = shared_contrast(val)
        for name in a.nets:
            net = (ZeroFlow() if name == "affine" else load_trained(name)).eval()
            for sim in a.similarities:
                rc = task_refinement(sim, info.spacing, a.steps, a.lr_voxels, a.smooth, a.control_factor,
                                     a.integration_steps)
                model = Refined(net, info.spacing, rc)
                t0 = time.perf_counter()
                figures = evaluate_pairs(model, val, info.metric)
                key = _key(task, name, sim, rc is not None, a)
                results[key] = {"task": task, "net": name, "similarity": sim, "refine": None if rc is None else rc.to_dict(),
                                "pairs": len(val), **figures, "refine_seconds_mean":
                                (sum(model.seconds) / len(model.seconds)) if model.seconds else 0.0,
                                "wall_s": time.perf_counter() - t0, "command": command}
                print(f"[refine_tasks] {key}: accuracy {figures['accuracy']:.4f}"
                      + (f" tre {figures['tre_mm']:.2f} mm" if "tre_mm" in figures else "")
                      + f" folding {figures['folding_percent']:.3f}%", flush=True)
                path.write_text(json.dumps(results, indent=1) + "\n")
    (a.out / "refine_tasks.md").write_text(markdown(results) + "\n")
    if a.update_card is not None:
        before = results[_key(a.tasks[0], a.nets[0], "none", False, a)]
        after = results[_key(a.tasks[0], a.nets[0], tried[0], True, a)]
        write_card_refinement(a.update_card, before, after, command)
    return 0


def _key(task: str, net: str, sim: str, refined: bool, a) -> str:
    """The results key of one (task, network, similarity) row; a refined row names the settings."""
    shared = " (shared contrast)" if a.shared_contrast and task == "synthhead" else ""
    tail = "" if not refined else (f" | s{a.steps} lr{a.lr_voxels}v l{a.smooth} c{a.control_factor}"
                                  + ("" if a.integration_steps == 4 else f" i{a.integration_steps}"))
    return f"{task}{shared} | {net} | {sim}{tail}"


FIGURES = ("accuracy", "tre_mm", "folding_percent")


def write_card_refinement(bundle: Path, before: dict, after: dict, command: str) -> None:
    """Make ``after``'s refinement the default of the bundle's card (``refinement`` block, as
    :func:`DeepRegLib.refine.card_refinement` reads it), with both rows' validation figures. ``bundle``:
    a folder, or ``FOLDER:TASK`` for one task of a multi-task bundle."""
    from DeepRegLib.bundles import REFINEMENT_KEY, load_bundle, update_card
    update_card(load_bundle(str(bundle)), {REFINEMENT_KEY: {
        "default": after["refine"],
        "what": "register() runs this per-pair refinement after the network unless told otherwise (refine=False / "
                "--network-only: the network alone)",
        "written_by": command,
        "validation": {"task": after["task"], "pairs": after["pairs"], "statistic": "mean over pairs, network grid",
                       "network": {k: before[k] for k in FIGURES if k in before},
                       "refined": {**{k: after[k] for k in FIGURES if k in after},
                                   "seconds": after["refine_seconds_mean"]}}}})


def markdown(results: Dict[str, dict]) -> str:
    lines = ["| task | network | refinement | pairs | accuracy | TRE mm | % folding (grid) | refine s / pair |",
             "|---|---|---|---|---|---|---|---|"]
    for key, r in results.items():
        ref = "none" if r["refine"] is None else key.split(" | ", 2)[2].replace(" | ", ", ")
        tre = f"{r['tre_mm']:.2f}" if "tre_mm" in r else ""
        lines.append(f"| {key.split(' | ')[0]} | {r['net']} | {ref} | {r['pairs']} | {r['accuracy']:.4f} | {tre} | "
                     f"{r['folding_percent']:.3f} | {r['refine_seconds_mean']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
