"""``deepreg demo --task prostate``: the bundled prostate MR (moving) -> ultrasound (fixed) test pair.

With a bundle made for the prostate task (its card's ``task`` or ``tasks`` names
'prostate', e.g. a universal model) the pair is registered by :func:`register` like any
other. Without one the demo says so and runs the affine stage alone, two ways: the prostate
task's own affine stage (centre alignment of the two image boxes, see
:data:`DeepRegLib.bundles.taskspec.BUILTIN_TASKS`) and a Mattes mutual-information affine started
from it. Reported: gland Dice (label channel 0, on the US grid) and landmark TRE in mm
(``|T(c_fixed) - c_moving|`` for the centroids of the landmark channels, ``T`` the
fixed -> moving mapping), before and after.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from .. import transforms as tr
from ..affine import affine_register
from ..bundles import list_models, load_bundle, with_task
from ..errors import InputError
from ..imageio import write_image
from ..safeio import atomic_text, atomic_write, check_folder_writable
from ..bundles.taskspec import builtin_task
from ..project import RESOURCES_DIR
from .visualize import overlay_panel, write_png

SAMPLE_DIR = RESOURCES_DIR / "SampleData"
SAMPLE = "prostate-mr-us-case000025"
#: the Mattes MI affine the demo also tries (the prostate task's own stage is centre alignment only)
MI_ITERATIONS = 100


def sample_paths() -> Dict[str, Path]:
    base = Path(os.environ.get("DEEPREG_SAMPLE_DIR", SAMPLE_DIR)) / SAMPLE
    return {"fixed": base / "fixed_us.nii.gz", "moving": base / "moving_mr.nii.gz",
            "fixed_labels": base / "fixed_us_labels.nii.gz", "moving_labels": base / "moving_mr_labels.nii.gz"}


def label_channels(path: Path) -> List[sitk.Image]:
    """Channels of a 3D/4D one-channel-per-label file as 3D UInt8 images with the 3D geometry."""
    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(img)
    if img.GetDimension() == 3:
        arr = arr[None]
    n = img.GetDimension()
    direction = np.array(img.GetDirection()).reshape(n, n)[:3, :3].ravel()
    out = []
    for c in range(arr.shape[0]):
        ch = sitk.GetImageFromArray((arr[c] > 0.5).astype(np.uint8))
        ch.SetOrigin(img.GetOrigin()[:3])
        ch.SetSpacing(img.GetSpacing()[:3])
        ch.SetDirection(tuple(direction))
        out.append(ch)
    return out


def load_case(paths: Dict[str, Path]) -> Tuple[sitk.Image, sitk.Image, List[sitk.Image], List[sitk.Image]]:
    """``(fixed, moving, fixed channels, moving channels)`` of a case named as :func:`sample_paths` names its
    files: both images as float32, and the label channels both label files have (see :func:`label_channels`)."""
    fixed = sitk.ReadImage(str(paths["fixed"]), sitk.sitkFloat32)
    moving = sitk.ReadImage(str(paths["moving"]), sitk.sitkFloat32)
    fch, mch = label_channels(paths["fixed_labels"]), label_channels(paths["moving_labels"])
    n = min(len(fch), len(mch))
    return fixed, moving, fch[:n], mch[:n]


def _centroid(mask: sitk.Image) -> Optional[np.ndarray]:
    idx = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)
    if len(idx) == 0:
        return None
    return np.array(mask.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in idx.mean(0)[::-1])))


def evaluate(transform: sitk.Transform, fixed_ch: List[sitk.Image], moving_ch: List[sitk.Image]) -> Dict[str, float]:
    """Gland Dice (channel 0, nearest neighbour on the fixed grid) and mean landmark TRE (mm)."""
    f = sitk.GetArrayViewFromImage(fixed_ch[0]) > 0
    w = sitk.GetArrayViewFromImage(sitk.Resample(moving_ch[0], fixed_ch[0], transform, sitk.sitkNearestNeighbor)) > 0
    dice = float(2 * np.logical_and(f, w).sum() / max(1, f.sum() + w.sum()))
    tre = []
    for fc, mc in zip(fixed_ch[1:], moving_ch[1:]):
        a, b = _centroid(fc), _centroid(mc)
        if a is not None and b is not None:
            tre.append(float(np.linalg.norm(np.array(transform.TransformPoint(tuple(a))) - b)))
    return {"gland_dice": round(dice, 4), "landmark_tre_mm": round(float(np.mean(tre)), 3) if tre else None,
            "landmarks": len(tre)}


def prostate_models() -> List[str]:
    """The models set up for the prostate task: specialists (``prostate_mrus``), then ``NAME:prostate`` views."""
    return [name for name, b in list_models(task_views=True).items() if b.default_task == "prostate"]


def _prostate_reference(model: str) -> str:
    """``model``, or ``model:prostate`` when it serves several tasks, the prostate among them."""
    b = load_bundle(model)
    return with_task(model, "prostate") if b.default_task != "prostate" and "prostate" in b.tasks else model


def run_prostate_demo(output_dir: str, model: Optional[str] = None, device: str = "auto",
                      progress: Optional[Callable[[str, float], None]] = None,
                      notice: Optional[Callable[[str], None]] = None) -> dict:
    """Register the sample MR (moving) to its ultrasound (fixed): the task's affine stages, then a prostate
    model when one is bundled; ``notice`` as in :func:`DeepRegLib.demos.brain.run_demo`."""
    p = sample_paths()
    for f in p.values():
        if not f.exists():
            raise InputError(f"sample data missing: {f}")
    out = Path(check_folder_writable(output_dir, "demo output folder"))
    out.mkdir(parents=True, exist_ok=True)
    fixed, moving, fch, mch = load_case(p)
    spec = builtin_task("prostate")
    candidates = prostate_models()
    model = _prostate_reference(model) if model else (candidates[0] if candidates else None)
    report: dict = {"task": "prostate", "fixed": str(p["fixed"]), "moving": str(p["moving"]),
                    "modalities": spec.modalities, "model": model, "results": {}}
    rows = [("unregistered", sitk.Resample(moving, fixed, sitk.Transform(), sitk.sitkLinear, 0.0))]
    report["results"]["unregistered"] = evaluate(sitk.Transform(), fch, mch)
    t0 = time.perf_counter()
    centre = affine_register(fixed, moving, spec.affine)
    report["results"]["centre alignment (task affine stage)"] = evaluate(centre, fch, mch)
    report["seconds_centre"] = round(time.perf_counter() - t0, 3)
    rows.append(("centre", sitk.Resample(moving, fixed, centre, sitk.sitkLinear, 0.0)))
    t0 = time.perf_counter()
    mi_cfg = replace(spec.affine, iterations=MI_ITERATIONS, sampling_fraction=0.5, learning_rate=0.5)
    mi = affine_register(fixed, moving, mi_cfg)
    report["results"]["Mattes MI affine"] = evaluate(mi, fch, mch)
    report["seconds_mi"] = round(time.perf_counter() - t0, 3)
    rows.append(("MI affine", sitk.Resample(moving, fixed, mi, sitk.sitkLinear, 0.0)))
    final = tr.to_sitk(centre, None, None)
    if model is None:
        report["note"] = ("no bundled model is made for the prostate MR-US task (no card lists task 'prostate'); "
                          "only the affine stage ran. Train one with python -m training run cl_samcl (or a "
                          "prostate-only run) and export it to register this pair deformably.")
    else:
        from ..bundles.preflight import preflight
        from ..inference import register
        bundle = load_bundle(model)
        if bundle.default_task != "prostate":
            report["warning"] = f"model {model!r} does not list the prostate task in its card"
        if notice is not None:
            preflight(bundle.card, fixed, moving, write=notice)
        res = register(fixed, moving, model=bundle, device=device, progress=progress, preflight=notice is None)
        final = res.transform()
        report["results"][f"DeepReg {res.model}"] = evaluate(final, fch, mch)
        report["timings"] = {k: round(v, 3) for k, v in res.timings.items()}
        rows.append(("deepreg", res.warp_image(moving)))
    tr.write_transform(final, out / "transform.h5")
    write_image(sitk.Resample(moving, fixed, final, sitk.sitkLinear, 0.0), out / "warped.nii.gz")
    panel = overlay_panel(fixed, rows, "checkerboard")
    atomic_write(out / "checkerboard.png", lambda tmp: write_png(panel, tmp))
    report["outputs"] = {"transform": str(out / "transform.h5"), "warped": str(out / "warped.nii.gz"),
                         "checkerboard_png": str(out / "checkerboard.png")}
    atomic_text(out / "demo.json", json.dumps(report, indent=2))
    print(f"DeepReg demo, task prostate: MR (moving) -> transrectal US (fixed), sample {SAMPLE}")
    if "note" in report:
        print(f"  NOTE: {report['note']}")
    print("  method                                 gland Dice  landmark TRE (mm)")
    for name, r in report["results"].items():
        tre = "n/a" if r["landmark_tre_mm"] is None else f"{r['landmark_tre_mm']:.2f} ({r['landmarks']} landmarks)"
        print(f"  {name:<38} {r['gland_dice']:.3f}       {tre}")
    print(f"  transform (fixed -> moving, ITK .h5): {report['outputs']['transform']}")
    print(f"  warped MR on the US grid: {report['outputs']['warped']}; picture: {report['outputs']['checkerboard_png']}")
    sys.stdout.flush()
    return report
