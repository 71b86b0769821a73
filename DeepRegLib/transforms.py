"""Fixed-to-moving mappings in physical space and their ITK representation.

A registration result maps a fixed LPS point ``p`` (mm) to a moving point

    T(p) = A(p + u(p))

where ``A`` is an affine transform and ``u`` a displacement (mm, LPS components) given by its
samples on an LPS-aligned grid (the network's grid, tapered to zero at its border; or, for a task
whose grid is the whole image, that grid continued a few voxels outward, see :func:`border_field`) and
defined between them as the **cubic B-spline that interpolates those samples** (zero outside the
grid).  As an ITK composite transform this is ``[A, BSplineTransform]`` (ITK applies the
last-added transform first), which is what :func:`to_sitk` builds and ``SimpleITK.Resample`` uses.

Why a B-spline rather than a displacement-field image: ITK interpolates a displacement field
linearly but 3D Slicer reads one back with cubic interpolation, so one ``.h5`` meant two
mappings (p99 0.3 mm apart).  A cubic B-spline transform is evaluated by the same formula by
ITK, by Slicer's ``vtkOrientedBSplineTransform`` and by :func:`bspline_displacement` here.

B-spline layout: the coefficient grid is the sample grid padded by one node on every side
(origin ``grid.origin - spacing``, size ``grid.size + 2``); the coefficients are zero on its outer
3 layers and the others solve the interpolation conditions exactly along each axis (so the spline
passes through every sample except the outer 2 layers, which lie in the border taper).  ITK's
valid region of an order-3 B-spline is continuous index ``1 <= t < n - 2`` of the coefficient
grid, i.e. exactly the sample grid, outside of which the displacement is zero.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import SimpleITK as sitk
import torch

from .grid import Grid
from .spatial import sample


def taper_border(displacement: np.ndarray, width: int = 3) -> np.ndarray:
    """Multiply a ``(z, y, x, 3)`` field by a ramp that is 0 on the outer voxel layer and 1 ``width`` voxels in."""
    out = displacement.copy()
    for axis in range(3):
        n = out.shape[axis]
        ramp = np.clip(np.minimum(np.arange(n), np.arange(n)[::-1]) / float(width), 0.0, 1.0)
        shape = [1, 1, 1, 1]
        shape[axis] = n
        out *= ramp.reshape(shape)
    return out


def extend_field(displacement: np.ndarray, grid: Grid, margin: int) -> tuple:
    """``(field, grid)`` continued ``margin`` voxels beyond every face of ``grid``: a new layer at
    distance ``d`` takes the nearest edge sample times ``(1 + cos(pi d / margin)) / 2``.

    Every sample of ``grid`` is kept, so the spline (:func:`bspline_coefficients`, whose border rule
    ignores only the outer 2 layers of the margin) passes through all of them, and the displacement
    falls smoothly to zero outside the box instead of inside it. For grids that are the whole image
    (CT crops, prostate ultrasound), where :func:`taper_border` would zero the image's border.
    """
    m = int(margin)
    if m < 2:
        raise ValueError(f"margin must be >= 2 voxels (the spline ignores the outer 2 layers), got {margin}")
    out = np.pad(np.asarray(displacement, dtype=np.float64), [(m, m)] * 3 + [(0, 0)], mode="edge")
    for axis in range(3):
        n = displacement.shape[axis]
        dist = np.concatenate([np.arange(m, 0, -1), np.zeros(n), np.arange(1, m + 1)])
        shape = [1, 1, 1, 1]
        shape[axis] = -1
        out *= (0.5 * (1.0 + np.cos(np.pi * dist / m))).reshape(shape)
    big = Grid(origin=tuple(o - m * s for o, s in zip(grid.origin, grid.spacing)), spacing=grid.spacing,
               size=tuple(int(n) + 2 * m for n in grid.size))
    return out, big


def border_field(displacement: np.ndarray, grid: Grid, margin: int = 0) -> tuple:
    """The ``(field, grid)`` a registration writes: ``margin`` 0 tapers the field to zero within the
    grid's outer 3 voxels (:func:`taper_border`; the brain models, whose grid border is background);
    ``margin`` > 0 keeps every sample and continues the field beyond the grid (:func:`extend_field`)."""
    if margin <= 0:
        return taper_border(displacement), grid
    return extend_field(displacement, grid, margin)


def flow_to_displacement(flow: torch.Tensor, grid: Grid) -> np.ndarray:
    """Voxel flow ``(1, 3, z, y, x)`` (channels along array axes) on ``grid`` -> LPS mm field ``(z, y, x, 3)``."""
    f = flow.detach().to("cpu", torch.float64)[0].numpy()
    sp = grid.spacing
    return np.stack([f[2] * sp[0], f[1] * sp[1], f[0] * sp[2]], axis=-1)


def displacement_transform(displacement: np.ndarray, grid: Grid) -> sitk.DisplacementFieldTransform:
    """An ITK displacement field transform (trilinear) from an LPS mm field ``(z, y, x, 3)`` on ``grid``."""
    img = grid.image_from_array(np.ascontiguousarray(displacement, dtype=np.float64), is_vector=True)
    return sitk.DisplacementFieldTransform(img)


_INVERSE_CACHE: dict = {}


def _interpolation_inverse(n: int) -> np.ndarray:
    """Inverse of the ``n x n`` tridiagonal matrix ``(1, 4, 1) / 6`` (cubic B-spline at the nodes, zero pad)."""
    if n not in _INVERSE_CACHE:
        m = (np.diag(np.full(n, 4.0)) + np.diag(np.ones(n - 1), 1) + np.diag(np.ones(n - 1), -1)) / 6.0
        _INVERSE_CACHE[n] = np.linalg.inv(m)
    return _INVERSE_CACHE[n]


def bspline_coefficients(displacement: np.ndarray) -> np.ndarray:
    """Cubic B-spline coefficients ``(z+2, y+2, x+2, 3)`` of samples ``(z, y, x, 3)``.

    The coefficients are zero on the outer 3 layers of the coefficient grid (the pad and the outer
    2 sample layers, inside the border taper), and the spline interpolates every other sample
    exactly.  With zero outer layers the spline is zero up to the grid edge, so ITK (zero outside
    its valid region) and VTK/Slicer (zero-padded coefficients) evaluate it identically everywhere.
    """
    c = np.asarray(displacement, dtype=np.float64)
    for axis in range(3):
        n = c.shape[axis]
        inner = np.take(c, np.arange(2, n - 2), axis=axis)
        solved = np.moveaxis(np.tensordot(_interpolation_inverse(n - 4), inner, axes=([1], [axis])), 0, axis)
        pad = [(0, 0)] * c.ndim
        pad[axis] = (2, 2)
        c = np.pad(solved, pad)
    return np.pad(c, [(1, 1), (1, 1), (1, 1), (0, 0)])


def coefficient_grid(grid: Grid) -> Grid:
    """The B-spline coefficient grid of samples on ``grid``: one node more on every side."""
    return Grid(origin=tuple(o - s for o, s in zip(grid.origin, grid.spacing)), spacing=grid.spacing,
                size=tuple(int(n) + 2 for n in grid.size))


def _cubic_weights(s: np.ndarray) -> list:
    """Cubic B-spline weights of the 4 nodes ``floor(t) - 1 .. floor(t) + 2`` at fraction ``s``."""
    s2, s3 = s * s, s * s * s
    return [(1.0 - s) ** 3 / 6.0, (3.0 * s3 - 6.0 * s2 + 4.0) / 6.0,
            (-3.0 * s3 + 3.0 * s2 + 3.0 * s + 1.0) / 6.0, s3 / 6.0]


def bspline_displacement(points: np.ndarray, coefficients: np.ndarray, cgrid: Grid) -> np.ndarray:
    """Evaluate the cubic B-spline ``(z, y, x, 3)`` coefficients on ``cgrid`` at LPS points ``(n, 3)``.

    Zero outside ITK's valid region (continuous index ``1 <= t < size - 2`` on every axis).
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    t = (pts - np.asarray(cgrid.origin)) / np.asarray(cgrid.spacing)  # continuous (i, j, k)
    size = np.asarray(cgrid.size)
    valid = np.all((t >= 1.0) & (t < size - 2.0), axis=1)
    out = np.zeros_like(pts)
    if not valid.any():
        return out
    t = t[valid]
    base = np.floor(t).astype(np.int64) - 1
    w = [_cubic_weights(t[:, a] - np.floor(t[:, a])) for a in range(3)]  # per axis (i, j, k): 4 weights
    acc = np.zeros((len(t), 3))
    for c in range(4):          # k offset (array axis 0)
        kk = base[:, 2] + c
        for b in range(4):      # j offset
            jj = base[:, 1] + b
            wkb = w[2][c] * w[1][b]
            for a in range(4):  # i offset
                acc += (wkb * w[0][a])[:, None] * coefficients[kk, jj, base[:, 0] + a]
    out[valid] = acc
    return out


