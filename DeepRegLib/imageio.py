"""Reading, writing and validating images with SimpleITK (physical geometry kept, LPS)."""
from __future__ import annotations

import os
from typing import Union

import numpy as np
import SimpleITK as sitk

from .errors import InputError

ImageLike = Union[str, os.PathLike, sitk.Image]


def read_image(path: str | os.PathLike, pixel_type: int = sitk.sitkFloat32) -> sitk.Image:
    """Read NIfTI / NRRD / MHA (any format SimpleITK reads), cast to ``pixel_type``."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"image file not found: {path}")
    try:
        image = sitk.ReadImage(path)
    except RuntimeError as exc:
        raise InputError(f"cannot read image {path}: {str(exc).strip().splitlines()[-1]}") from None
    if pixel_type is not None and image.GetNumberOfComponentsPerPixel() == 1:
        image = sitk.Cast(image, pixel_type)
    return image


def write_image(image: sitk.Image, path: str | os.PathLike) -> str:
    """Write ``image`` (creating parent folders); returns the path."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    sitk.WriteImage(image, path, useCompression=path.endswith((".gz", ".nrrd", ".mha")))
    return path


def as_image(image: ImageLike, name: str = "image", pixel_type: int = sitk.sitkFloat32) -> sitk.Image:
    """Accept a path or a SimpleITK image; return a validated 3D scalar image."""
    if isinstance(image, sitk.Image):
        img = image
        if pixel_type is not None and img.GetNumberOfComponentsPerPixel() == 1 \
                and img.GetPixelID() != pixel_type:
            img = sitk.Cast(img, pixel_type)
    elif isinstance(image, (str, os.PathLike)):
        img = read_image(image, pixel_type)
    else:
        raise InputError(f"{name}: expected a file path or SimpleITK.Image, got {type(image).__name__}")
    validate_image(img, name)
    return img


def validate_image(image: sitk.Image, name: str = "image") -> None:
    """Raise :class:`InputError` unless ``image`` is a non-empty, finite, 3D scalar volume."""
    if image.GetDimension() != 3:
        raise InputError(f"{name} must be a 3D volume; it has {image.GetDimension()} dimensions")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{name} must be a scalar volume; it has "
                         f"{image.GetNumberOfComponentsPerPixel()} components per voxel")
    size = image.GetSize()
    if min(size) < 2:
        raise InputError(f"{name} is not a 3D volume: its size is {size} (a 2D slice?)")
    if min(size) < 8:
        raise InputError(f"{name} is too small to register: size {size}, at least 8 voxels per axis needed")
    arr = sitk.GetArrayViewFromImage(image)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains NaN or infinite values")
    if float(arr.max()) == float(arr.min()):
        raise InputError(f"{name} is empty: every voxel has the value {float(arr.min()):g}")
