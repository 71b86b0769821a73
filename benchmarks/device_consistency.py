"""CPU against CUDA: the engine's mapping of the bundled sample pair on both devices, per refinement setting.

A registration must not depend on the device beyond floating-point order. For each candidate, the default
call ``register()`` on the CPU and on CUDA (fixed 17, moving 18; and 17 registered to itself), and the
distance between the two fixed -> moving maps at every 4th voxel of the fixed brain (mm: mean, p95, max);
for the self-registration, each device's largest displacement. Candidates: ``network`` (no refinement),
``full`` (the card's full refinement, ``--refine``), ``card`` (the card's default refinement) or
``KEY=VALUE[,KEY=VALUE]`` changes to that default (as ``tune_default.py``'s).
``--tf32 off`` also turns cuDNN's TF32 convolutions off (on by default in torch) to separate their share.

    python benchmarks/device_consistency.py --candidates network card adam_eps_relative=0.01 --out DIR

Needs a CUDA device (a lent GPU machine); the CPU side runs on 2 threads.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Dict, Union

import numpy as np
import SimpleITK as sitk
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from tune_affine import parse_candidate  # noqa: E402

from DeepRegLib.bundles import card_refinement, load_bundle  # noqa: E402
from DeepRegLib.inference import RefineConfig, register  # noqa: E402
from DeepRegLib.known_motion import brain_points, distance_stats  # noqa: E402

SAMPLE = REPO / "Resources" / "SampleData"


def sample_image(subject: int) -> sitk.Image:
    return sitk.ReadImage(str(SAMPLE / f"OASIS-TRT-20-{subject}" / "t1weighted_brain.nii.gz"), sitk.sitkFloat32)


def refinement(name: str, bundle) -> Union[bool, RefineConfig]:
    """``network`` -> False (the network alone); ``full`` -> True (the card's full refinement, ``--refine``);
    else the card's default with the candidate's changes."""
    if name in ("network", "full"):
        return name == "full"
    return replace(card_refinement(bundle.card), **parse_candidate(name))


def compare(fixed: sitk.Image, moving: sitk.Image, refine, bundle) -> Dict[str, dict]:
    """The CPU and CUDA maps of one pair: their distance over the fixed brain, and each one's displacement."""
    points = brain_points(fixed, step=4)
    mapped = {}
    for device in ("cpu", "cuda"):
        res = register(fixed, moving, bundle, device=device, refine=refine, preflight=False, fallback_to_cpu=False)
        mapped[device] = res.map_points(points)
    return {"cpu_vs_cuda": distance_stats(np.linalg.norm(mapped["cpu"] - mapped["cuda"], axis=1)),
            "cpu_moved": distance_stats(np.linalg.norm(mapped["cpu"] - points, axis=1)),
            "cuda_moved": distance_stats(np.linalg.norm(mapped["cuda"] - points, axis=1))}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--candidates", nargs="+", default=["network", "card"])
    ap.add_argument("--tf32", choices=("on", "off"), default="on")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("expected a CUDA device, got none (torch.cuda.is_available() is False)")
    torch.set_num_threads(2)
    torch.backends.cudnn.allow_tf32 = a.tf32 == "on"
    bundle = load_bundle(None)
    fixed, moving = sample_image(17), sample_image(18)
    rows = {}
    for name in a.candidates:
        refine = refinement(name, bundle)
        rows[name] = {"pair": compare(fixed, moving, refine, bundle), "self": compare(fixed, fixed, refine, bundle)}
        print(name, json.dumps(rows[name]), flush=True)
    report = {"model": bundle.name, "device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "tf32": a.tf32, "rows": rows}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "device_consistency.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# CPU vs CUDA ({report['device']}, torch {report['torch']}, cuDNN TF32 {a.tf32}), `{bundle.name}`", "",
             "Distance (mm) between the two devices' fixed -> moving maps at every 4th voxel of the fixed brain "
             "(sample pair 18 -> 17), and the largest displacement of 17 registered to itself on each device.", "",
             "| candidate | CPU vs CUDA mean | p95 | max | self: CPU max | self: CUDA max |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        d = r["pair"]["cpu_vs_cuda"]
        lines.append(f"| {name} | {d['mean']:.4f} | {d['p95']:.4f} | {d['max']:.3f} | "
                     f"{r['self']['cpu_moved']['max']:.4f} | {r['self']['cuda_moved']['max']:.4f} |")
    (a.out / "device_consistency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
