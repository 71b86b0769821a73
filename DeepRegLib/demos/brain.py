"""``deepreg demo``: register the bundled sample brains and report what happened."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import SimpleITK as sitk

from ..errors import InputError
from ..imageio import read_image, write_image
from ..metrics import dice_summary
from ..safeio import atomic_text, atomic_write, check_folder_writable
from ..project import RESOURCES_DIR
from .visualize import overlay_panel, write_png

SAMPLE_DIR = RESOURCES_DIR / "SampleData"
SAMPLE_FIXED = "OASIS-TRT-20-17"
SAMPLE_MOVING = "OASIS-TRT-20-18"


def sample_paths(subject: str) -> dict:
    base = Path(os.environ.get("DEEPREG_SAMPLE_DIR", SAMPLE_DIR)) / subject
    return {"image": base / "t1weighted_brain.nii.gz", "labels": base / "labels.DKT31.manual+aseg.nii.gz"}


def run_demo(output_dir: str, model: Optional[str] = None, device: str = "auto",
             progress: Optional[Callable[[str, float], None]] = None,
             notice: Optional[Callable[[str], None]] = None) -> dict:
    """Register sample subject 18 (moving) to 17 (fixed); write transform, warped images, PNGs and JSON.

    ``notice``: where the pre-flight lines go (licence notice, domain warnings; the command line's
    stderr); None: Python warnings, from :func:`~DeepRegLib.inference.register`.
    """
    from ..bundles import load_bundle
    from ..bundles.preflight import preflight
    from ..inference import register
    bundle = load_bundle(model)
    f, m = sample_paths(SAMPLE_FIXED), sample_paths(SAMPLE_MOVING)
    for p in (*f.values(), *m.values()):
        if not p.exists():
            raise InputError(f"sample data missing: {p}")
    out = Path(check_folder_writable(output_dir, "demo output folder"))
    out.mkdir(parents=True, exist_ok=True)
    fixed, moving = read_image(f["image"]), read_image(m["image"])
    fl, ml = sitk.ReadImage(str(f["labels"])), sitk.ReadImage(str(m["labels"]))
    if notice is not None:
        preflight(bundle.card, fixed, moving, write=notice)
    t0 = time.perf_counter()
    res = register(fixed, moving, model=bundle, device=device, progress=progress, preflight=notice is None)
    seconds = time.perf_counter() - t0
    res.write_transform(str(out / "transform.h5"))
    warped = res.warp_image(moving)
    affine_only = res.warp_image(moving, affine_only=True)
    identity = sitk.Resample(moving, fixed, sitk.Transform(), sitk.sitkLinear, 0.0)
    write_image(warped, out / "warped.nii.gz")
    wl = res.warp_labels(ml)
    write_image(wl, out / "warped_labels.nii.gz")
    report = {
        "fixed": str(f["image"]), "moving": str(m["image"]), "model": res.model, "device": res.device,
        "register_seconds": round(seconds, 3), "timings": {k: round(v, 3) for k, v in res.timings.items()},
        "dice_unregistered": dice_summary(fl, sitk.Resample(ml, fl, sitk.Transform(), sitk.sitkNearestNeighbor, 0)),
        "dice_affine": dice_summary(fl, res.warp_labels(ml, affine_only=True)),
        "dice_deformable": dice_summary(fl, wl),
        "outputs": {"transform": str(out / "transform.h5"), "warped": str(out / "warped.nii.gz"),
                    "warped_labels": str(out / "warped_labels.nii.gz"),
                    "checkerboard_png": str(out / "checkerboard.png"), "difference_png": str(out / "difference.png")},
    }
    rows = [("unregistered", identity), ("affine", affine_only), ("deepreg", warped)]
    for kind in ("checkerboard", "difference"):
        panel = overlay_panel(fixed, rows, kind)
        atomic_write(out / f"{kind}.png", lambda tmp: write_png(panel, tmp))
    atomic_text(out / "demo.json", json.dumps(report, indent=2))
    d0, d1, d2 = report["dice_unregistered"], report["dice_affine"], report["dice_deformable"]
    print(f"DeepReg demo: {SAMPLE_MOVING} -> {SAMPLE_FIXED} with model {res.model} on {res.device}")
    refined = (f", refinement {res.timings['refine']:.2f} s ({res.refinement})" if "refine" in res.timings else "")
    print(f"  register(): {seconds:.2f} s  (affine {res.timings['affine']:.2f} s, network {res.timings['network']:.2f} s"
          f"{refined})")
    print(f"  Dice          subcortical  cortical")
    for name, d in (("unregistered", d0), ("affine", d1), ("deepreg", d2)):
        print(f"  {name:<13} {d['subcortical']:.3f}        {d['cortical']:.3f}")
    print(f"  transform (fixed -> moving, ITK .h5): {report['outputs']['transform']}")
    print(f"  warped image: {report['outputs']['warped']}")
    print(f"  warped labels: {report['outputs']['warped_labels']}")
    print(f"  pictures: {report['outputs']['checkerboard_png']}, {report['outputs']['difference_png']}")
    sys.stdout.flush()
    return report
