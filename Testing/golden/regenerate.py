"""Regenerate the golden values of the bundled sample pair (subject 18 -> 17).

Run deliberately, and commit with a message saying why (new model, changed refinement defaults,
intended change of the mapping):

    PYTHONPATH=. python Testing/golden/regenerate.py [--refine]

Stores per-group Dice (subcortical, cortical, all) and 200 fixed brain points (LPS mm) with their
mapped moving points, for the default model as ``register()`` runs it by default (with its card's
default refinement) and, with ``--refine``, for ``refine=True``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from DeepRegLib import DEFAULT_MODEL  # noqa: E402
from DeepRegLib.inference import register  # noqa: E402
from DeepRegLib.metrics import dice_summary  # noqa: E402

SAMPLE = REPO / "Resources" / "SampleData"
GOLDEN = HERE / "sample_pair.json"


def paths(n: int) -> dict:
    base = SAMPLE / f"OASIS-TRT-20-{n}"
    return {"image": base / "t1weighted_brain.nii.gz", "labels": base / "labels.DKT31.manual+aseg.nii.gz"}


def brain_points(fixed: sitk.Image, n: int = 200) -> np.ndarray:
    arr = sitk.GetArrayViewFromImage(fixed)
    kk, jj, ii = np.nonzero(arr > np.percentile(arr[arr > 0], 30))
    sel = np.random.default_rng(2026).choice(len(ii), n, replace=False)
    return np.array([fixed.TransformIndexToPhysicalPoint((int(ii[s]), int(jj[s]), int(kk[s]))) for s in sel])


#: golden key -> register()'s ``refine``: the default call (the card's refinement) and the full Refine
REFINE = {"default": None, "refine": True}


def run(key: str) -> dict:
    torch.set_num_threads(2)
    F, M = paths(17), paths(18)
    fixed = sitk.ReadImage(str(F["image"]), sitk.sitkFloat32)
    res = register(fixed, str(M["image"]), device="cpu", refine=REFINE[key])
    fl, ml = sitk.ReadImage(str(F["labels"])), sitk.ReadImage(str(M["labels"]))
    pts = brain_points(fixed)
    return {"dice": dice_summary(fl, res.warp_labels(ml)), "points": pts.tolist(),
            "mapped": res.map_points(pts).tolist()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--refine", action="store_true", help="also (re)generate the refine=True values")
    a = ap.parse_args()
    data = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    data["model"] = DEFAULT_MODEL
    data["default"] = run("default")
    if a.refine:
        data["refine"] = run("refine")
    GOLDEN.write_text(json.dumps(data, indent=1) + "\n")
    print({k: v["dice"] for k, v in data.items() if isinstance(v, dict)})


if __name__ == "__main__":
    main()
