"""Small image filters in torch (the training data needs no scipy)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def gaussian_filter(array: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a 3D array, ``sigma`` in voxels (kernel radius 3 sigma, edges replicated)."""
    if sigma <= 0:
        return np.asarray(array, np.float32).copy()
    r = max(1, int(np.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-x * x / (2 * sigma * sigma))
    k = k / k.sum()
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = 2 * r + 1
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = r
        t = F.conv3d(F.pad(t, pad, mode="replicate"), k.view(shape))
    return t[0, 0].numpy()


def resize_linear(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Trilinear resize of a 3D array to ``shape`` (corners aligned)."""
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(int(s) for s in shape), mode="trilinear", align_corners=True)[0, 0].numpy()
