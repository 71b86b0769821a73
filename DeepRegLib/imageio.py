"""Reading, writing and validating images with SimpleITK (physical geometry kept, LPS).

Reading checks what SimpleITK's readers let through: a NIfTI file whose voxel data is shorter than
its header promises (a truncated ``.nii`` or ``.nii.gz`` reads with the missing voxels as 0), NaN or
infinite values in a NIfTI (the reader turns them into 0), and a voxel size (``pixdim``) that is 0
or negative. Writing is atomic (:mod:`DeepRegLib.safeio`).
"""
from __future__ import annotations

import gzip
import math
import os
import struct
import warnings
import zlib
from typing import Optional, Union

import numpy as np
import SimpleITK as sitk

from .errors import InputError, InputWarning
from .safeio import atomic_write, check_input_file

ImageLike = Union[str, os.PathLike, sitk.Image]

#: NIfTI datatype codes of floating-point voxels (may hold NaN / Inf) and their numpy types
_NIFTI_FLOATS = {16: "f4", 64: "f8"}
#: voxels beyond the robust range (0.1th-99.9th percentile) by more than this many times its width are
#: clipped for the registration, with a warning (a single 1e30 voxel wrecked the affine stage)
OUTLIER_FACTOR = 100.0
_CHUNK = 1 << 22


def _nifti_header(head: bytes) -> Optional[dict]:
    """The fields of a NIfTI-1 or NIfTI-2 header that tell the data's length, type and voxel size."""
    for order in "<>":
        if len(head) >= 348 and struct.unpack_from(order + "i", head, 0)[0] == 348:
            dim = struct.unpack_from(order + "8h", head, 40)
            return {"order": order, "dim": dim, "datatype": struct.unpack_from(order + "h", head, 70)[0],
                    "bitpix": struct.unpack_from(order + "h", head, 72)[0],
                    "pixdim": struct.unpack_from(order + "8f", head, 76),
                    "vox_offset": struct.unpack_from(order + "f", head, 108)[0], "single": head[344:347] == b"n+1"}
        if len(head) >= 540 and struct.unpack_from(order + "i", head, 0)[0] == 540:
            return {"order": order, "dim": struct.unpack_from(order + "8q", head, 16),
                    "datatype": struct.unpack_from(order + "h", head, 12)[0],
                    "bitpix": struct.unpack_from(order + "h", head, 14)[0],
                    "pixdim": struct.unpack_from(order + "8d", head, 104),
                    "vox_offset": struct.unpack_from(order + "q", head, 168)[0], "single": head[4:7] == b"n+2"}
    return None


class _FiniteCounter:
    """Counts non-finite values in a byte stream of voxels starting at ``start`` and ``length`` bytes long."""

    def __init__(self, dtype: Optional[str], start: int, length: int) -> None:
        self.dtype, self.start, self.end = dtype, start, start + length
        self.pos, self.carry, self.bad = 0, b"", 0

    def feed(self, chunk: bytes) -> None:
        if self.dtype is None:
            self.pos += len(chunk)
            return
        lo, hi = max(self.start - self.pos, 0), min(self.end - self.pos, len(chunk))
        self.pos += len(chunk)
        if hi <= lo:
            return
        data = self.carry + chunk[lo:hi]
        item = np.dtype(self.dtype).itemsize
        n = len(data) // item * item
        self.carry = data[n:]
        if n:
            self.bad += int(np.count_nonzero(~np.isfinite(np.frombuffer(data[:n], self.dtype))))


def _gunzip_length(path: str, feed) -> int:
    """Bytes a gzip file decompresses to (every member), each chunk passed to ``feed``; a stream that
    ends early (a truncated file) gives what it held."""
    total = 0
    d = zlib.decompressobj(wbits=31)
    with open(path, "rb") as fh:
        while True:
            raw = fh.read(1 << 20)
            if not raw:
                break
            while raw:
                out = d.decompress(raw, _CHUNK)
                total += len(out)
                feed(out)
                if d.eof:  # a next gzip member, or trailing bytes
                    raw = d.unused_data
                    if not raw.startswith(b"\x1f\x8b"):
                        return total
                    d = zlib.decompressobj(wbits=31)
                else:
                    raw = d.unconsumed_tail
    return total


