"""Full-resolution evaluation of training runs on the validation brains (the RESULTS.md columns).

For each run (its ``best.pt``, or a checkpoint file such as ``run/last.pt`` given directly) and each ordered validation pair: the engine's own front
half (:func:`DeepRegLib.pipeline.prepare_pair`, affine stage with the engine defaults),
the run's network on the 2 mm grid, the engine's displacement field and transform, then
at the fixed image's 1 mm grid: Dice of the warped manual labels (subcortical < 1000,
cortical >= 1000), HD95 (mm), % folding and SDlogJ of the written transform sampled at
1 mm on an identity-direction grid inside the fixed brain (:mod:`DeepRegLib.qa`).
Also: parameters, CPU network seconds (median, 2 threads), peak memory of a network
forward (tracemalloc does not see torch; the peak-RSS growth of a fresh process holding only the
weights is used),
and the run's training wall time. Teachers (training-only networks) are evaluated the
same way, so every row is comparable.

    python -m training.studies.benchmark_models training/runs/teacher_rcn_labels training/runs/ldr_aldk \
        Resources/models/ldr_brain_v1 --out training/results/brain_models.json

(a bundle folder is evaluated from its card and weights, like a run).
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import SimpleITK as sitk
import torch

from ..checkpoints import load_checkpoint

from DeepRegLib import transforms as tr
from DeepRegLib.affine import AffineConfig
from DeepRegLib.inference import RegistrationResult
from DeepRegLib.metrics import dice_scores, hd95, summarise_dice
from DeepRegLib.models import count_parameters
from DeepRegLib.pipeline import InputSpec, prepare_pair
from DeepRegLib.preprocess import Normalisation
from DeepRegLib.qa import transform_folding

from ..config import from_dict
from ..data.mindboggle import VALIDATION_SUBJECTS, subject_paths
from ..networks import build_model

REPO = Path(__file__).resolve().parents[2]


def run_key(run: Path) -> str:
    """The row name of ``run``: its folder name, or ``folder/stem`` for a checkpoint file (``run/last.pt``)."""
    run = Path(run)
    return f"{run.parent.name}/{run.stem}" if run.suffix == ".pt" else run.name


def load_run(run: Path):
    """``(config, network, checkpoint-like dict)`` of a run folder / ``.pt``, or of a bundle folder (``card.json``),
    so that a bundled model gets a row from the same code as the runs."""
    if run.is_dir() and (run / "card.json").exists():
        return _load_bundle(run)
    ck = load_checkpoint(run / "best.pt" if run.is_dir() else run)
    cfg = from_dict(ck["config"])
    net = build_model(cfg.model)
    net.load_state_dict(ck["modules"]["model"])
    return cfg, net.eval(), ck


def _load_bundle(folder: Path):
    from DeepRegLib.bundles import load_bundle

    from ..config import DataConfig, ExperimentConfig, ModelConfig
    bundle = load_bundle(str(folder))
    card = bundle.card
    arch = card["architecture"]
    cfg = ExperimentConfig(name=bundle.name, description=card.get("description", ""),
                           data=DataConfig(spacing=card["input"]["spacing"], size=tuple(card["input"]["size"]),
                                           normalisation=card["input"].get("normalisation", {}).get("kind", "percentile")),
                           model=ModelConfig(architecture=arch["name"], cascades=arch["cascades"],
                                             kwargs=dict(arch.get("kwargs") or {})))
    training = card.get("training", {})
    ck = {"step": training.get("steps", 0), "train_seconds": 60.0 * float(training.get("train_minutes") or 0.0)}
    return cfg, bundle.network("cpu").eval(), ck


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) / 1024.0
    return float("nan")


def peak_forward_mb(net: torch.nn.Module, model_cfg, size) -> float:
    """Peak RSS growth (MB) of one network forward in a fresh process holding only the model's weights."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        from dataclasses import asdict
        # the model config as plain data: checkpoints load with weights_only (no pickled dataclasses)
        torch.save({"state": net.state_dict(), "model": asdict(model_cfg)}, path)
        code = f"""
import sys, torch
from pathlib import Path
sys.path.insert(0, {str(REPO)!r})
from training.studies.benchmark_models import _status_mb
from training.networks import build_model
torch.set_num_threads(2)
from training.checkpoints import load_checkpoint
obj = load_checkpoint({str(path)!r})
from training.config import ModelConfig
net = build_model(ModelConfig(**obj["model"])).eval()
net.load_state_dict(obj["state"])
del obj
x = torch.rand(1, 1, *{tuple(size)!r})
before = _status_mb("VmRSS")
with torch.inference_mode():
    net(x, x)
print(_status_mb("VmHWM") - before)
"""
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def known_answer_errors(net: torch.nn.Module, cfg) -> Dict[str, float]:
    """The network on the known-answer validation pairs training selects on (``same_subject.validation_pairs``
    of the Mindboggle and IXI validation brains at the run's grid): mean error per kind (mm), over all
    pairs, and the largest displacement of an identical pair (mm)."""
    from dataclasses import replace

    from ..data.registry import load_ixi, load_split
    from ..data.same_subject import validation_pairs
    from ..evaluate import evaluate_known
    data = replace(cfg.data, task="mindboggle")
    sets = [load_split(data, "val"), load_ixi(data, "val")]
    return evaluate_known(net, validation_pairs(sets), "cpu")


