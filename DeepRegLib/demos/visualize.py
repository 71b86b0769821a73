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

from .bitmap_font import GLYPH_HEIGHT, GLYPH_WIDTH, draw_text


#: pictures of small images are drawn at least this many pixels along the image's longest side
MIN_PIXELS = 192


def display_spacing(image: sitk.Image) -> float:
    """Isotropic pixel size (mm) for drawing ``image``: its finest spacing, finer still for a small image
    (at least :data:`MIN_PIXELS` pixels along its longest physical side)."""
    extent = max(n * s for n, s in zip(image.GetSize(), image.GetSpacing()))
    return min(min(image.GetSpacing()), extent / MIN_PIXELS)


def _lps_array(image: sitk.Image, spacing: float) -> np.ndarray:
    """``image`` reoriented to LPS, on an isotropic grid of ``spacing`` mm (linear), as a (S, P, L) array."""
    return _lps_image(image, spacing)[0]


def _lps_image(image: sitk.Image, spacing: float) -> Tuple[np.ndarray, np.ndarray]:
    """(array, origin): :func:`_lps_array` and the LPS position (mm) of its voxel (0, 0, 0); the grid's axes are
    the LPS axes (x = L, y = P, z = S), so voxel (k, j, i) lies at ``origin + spacing * (i, j, k)``."""
    lps = sitk.DICOMOrient(image, "LPS")
    if any(abs(s - spacing) > 1e-6 * spacing for s in lps.GetSpacing()):
        size = [max(1, int(round(n * s / spacing))) for n, s in zip(lps.GetSize(), lps.GetSpacing())]
        # the new grid covers the same physical box: its first voxel centre is half a new voxel inside it
        corner = np.array(lps.TransformContinuousIndexToPhysicalPoint([-0.5] * 3))
        direction = np.array(lps.GetDirection()).reshape(3, 3)
        origin = corner + direction @ np.full(3, spacing / 2)
        lps = sitk.Resample(lps, size, sitk.Transform(), sitk.sitkLinear, tuple(origin), (spacing,) * 3,
                            lps.GetDirection(), 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(lps).astype(np.float32), np.asarray(lps.GetOrigin(), float)


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


#: pixels of the label strips (row titles, column titles) and of the colour bar
LABEL_STRIP, BAR_WIDTH = 18, 14


def _foreground_crop(arr: np.ndarray, margin: int) -> Tuple[slice, slice, slice]:
    """Slices of ``arr`` around its voxels above its minimum, ``margin`` voxels wider (the whole array if none)."""
    inside = arr > arr.min()
    if not inside.any():
        return (slice(0, arr.shape[0]), slice(0, arr.shape[1]), slice(0, arr.shape[2]))
    out = []
    for ax in range(3):
        idx = np.nonzero(inside.any(axis=tuple(a for a in range(3) if a != ax)))[0]
        out.append(slice(max(0, int(idx[0]) - margin), min(arr.shape[ax], int(idx[-1]) + 1 + margin)))
    return tuple(out)


def _view_titles(shape: Sequence[int], origin: np.ndarray, spacing: float) -> List[str]:
    """Column titles of :func:`_views`: each view's plane and the LPS position of its slice (mm)."""
    k, j, i = (n // 2 for n in shape)
    z, y, x = origin[2] + spacing * k, origin[1] + spacing * j, origin[0] + spacing * i
    return [f"axial S {z:.0f} mm", f"coronal P {y:.0f} mm", f"sagittal L {x:.0f} mm"]


def _strip(width: int, text: str, centres: Sequence[int] = ()) -> np.ndarray:
    """A dark ``(LABEL_STRIP, width, 3)`` strip with ``text`` at the left, or one text per centre."""
    strip = np.full((LABEL_STRIP, width, 3), 0.12, np.float32)
    texts = text if centres else [text]
    for n, t in enumerate(texts):
        left = 4 if not centres else max(0, centres[n] - GLYPH_WIDTH * len(t) // 2)
        draw_text(strip, t, 3, left)
    return strip


def _colour_bar(height: int) -> np.ndarray:
    """The difference scale: ``|fixed - image|`` of normalised intensities, 0 (bottom) to 1 (top), labelled."""
    d = np.linspace(1.0, 0.0, height)[:, None] * np.ones((1, BAR_WIDTH))
    bar = _hot(d)
    out = np.full((height, BAR_WIDTH + 6 + GLYPH_WIDTH * 3, 3), 0.12, np.float32)
    out[:, :BAR_WIDTH] = bar
    draw_text(out, "1", 0, BAR_WIDTH + 4)
    draw_text(out, ".5", height // 2 - GLYPH_HEIGHT // 2, BAR_WIDTH + 4)
    draw_text(out, "0", height - GLYPH_HEIGHT, BAR_WIDTH + 4)
    return out


def _hot(d: np.ndarray) -> np.ndarray:
    """Black-red-yellow-white scale of ``d`` in [0, 1]."""
    return np.stack([np.clip(3 * d, 0, 1), np.clip(3 * d - 1, 0, 1), np.clip(3 * d - 2, 0, 1)], -1)


def overlay_panel(fixed: sitk.Image, rows: Sequence[Tuple[str, sitk.Image]], mode: str = "checkerboard",
                  labels: bool = True, crop: bool = True) -> np.ndarray:
    """uint8 RGB panel: one row per (title, image on the fixed grid), three orthogonal views each, drawn
    with square pixels of :func:`display_spacing` mm (small or anisotropic images are resampled linearly).

    Each row is headed by its title; the top strip names each column's plane and the LPS position of its
    slice. ``mode='checkerboard'``: fixed and image alternate in squares (fixed grey, image tinted);
    ``mode='difference'``: |fixed - image| of the normalised intensities in a hot scale, with its colour bar.
    ``labels=False`` leaves out titles and colour bar; ``crop=False`` keeps the whole fixed box (by default
    the views are cropped to the fixed image's foreground, 8 mm wider).
    """
    spacing = display_spacing(fixed)  # one pixel size for every row: all images are on the fixed grid
    f, origin = _lps_image(fixed, spacing)
    crop = (_foreground_crop(f, margin=max(2, int(round(8.0 / spacing)))) if crop else
            (slice(0, f.shape[0]), slice(0, f.shape[1]), slice(0, f.shape[2])))
    f = f[crop]
    origin = origin + spacing * np.array([crop[2].start, crop[1].start, crop[0].start], float)
    lo, hi = float(f.min()), float(np.percentile(f[f > f.min()] if np.any(f > f.min()) else f, 99.5))
    out_rows, widths = [], []
    for title, img in rows:
        m = _lps_array(img, spacing)[crop]
        tiles = []
        for fv, mv in zip(_views(f), _views(m)):
            fs, ms = _scale(fv, lo, hi), _scale(mv, lo, hi)
            if mode == "difference":
                rgb = _hot(np.abs(fs - ms))
            else:
                yy, xx = np.indices(fs.shape)
                sel = ((yy // 16) + (xx // 16)) % 2 == 0
                rgb = np.where(sel[..., None], np.stack([fs] * 3, -1), np.stack([ms, ms * 0.85, ms * 0.55], -1))
            tiles.append(rgb)
        h = max(t.shape[0] for t in tiles)
        widths = [t.shape[1] + 4 for t in tiles]
        padded = [np.pad(t, ((0, h - t.shape[0]), (0, 4), (0, 0))) for t in tiles]
        row = np.concatenate(padded, axis=1)
        if labels and mode == "difference":
            row = np.concatenate([row, _colour_bar(h)], axis=1)
        out_rows.append(np.concatenate([_strip(row.shape[1], title), row], axis=0) if labels else row)
    w = max(r.shape[1] for r in out_rows)
    centres = list(np.cumsum([0] + widths[:-1]) + np.asarray(widths) // 2)
    out_rows = [np.pad(r, ((0, 4), (0, w - r.shape[1]), (0, 0))) for r in out_rows]
    if labels:
        out_rows.insert(0, _strip(w, _view_titles(f.shape, origin, spacing), centres))
    return (np.clip(np.concatenate(out_rows, axis=0), 0, 1) * 255).astype(np.uint8)


def write_png(rgb: np.ndarray, path: str) -> str:
    """Write an ``(H, W, 3)`` uint8 array as PNG."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    img = sitk.GetImageFromArray(rgb, isVector=True)
    sitk.WriteImage(img, path)
    return path