def check_nifti(path: str, name: str = "image") -> None:
    """Raise :class:`InputError` for a damaged NIfTI file (``.nii`` / ``.nii.gz``; other files pass):
    a truncated file, a voxel size (pixdim) that is 0 or negative, or NaN / infinite voxel values."""
    low = path.lower()
    gz = low.endswith(".nii.gz")
    if not (gz or low.endswith(".nii")):
        return
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as fh:
            head = fh.read(540)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"cannot read {name} {path}: not a valid {'gzip-compressed ' if gz else ''}file "
                         f"({str(exc).strip() or type(exc).__name__})") from None
    h = _nifti_header(head)
    if h is None or not h["single"]:
        return  # not a single-file NIfTI: the reader decides
    ndim = int(h["dim"][0])
    dims = [int(d) for d in h["dim"][1:ndim + 1]] if 1 <= ndim <= 7 else []
    if not dims or min(dims) < 1 or h["bitpix"] <= 0:
        raise InputError(f"{name} {path} has a damaged NIfTI header (dim {list(h['dim'])}, bitpix {h['bitpix']})")
    spacing = [float(v) for v in h["pixdim"][1:min(ndim, 3) + 1]]
    if any(not math.isfinite(v) or v <= 0 for v in spacing):
        raise InputError(f"{name} {path}: its header gives the voxel size {spacing} mm (pixdim); a voxel size "
                         "must be positive, so the header is damaged: fix it (e.g. set pixdim to the true "
                         "spacing with nibabel) and check the image's orientation too")
    start = int(h["vox_offset"])
    length = int(np.prod(dims, dtype=np.int64)) * int(h["bitpix"]) // 8
    expected = start + length
    dtype = _NIFTI_FLOATS.get(int(h["datatype"]))
    dtype = None if dtype is None else h["order"] + dtype
    counter = _FiniteCounter(dtype, start, length)
    if not gz:
        have = os.path.getsize(path)
        if have >= expected and dtype is not None:
            data = np.memmap(path, dtype=dtype, mode="r", offset=start, shape=(length // np.dtype(dtype).itemsize,))
            for i in range(0, data.size, _CHUNK):
                counter.bad += int(np.count_nonzero(~np.isfinite(data[i:i + _CHUNK])))
            del data
    else:
        have = None
        if dtype is None:  # integer voxels: the gzip trailer's length (mod 2^32) is enough when it agrees
            with open(path, "rb") as fh:
                fh.seek(-4, os.SEEK_END)
                if struct.unpack("<I", fh.read(4))[0] == expected % (1 << 32):
                    have = expected
        if have is None:
            try:
                have = _gunzip_length(path, counter.feed)
            except zlib.error as exc:
                raise InputError(f"cannot read {name} {path}: its compressed data is damaged ({exc})") from None
    if have < expected:
        raise InputError(f"{name} {path} is truncated: its header promises {expected} bytes, the file holds "
                         f"{'only ' + str(have) if have >= 0 else 'fewer'} (an interrupted copy or download?)")
    if counter.bad:
        raise InputError(f"{name} {path} contains {counter.bad} NaN or infinite voxel values (the NIfTI reader "
                         "would silently turn them into 0); replace them with a number first")


def read_image(path: str | os.PathLike, pixel_type: int = sitk.sitkFloat32, name: str = "image") -> sitk.Image:
    """Read NIfTI / NRRD / MHA (any format SimpleITK reads) as a 3D image, cast to ``pixel_type``."""
    path = check_input_file(path, name, kind="image file")
    check_nifti(path, name)
    try:
        image = sitk.ReadImage(path)
    except RuntimeError as exc:
        raise InputError(f"cannot read {name} {path}: {str(exc).strip().splitlines()[-1]}") from None
    check_dimension(image, name)
    if pixel_type is not None and image.GetNumberOfComponentsPerPixel() == 1 and image.GetPixelID() != pixel_type:
        image = sitk.Cast(image, pixel_type)
    return image


def write_image(image: sitk.Image, path: str | os.PathLike) -> str:
    """Write ``image`` (creating parent folders) atomically: under a temporary name, then renamed; returns the path."""
    path = os.fspath(path)
    compress = path.lower().endswith((".gz", ".nrrd", ".mha"))
    try:
        atomic_write(path, lambda tmp: sitk.WriteImage(image, tmp, useCompression=compress))
    except RuntimeError as exc:
        raise InputError(f"cannot write {path}: {str(exc).strip().splitlines()[-1]}") from None
    return path


def as_image(image: ImageLike, name: str = "image", pixel_type: int = sitk.sitkFloat32) -> sitk.Image:
    """Accept a path or a SimpleITK image; return a validated 3D scalar image.

    An intensity image (``pixel_type`` float) with a few extreme voxels (:data:`OUTLIER_FACTOR`) is
    returned with those voxels clipped, and an :class:`~DeepRegLib.errors.InputWarning` says so.
    """
    if isinstance(image, sitk.Image):
        img = image
        check_dimension(img, name)
        if pixel_type is not None and img.GetNumberOfComponentsPerPixel() == 1 \
                and img.GetPixelID() != pixel_type:
            img = sitk.Cast(img, pixel_type)
    elif isinstance(image, (str, os.PathLike)):
        img = read_image(image, pixel_type, name)
    else:
        raise InputError(f"{name}: expected a file path or SimpleITK.Image, got {type(image).__name__}")
    validate_image(img, name)
    if pixel_type in (sitk.sitkFloat32, sitk.sitkFloat64):
        img = clip_extreme_values(img, name)
    return img


def check_dimension(image: sitk.Image, name: str = "image") -> None:
    """:class:`InputError` unless ``image`` has 3 dimensions (checked before any cast or filter)."""
    if image.GetDimension() != 3:
        extra = " (a time series or a stack of volumes? pick one volume)" if image.GetDimension() == 4 else ""
        raise InputError(f"{name} must be a 3D volume; it has {image.GetDimension()} dimensions{extra}")


def validate_image(image: sitk.Image, name: str = "image") -> None:
    """Raise :class:`InputError` unless ``image`` is a non-empty, finite, 3D scalar volume with a valid geometry."""
    check_dimension(image, name)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{name} must be a scalar volume; it has "
                         f"{image.GetNumberOfComponentsPerPixel()} components per voxel")
    size = image.GetSize()
    if min(size) < 2:
        raise InputError(f"{name} is not a 3D volume: its size is {size} (a 2D slice?)")
    if min(size) < 8:
        raise InputError(f"{name} is too small to register: size {size}, at least 8 voxels per axis needed")
    spacing = image.GetSpacing()
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"{name} has the voxel size {spacing} mm; it must be positive: check the image header")
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    if not np.all(np.isfinite(direction)) or not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
        raise InputError(f"{name} has an invalid direction matrix {tuple(round(float(v), 4) for v in direction.ravel())} "
                         "(not a rotation or reflection: sheared or degenerate): check the image header")
    arr = sitk.GetArrayViewFromImage(image)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains NaN or infinite values")
    if float(arr.max()) == float(arr.min()):
        raise InputError(f"{name} is empty: every voxel has the value {float(arr.min()):g}")