def evaluate_run(run: Path, subjects: List[int], with_hd95: bool = True, repeats: int = 3,
                 known: bool = False) -> Dict[str, object]:
    cfg, net, ck = load_run(run)
    spec = InputSpec(spacing=cfg.data.spacing, size=tuple(cfg.data.size), normalisation=Normalisation(cfg.data.normalisation))
    acfg = AffineConfig(**(cfg.data.affine or {}))
    torch.set_num_threads(2)
    rows = []
    for fs, ms in itertools.permutations(subjects, 2):
        fp, mp = subject_paths(fs), subject_paths(ms)
        f_img = sitk.ReadImage(str(fp["image"]), sitk.sitkFloat32)
        m_img = sitk.ReadImage(str(mp["image"]), sitk.sitkFloat32)
        prep = prepare_pair(f_img, m_img, spec, acfg)
        f = torch.from_numpy(prep.fixed)[None, None]
        m = torch.from_numpy(prep.moving)[None, None]
        times = []
        with torch.inference_mode():
            for _ in range(repeats):
                t0 = time.perf_counter()
                flow, _ = net(f, m)
                times.append(time.perf_counter() - t0)
        disp = tr.taper_border(tr.flow_to_displacement(flow, prep.grid))
        res = RegistrationResult(f_img, prep.affine, disp, prep.grid, run_key(run), "cpu")
        fl = sitk.ReadImage(str(fp["labels"]))
        wl = res.warp_labels(sitk.ReadImage(str(mp["labels"])))
        d = summarise_dice(dice_scores(fl, wl))
        row = {"pair": [fs, ms], "dice_subcortical": d["subcortical"], "dice_cortical": d["cortical"],
               "network_seconds": statistics.median(times)}
        if with_hd95:
            h = hd95(fl, wl)
            row["hd95_mm"] = float(np.nanmean(list(h.values())))
        row.update(transform_folding(res.transform(), f_img, 1.0, mask=fl))
        rows.append(row)
        print(f"[bench] {run_key(run)} {fs}->{ms}: " + json.dumps({k: round(v, 4) for k, v in row.items()
                                                            if isinstance(v, float)}), flush=True)
    agg = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "pair"}
    agg["network_seconds"] = float(np.median([r["network_seconds"] for r in rows]))
    if known:
        agg.update(known_answer_errors(net, cfg))
    return {"run": str(run), "experiment": cfg.name, "description": cfg.description,
            "parameters": count_parameters(net), "steps": ck["step"],
            "train_minutes": round(ck["train_seconds"] / 60.0, 1),
            "peak_forward_mb": peak_forward_mb(net, cfg.model, tuple(cfg.data.size)[::-1]),
            "validation_pairs": len(rows), **agg, "per_pair": rows}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--subjects", type=int, nargs="+", default=VALIDATION_SUBJECTS)
    p.add_argument("--no-hd95", action="store_true")
    p.add_argument("--known", action="store_true", help="also the known-answer validation pairs (mm; Mindboggle + IXI)")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    for run in a.runs:  # the JSON is rewritten after every row: a long list loses nothing when stopped
        r = evaluate_run(run, a.subjects, not a.no_hd95, known=a.known)
        old = json.loads(a.out.read_text()) if a.out.exists() else {}
        old[run_key(run)] = r  # keyed by run folder: one experiment may have several
        tmp = a.out.with_name(a.out.name + ".tmp")
        tmp.write_text(json.dumps(old, indent=1) + "\n")
        tmp.replace(a.out)
    print("| run | Dice sub | Dice cort | HD95 mm | % fold 1 mm | SDlogJ | known-answer mm (identical max) "
          "| params | net s | peak MB | train min |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    nan = float("nan")
    for name, r in old.items():
        print(f"| {name} | {r['dice_subcortical']:.3f} | {r['dice_cortical']:.3f} | "
              f"{r.get('hd95_mm', nan):.2f} | {r['folding_percent']:.4f} | {r['sdlogj']:.3f} | "
              f"{r.get('known_error_mm', nan):.2f} ({r.get('identical_max_mm', nan):.2f}) | "
              f"{r['parameters'] / 1e6:.1f} M | {r['network_seconds']:.2f} | {r['peak_forward_mb']:.0f} | "
              f"{r['train_minutes']} |")


if __name__ == "__main__":
    main()
