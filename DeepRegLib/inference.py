"""Registration in one call: :func:`register` -> :class:`RegistrationResult`.

All coordinates are LPS millimetres.  The result maps fixed points to moving points
(``T(p) = A(p + u(p))``, see :mod:`DeepRegLib.transforms`), the convention of
``SimpleITK.Resample(moving, fixed, T)`` and of Slicer's "transform from parent".
"""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import numpy as np
import SimpleITK as sitk
import torch

from . import transforms as tr
from .affine import AffineConfig
from .bundles import ModelBundle, load_bundle
from .errors import InputError
from .grid import Grid
from .imageio import ImageLike, as_image
from .pipeline import prepare_pair

log = logging.getLogger("DeepRegLib")
Progress = Callable[[str, float], None]

_NETWORK_CACHE: Dict[tuple, torch.nn.Module] = {}


@dataclass
class RegistrationResult:
    """Fixed -> moving mapping: affine ``A`` and displacement ``u`` (LPS mm, ``(z, y, x, 3)`` on ``grid``)."""

    fixed: sitk.Image
    affine: sitk.AffineTransform
    displacement: Optional[np.ndarray]
    grid: Optional[Grid]
    model: str
    device: str
    timings: Dict[str, float] = field(default_factory=dict)

    def transform(self) -> sitk.CompositeTransform:
        """The ITK composite transform ``[A, u]`` (fixed -> moving)."""
        return tr.to_sitk(self.affine, self.displacement, self.grid)

    def affine_transform(self) -> sitk.CompositeTransform:
        """The affine stage alone, as a composite (for comparisons)."""
        return tr.to_sitk(self.affine, None, None)

    def write_transform(self, path: str) -> str:
        """Write the mapping as an ITK transform file (``.h5`` composite), readable by Slicer."""
        return tr.write_transform(self.transform(), path)

    def map_points(self, points: np.ndarray) -> np.ndarray:
        """Moving LPS points of fixed LPS points ``(..., 3)`` (engine evaluation)."""
        return tr.map_points(points, self.affine, self.displacement, self.grid)

    def warp_image(self, moving: ImageLike, reference: Optional[sitk.Image] = None,
                   default: float = 0.0, affine_only: bool = False) -> sitk.Image:
        """Resample ``moving`` onto the fixed grid (or ``reference``) with ITK, trilinear."""
        m = as_image(moving, "moving")
        t = self.affine_transform() if affine_only else self.transform()
        return sitk.Resample(m, reference or self.fixed, t, sitk.sitkLinear, default, m.GetPixelID())

    def warp_labels(self, labels: ImageLike, reference: Optional[sitk.Image] = None,
                    affine_only: bool = False) -> sitk.Image:
        """Resample a label map onto the fixed grid (or ``reference``), nearest neighbour."""
        lab = labels if isinstance(labels, sitk.Image) else as_image(labels, "labels", pixel_type=None)
        t = self.affine_transform() if affine_only else self.transform()
        return sitk.Resample(lab, reference or self.fixed, t, sitk.sitkNearestNeighbor, 0, lab.GetPixelID())

    def jacobian_determinant(self) -> np.ndarray:
        """det of the Jacobian of ``p -> p + u(p)`` on the displacement grid (interior voxels)."""
        from .spatial import jacobian_determinant
        flow = torch.from_numpy(np.stack([self.displacement[..., 2] / self.grid.spacing[2],
                                          self.displacement[..., 1] / self.grid.spacing[1],
                                          self.displacement[..., 0] / self.grid.spacing[0]])[None])
        return jacobian_determinant(flow)[0].numpy()


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when available, else 'cpu'. An unavailable 'cuda' is an error."""
    device = (device or "auto").lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "gpu":
        device = "cuda"
    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r}; use auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but torch reports no CUDA device; use --device cpu or auto")
    return device


def _network(bundle: ModelBundle, device: str) -> torch.nn.Module:
    key = (str(bundle.path), device)
    if key not in _NETWORK_CACHE:
        _NETWORK_CACHE[key] = bundle.network(device)
    return _NETWORK_CACHE[key]


def _predict(bundle: ModelBundle, fixed: np.ndarray, moving: np.ndarray, device: str, allow_fallback: bool):
    net = _network(bundle, device)
    f = torch.from_numpy(fixed)[None, None].to(device)
    m = torch.from_numpy(moving)[None, None].to(device)
    try:
        with torch.inference_mode():
            flow, _ = net(f, m)
        return flow.cpu(), device
    except torch.cuda.OutOfMemoryError:
        if not allow_fallback:
            raise
        torch.cuda.empty_cache()
        warnings.warn("CUDA ran out of memory; falling back to the CPU", RuntimeWarning)
        log.warning("CUDA out of memory; falling back to the CPU")
        return _predict(bundle, fixed, moving, "cpu", False)


def register(fixed: ImageLike, moving: ImageLike, model: Optional[str] = None, device: str = "auto",
             affine_config: AffineConfig = AffineConfig(), initial_affine: Optional[sitk.Transform] = None,
             progress: Optional[Progress] = None) -> RegistrationResult:
    """Register ``moving`` to ``fixed`` (paths or SimpleITK images, any geometry).

    Affine pre-alignment (SimpleITK, ~4 mm) then the bundled network on its LPS grid.
    ``progress(stage, fraction)`` is called between stages.  Returns the fixed -> moving map.
    """
    def report(stage: str, frac: float) -> None:
        log.info("%s (%.0f%%)", stage, 100 * frac)
        if progress is not None:
            progress(stage, frac)

    t0 = time.perf_counter()
    report("loading", 0.0)
    f_img = as_image(fixed, "fixed")
    m_img = as_image(moving, "moving")
    bundle = load_bundle(model)
    dev = resolve_device(device)
    timings = {"load": time.perf_counter() - t0}
    report("affine", 0.1)
    prep = prepare_pair(f_img, m_img, bundle.input_spec, affine_config, initial_affine)
    timings.update(prep.timings)
    report("network", 0.6)
    t1 = time.perf_counter()
    flow, used = _predict(bundle, prep.fixed, prep.moving, dev, allow_fallback=(device or "auto") == "auto")
    timings["network"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    disp = tr.taper_border(tr.flow_to_displacement(flow, prep.grid))
    timings["field"] = time.perf_counter() - t2
    timings["total"] = time.perf_counter() - t0
    report("done", 1.0)
    return RegistrationResult(f_img, prep.affine, disp, prep.grid, bundle.name, used, timings)
