"""Which affine stage for the prostate MR -> US task? Gland Dice on training cases 0, 3, ..., 21.

    python benchmarks/prostate_affine_stage.py

Compares the stored geometry (identity), centre alignment of the two image boxes
(``initialisation='geometry'``, ``iterations=0``: the prostate task's stage) and a Mattes mutual
information affine started from it (two settings). Training cases only: the validation (22-24)
and test (25, 26) cases are not looked at. Needs ``../shared/data/prostate-mr-us``.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from DeepRegLib.affine import AffineConfig, affine_register
from training.data import prostate

CONFIGS = {
    "identity (stored geometry)": None,
    "centre alignment": AffineConfig(spacing=0.8, iterations=0, initialisation="geometry"),
    "centre + Mattes MI affine": AffineConfig(spacing=0.8, iterations=100, metric="mattes", initialisation="geometry",
                                              sampling_fraction=0.5, learning_rate=0.5),
    "centre + Mattes MI, 1 level at 1.6 mm": AffineConfig(spacing=1.6, shrink_levels=(1,), smoothing_sigmas=(1.0,),
                                                          iterations=50, metric="mattes", initialisation="geometry",
                                                          sampling_fraction=0.5, learning_rate=0.25),
}


def main() -> None:
    res = {k: [] for k in CONFIGS}
    cases = list(range(0, 22, 3))
    for case in cases:
        p = prostate.case_paths(case)
        f = sitk.ReadImage(str(p["fixed_images"]), sitk.sitkFloat32)
        m = sitk.ReadImage(str(p["moving_images"]), sitk.sitkFloat32)
        fg, mg = prostate.label_channels(p["fixed_labels"])[0], prostate.label_channels(p["moving_labels"])[0]
        a = sitk.GetArrayFromImage(fg) > 0
        for k, c in CONFIGS.items():
            t = sitk.Transform() if c is None else affine_register(f, m, c)
            w = sitk.GetArrayFromImage(sitk.Resample(mg, fg, t, sitk.sitkNearestNeighbor)) > 0
            res[k].append(2 * (a & w).sum() / (a.sum() + w.sum()))
    print(f"gland Dice on training cases {cases}")
    for k, v in res.items():
        print(f"  {k:<40} mean {np.mean(v):.3f}  per case {np.round(v, 2).tolist()}")


if __name__ == "__main__":
    main()