def robust_range(arr: np.ndarray, samples: int = 1 << 18) -> tuple:
    """The 0.1th and 99.9th percentiles of ``arr`` (of an even subsample of at most ``samples`` voxels)."""
    flat = arr.reshape(-1)
    step = max(1, flat.size // samples)
    lo, hi = np.percentile(flat[::step], [0.1, 99.9])
    return float(lo), float(hi)


def clip_extreme_values(image: sitk.Image, name: str = "image") -> sitk.Image:
    """``image``, or a copy with voxels far beyond its robust range clipped (an :class:`InputWarning` says so)."""
    arr = sitk.GetArrayViewFromImage(image)
    vmin, vmax = float(arr.min()), float(arr.max())
    lo, hi = robust_range(arr)
    width = hi - lo
    if width <= 0:
        return image
    low, high = lo - OUTLIER_FACTOR * width, hi + OUTLIER_FACTOR * width
    if vmin >= low and vmax <= high:
        return image
    clipped = np.clip(arr, low, high).astype(arr.dtype, copy=False)
    n = int(np.count_nonzero((arr < low) | (arr > high)))
    out = sitk.GetImageFromArray(clipped)
    out.CopyInformation(image)
    warnings.warn(f"{name} has {n} voxel(s) with extreme values (from {vmin:.4g} to {vmax:.4g}; 99.8 % of the "
                  f"voxels lie in [{lo:.4g}, {hi:.4g}]): clipped to [{low:.4g}, {high:.4g}] for the registration; "
                  "check the image for corrupt voxels", InputWarning, stacklevel=3)
    return out


def check_same_grid(a: sitk.Image, b: sitk.Image, what: str = "the two images") -> None:
    """:class:`InputError` unless ``a`` and ``b`` share one voxel grid (size, origin, spacing, direction)."""
    problems = []
    if a.GetSize() != b.GetSize():
        problems.append(f"size {a.GetSize()} vs {b.GetSize()}")
    sp = min(min(a.GetSpacing()), min(b.GetSpacing()))
    if not np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-4, atol=1e-6):
        problems.append(f"spacing {tuple(round(v, 4) for v in a.GetSpacing())} vs "
                        f"{tuple(round(v, 4) for v in b.GetSpacing())} mm")
    shift = float(np.linalg.norm(np.subtract(a.GetOrigin(), b.GetOrigin())))
    if shift > 0.01 * sp:
        problems.append(f"origins {shift:.2f} mm apart")
    if not np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-4):
        problems.append("different direction matrices")
    if problems:
        raise InputError(f"{what} are not on the same voxel grid ({'; '.join(problems)}): comparing their arrays "
                         "would be meaningless; resample one onto the other first (deepreg warp --labels "
                         "--reference ...)")
