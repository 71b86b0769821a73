"""PNG pictures for people: checkerboard and difference overlays of fixed vs. moving.

Written with SimpleITK's PNG writer (no plotting dependency).  Images are reoriented
to LPS for display: axial (anterior up, radiological left-right), coronal and sagittal
(superior up).
"""
from __future__ import annotations

import os
from typing import List, Sequence, Tuple

import numpy as np
import SimpleITK as sitk


#: pictures of small images are drawn at least this many pixels along the image's longest side
MIN_PIXELS = 192


def display_spacing(image: sitk.Image) -> float:
    """Isotropic pixel size (mm) for drawing ``image``: its finest spacing, finer still for a small image
    (at least :data:`MIN_PIXELS` pixels along its longest physical side)."""
    extent = max(n * s for n, s in zip(image.GetSize(), image.GetSpacing()))
    return min(min(image.GetSpacing()), extent / MIN_PIXELS)


def _lps_array(image: sitk.Image, spacing: float) -> np.ndarray:
    """``image`` reoriented to LPS, on an isotropic grid of ``spacing`` mm (linear), as a (S, P, L) array."""
    lps = sitk.DICOMOrient(image, "LPS")
    if any(abs(s - spacing) > 1e-6 * spacing for s in lps.GetSpacing()):
        size = [max(1, int(round(n * s / spacing))) for n, s in zip(lps.GetSize(), lps.GetSpacing())]
        # the new grid covers the same physical box: its first voxel centre is half a new voxel inside it
        corner = np.array(lps.TransformContinuousIndexToPhysicalPoint([-0.5] * 3))
        direction = np.array(lps.GetDirection()).reshape(3, 3)
        origin = corner + direction @ np.full(3, spacing / 2)
        lps = sitk.Resample(lps, size, sitk.Transform(), sitk.sitkLinear, tuple(origin), (spacing,) * 3,
                            lps.GetDirection(), 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(lps).astype(np.float32)


def _views(arr: np.ndarray) -> List[np.ndarray]:
    k, j, i = (n // 2 for n in arr.shape)
    return [arr[k], arr[:, j, :][::-1], arr[:, :, i][::-1]]


def _scale(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1)


def checkerboard(a: np.ndarray, b: np.ndarray, square: int = 16) -> np.ndarray:
    yy, xx = np.indices(a.shape)
    return np.where(((yy // square) + (xx // square)) % 2 == 0, a, b)


def _pad_to(tiles: Sequence[np.ndarray], height: int) -> List[np.ndarray]:
    return [np.pad(t, ((0, height - t.shape[0]), (0, 2)), constant_values=0) for t in tiles]


def overlay_panel(fixed: sitk.Image, rows: Sequence[Tuple[str, sitk.Image]], mode: str = "checkerboard") -> np.ndarray:
    """uint8 RGB panel: one row per (title, image on the fixed grid), three orthogonal views each, drawn
    with square pixels of :func:`display_spacing` mm (small or anisotropic images are resampled linearly).

    ``mode='checkerboard'``: fixed and image alternate in squares (fixed grey, image tinted);
    ``mode='difference'``: |fixed - image| in a hot scale.
    """
    spacing = display_spacing(fixed)  # one pixel size for every row: all images are on the fixed grid
    f = _lps_array(fixed, spacing)
    lo, hi = float(f.min()), float(np.percentile(f[f > f.min()] if np.any(f > f.min()) else f, 99.5))
    out_rows = []
    for _, img in rows:
        m = _lps_array(img, spacing)
        tiles = []
        for fv, mv in zip(_views(f), _views(m)):
            fs, ms = _scale(fv, lo, hi), _scale(mv, lo, hi)
            if mode == "difference":
                d = np.abs(fs - ms)
                rgb = np.stack([np.clip(3 * d, 0, 1), np.clip(3 * d - 1, 0, 1), np.clip(3 * d - 2, 0, 1)], -1)
            else:
                yy, xx = np.indices(fs.shape)
                sel = ((yy // 16) + (xx // 16)) % 2 == 0
                rgb = np.where(sel[..., None], np.stack([fs] * 3, -1), np.stack([ms, ms * 0.85, ms * 0.55], -1))
            tiles.append(rgb)
        h = max(t.shape[0] for t in tiles)
        padded = [np.pad(t, ((0, h - t.shape[0]), (0, 4), (0, 0))) for t in tiles]
        out_rows.append(np.concatenate(padded, axis=1))
    w = max(r.shape[1] for r in out_rows)
    out_rows = [np.pad(r, ((0, 4), (0, w - r.shape[1]), (0, 0))) for r in out_rows]
    return (np.concatenate(out_rows, axis=0) * 255).astype(np.uint8)


def write_png(rgb: np.ndarray, path: str) -> str:
    """Write an ``(H, W, 3)`` uint8 array as PNG."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    img = sitk.GetImageFromArray(rgb, isVector=True)
    sitk.WriteImage(img, path)
    return path
