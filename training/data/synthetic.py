"""Synthetic pairs for smoke runs and tests: seconds, no data files.

Each pair is a small label map of ellipsoids (labels 1-4 "subcortical" and 1001-1002
"cortical", like the Mindboggle numbering) turned into an image with one intensity per
label, and a moving copy warped by a smooth random displacement. Deterministic in
``seed``. Grids are LPS-aligned, ``spacing`` mm.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from DeepRegLib.grid import Grid
from DeepRegLib.spatial import warp

from .base import PairSet

LABELS = [1, 2, 3, 4, 1001, 1002]


def _label_map(rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    lab = np.zeros(shape, np.int16)
    for value in LABELS:
        c = rng.uniform(-0.5, 0.5, 3)
        r = rng.uniform(0.15, 0.35, 3)
        inside = ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 < 1
        lab[inside] = value
    return lab


def _smooth_field(rng: np.random.Generator, shape: Sequence[int], amplitude: float) -> torch.Tensor:
    coarse = torch.from_numpy(rng.normal(0, amplitude, (1, 3, 4, 4, 4)).astype(np.float32))
    return torch.nn.functional.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=True)


def build(n_pairs: int, size: Sequence[int] = (32, 32, 32), spacing: float = 2.0, seed: int = 0,
          amplitude: float = 2.0) -> PairSet:
    """``n_pairs`` synthetic pairs on a ``size`` (x, y, z) grid; the moving image is a warped fixed image."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in size)[::-1]
    grid = Grid(origin=(0.0, 0.0, 0.0), spacing=(float(spacing),) * 3, size=tuple(int(s) for s in size))
    fixed, moving, fl, ml = [], [], [], []
    for _ in range(n_pairs):
        lab = _label_map(rng, shape)
        intensity = {0: 0.0, **{v: rng.uniform(0.2, 1.0) for v in LABELS}}
        img = np.vectorize(intensity.get)(lab).astype(np.float32)
        flow = _smooth_field(rng, shape, amplitude)
        t_img = torch.from_numpy(img)[None, None]
        t_lab = torch.from_numpy(lab.astype(np.float32))[None, None]
        fixed.append(img.astype(np.float16))
        fl.append(lab)
        moving.append(warp(t_img, flow)[0, 0].numpy().astype(np.float16))
        ml.append(warp(t_lab, flow, mode="nearest")[0, 0].numpy().astype(np.int16))
    return PairSet(np.stack(fixed), np.stack(moving), [grid] * n_pairs, np.stack(fl), np.stack(ml),
                   [(i, i) for i in range(n_pairs)])