def bspline_transform(displacement: np.ndarray, grid: Grid,
                      coefficients: Optional[np.ndarray] = None) -> sitk.BSplineTransform:
    """The ITK order-3 B-spline transform interpolating an LPS mm field ``(z, y, x, 3)`` sampled on ``grid``."""
    coef = bspline_coefficients(displacement) if coefficients is None else coefficients
    cg = coefficient_grid(grid)
    images = []  # one coefficient image per LPS component, on the coefficient grid (identity direction)
    for c in range(3):
        img = sitk.GetImageFromArray(np.ascontiguousarray(coef[..., c], dtype=np.float64))
        img.SetOrigin(tuple(float(v) for v in cg.origin))
        img.SetSpacing(tuple(float(v) for v in cg.spacing))
        images.append(img)
    # the same fixed parameters and parameters as SetFixedParameters/SetParameters, without a
    # ~650k-float Python tuple (that conversion cost ~0.15 s per transform)
    return sitk.BSplineTransform(images, 3)


def to_sitk(affine: sitk.Transform, displacement: Optional[np.ndarray], grid: Optional[Grid],
            coefficients: Optional[np.ndarray] = None) -> sitk.CompositeTransform:
    """Composite ``T(p) = A(p + u(p))`` (fixed -> moving), ``u`` the B-spline through the samples."""
    comp = sitk.CompositeTransform(3)
    comp.AddTransform(sitk.AffineTransform(affine) if isinstance(affine, sitk.AffineTransform) else affine)
    if displacement is not None:
        comp.AddTransform(bspline_transform(displacement, grid, coefficients))
    return comp


