"""Issue 26: training moved to the engine's similarity registry; did any number move?

Before, training had its own measures (``cc``: global correlation; ``lncc``: a local NCC with
replicate padding), the refinement another local NCC (box means that count the padding out). Both now
use :class:`DeepRegLib.similarity.Similarity`. This study computes, for the default model's network
on the bundled sample pair (both directions; the network grid as training sees it), the old and new
losses of the unregistered and the registered moving image::

    python -m training.studies.similarity_switch [--window 7]

It prints one JSON line per pair and image (RESULTS.md, *Precision training*, "One similarity").
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import SimpleITK as sitk
import torch
import torch.nn.functional as F

from DeepRegLib.affine import AffineConfig
from DeepRegLib.bundles import load_bundle
from DeepRegLib.inference import load_network
from DeepRegLib.pipeline import prepare_pair
from DeepRegLib.project import RESOURCES_DIR
from DeepRegLib.similarity import Similarity
from DeepRegLib.spatial import warp


def replicate_box(x: torch.Tensor, window: int) -> torch.Tensor:
    """The former training box filter: three 1-D ``avg_pool3d`` with replicate padding."""
    p = window // 2
    x = F.avg_pool3d(F.pad(x, (0, 0, 0, 0, p, p), mode="replicate"), (window, 1, 1), 1)
    x = F.avg_pool3d(F.pad(x, (0, 0, p, p, 0, 0), mode="replicate"), (1, window, 1), 1)
    return F.avg_pool3d(F.pad(x, (p, p, 0, 0, 0, 0), mode="replicate"), (1, 1, window), 1)


def former_lncc_loss(fixed: torch.Tensor, warped: torch.Tensor, window: int, eps: float = 1e-5) -> torch.Tensor:
    """The former training ``lncc`` loss: ``1 - mean squared local NCC`` on replicate-padded windows."""
    mf, mw = replicate_box(fixed, window), replicate_box(warped, window)
    cov = replicate_box(fixed * warped, window) - mf * mw
    vf = (replicate_box(fixed * fixed, window) - mf * mf).clamp_min(0)
    vw = (replicate_box(warped * warped, window) - mw * mw).clamp_min(0)
    return 1.0 - (cov * cov / (vf * vw + eps)).mean()


def former_cc_loss(fixed: torch.Tensor, warped: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The former training ``cc`` loss: ``1 - Pearson correlation`` per sample, averaged."""
    f, w = fixed.flatten(1), warped.flatten(1)
    f, w = f - f.mean(1, keepdim=True), w - w.mean(1, keepdim=True)
    return (1 - (f * w).mean(1) / torch.sqrt((f * f).mean(1) * (w * w).mean(1) + eps)).mean()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m training.studies.similarity_switch", description=__doc__.split("\n")[0])
    ap.add_argument("--window", type=int, default=7, help="local NCC window (voxels; the continual runs' 7)")
    a = ap.parse_args(argv)
    bundle = load_bundle()
    net = load_network(bundle, "cpu")
    brains = sorted((RESOURCES_DIR / "SampleData").glob("OASIS-TRT-20-1*/t1weighted_brain.nii.gz"))
    for fp, mp in itertools.permutations(brains, 2):
        f, m = sitk.ReadImage(str(fp), sitk.sitkFloat32), sitk.ReadImage(str(mp), sitk.sitkFloat32)
        prep = prepare_pair(f, m, bundle.input_spec, AffineConfig.from_card(bundle.card.get("affine_stage")))
        ft, mt = torch.from_numpy(prep.fixed)[None, None], torch.from_numpy(prep.moving)[None, None]
        with torch.no_grad():
            flow, _ = net(ft, mt)
            for name, x in (("registered", warp(mt, flow)), ("unregistered", mt)):
                print(json.dumps({
                    "pair": f"{Path(mp).parent.name} -> {Path(fp).parent.name}", "image": name,
                    "cc_former": round(float(former_cc_loss(ft, x)), 6),
                    "cc_now": round(float(Similarity("cc").loss(ft, x)), 6),
                    "lncc_former": round(float(former_lncc_loss(ft, x, a.window)), 6),
                    "ncc_now": round(float(Similarity("ncc", window=a.window).loss(ft, x)), 6)}))


if __name__ == "__main__":
    main()