def write_transform(transform: sitk.Transform, path: str | os.PathLike) -> str:
    """Write an ITK transform file (``.h5``/``.tfm``/``.txt``); creates the parent folder. Atomic: written
    under a temporary name in the same folder and renamed, so an interrupted write leaves any previous
    file intact (:func:`DeepRegLib.safeio.atomic_write`)."""
    from .errors import InputError
    from .safeio import atomic_write
    path = os.fspath(path)
    try:
        atomic_write(path, lambda tmp: sitk.WriteTransform(transform, tmp))
    except RuntimeError as exc:
        raise InputError(f"cannot write the transform {path}: {str(exc).strip().splitlines()[-1]}") from None
    return path


def read_transform(path: str | os.PathLike, name: str = "transform") -> sitk.Transform:
    """Read a 3D ITK transform file; :class:`~DeepRegLib.errors.InputError` if it is missing or unreadable."""
    from .errors import InputError
    from .safeio import check_input_file
    path = check_input_file(path, name, kind="transform file")
    try:
        t = sitk.ReadTransform(path)
    except RuntimeError as exc:
        raise InputError(f"cannot read the {name} {path}: not an ITK transform file "
                         f"({str(exc).strip().splitlines()[-1][:200]})") from None
    if t.GetDimension() != 3:
        raise InputError(f"the {name} {path} is {t.GetDimension()}D; a 3D transform is needed")
    return t


def affine_matrix(affine: sitk.Transform) -> np.ndarray:
    """4x4 homogeneous matrix of a linear ITK transform (LPS, fixed -> moving)."""
    from .affine import to_affine
    a = to_affine(affine)
    m = np.eye(4)
    m[:3, :3] = np.asarray(a.GetMatrix()).reshape(3, 3)
    c = np.asarray(a.GetCenter())
    m[:3, 3] = np.asarray(a.GetTranslation()) + c - m[:3, :3] @ c
    return m


def map_points(points: np.ndarray, affine: sitk.Transform, displacement: Optional[np.ndarray],
               grid: Optional[Grid], coefficients: Optional[np.ndarray] = None) -> np.ndarray:
    """The engine's own evaluation of ``T`` at LPS points ``(..., 3)`` (cubic B-spline, zero outside grid).

    ``coefficients``: :func:`bspline_coefficients` of ``displacement`` if already computed.
    """
    pts = np.asarray(points, dtype=np.float64)
    flat = pts.reshape(-1, 3)
    if displacement is not None:
        coef = bspline_coefficients(displacement) if coefficients is None else coefficients
        cg = coefficient_grid(grid)
        u = np.zeros_like(flat)
        for start in range(0, len(flat), 1 << 18):  # bounded memory
            u[start:start + (1 << 18)] = bspline_displacement(flat[start:start + (1 << 18)], coef, cg)
        flat = flat + u
    m = affine_matrix(affine)
    out = flat @ m[:3, :3].T + m[:3, 3]
    return out.reshape(pts.shape)


def index_to_physical(image: sitk.Image) -> np.ndarray:
    """4x4 matrix mapping (i, j, k, 1) voxel indices of ``image`` to LPS mm."""
    d = np.asarray(image.GetDirection()).reshape(3, 3)
    s = np.asarray(image.GetSpacing())
    m = np.eye(4)
    m[:3, :3] = d * s[None, :]
    m[:3, 3] = image.GetOrigin()
    return m


def engine_warp(moving: sitk.Image, reference: sitk.Image, affine: sitk.Transform,
                displacement: Optional[np.ndarray], grid: Optional[Grid], nearest: bool = False,
                default: float = 0.0) -> sitk.Image:
    """Resample ``moving`` onto ``reference`` through ``T`` with torch (independent of ITK's resampler)."""
    ref_m = index_to_physical(reference)
    size = reference.GetSize()
    kk, jj, ii = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in size[::-1]], indexing="ij")
    ijk = np.stack([ii, jj, kk, np.ones_like(ii)], axis=-1)
    phys = (ijk @ ref_m.T)[..., :3]
    mov_pts = map_points(phys, affine, displacement, grid)
    inv = np.linalg.inv(index_to_physical(moving))
    midx = mov_pts @ inv[:3, :3].T + inv[:3, 3]  # continuous (i, j, k) of moving
    vol = torch.from_numpy(sitk.GetArrayFromImage(moving).astype(np.float32))[None, None]
    coords = torch.from_numpy(np.moveaxis(midx[..., ::-1], -1, 0).astype(np.float32).copy())[None]
    out = sample(vol - default, coords, mode="nearest" if nearest else "bilinear", padding_mode="zeros") + default
    img = sitk.GetImageFromArray(out[0, 0].numpy())
    img.CopyInformation(reference)
    return img
