"""Does an input look like what the model was trained on?  Cheap heuristics, warnings only.

The bundled model card says ``"expects": "skull-stripped T1-weighted brain MRI"``.  Slicer's
usual samples and most clinical brain MR are not skull-stripped, and nothing stops a user from
registering CT or a thin slab; the result is then unreliable without any error.  The checks,
on a subsampled copy of the image (at most 300,000 voxels: about 10 ms):

* **2D-like slab**: a physical extent below ``min_extent_mm`` (default 60 mm) or fewer than 16
  voxels along an axis, or slices more than 3x thicker than the in-plane spacing (>= 3 mm).
* **not MR**: many voxels at or below -500 with a maximum above 500: Hounsfield units (CT).
* **not skull-stripped** (when the card expects skull-stripped images): the foreground (voxels
  above 10 % of the robust range) is larger than a brain, ``max_foreground_ml`` (default
  2200 ml).  Skull-stripped Mindboggle brains measure 1040-1380 ml; whole heads 3000-4000 ml.

A card may override the defaults with a ``"domain"`` object (``modality``, ``skull_stripped``,
``min_extent_mm``, ``max_foreground_ml``).  The panel shows the warnings and carries on when
the user confirms; the CLI prints them to stderr and carries on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class DomainSpec:
    """What the model expects (from its card)."""

    expects: str = "skull-stripped T1-weighted brain MRI"
    modality: str = "MR"
    skull_stripped: bool = True
    min_extent_mm: float = 60.0
    max_foreground_ml: float = 2200.0

    @classmethod
    def from_card(cls, card: Optional[dict]) -> "DomainSpec":
        card = card or {}
        expects = str(card.get("input", {}).get("expects", cls.expects))
        d = card.get("domain", {}) or {}
        low = expects.lower()
        return cls(expects=expects,
                   modality=str(d.get("modality", "MR" if ("mri" in low or " mr" in low or "t1" in low) else "any")),
                   skull_stripped=bool(d.get("skull_stripped", "skull-stripped" in low or "skull stripped" in low)),
                   min_extent_mm=float(d.get("min_extent_mm", cls.min_extent_mm)),
                   max_foreground_ml=float(d.get("max_foreground_ml", cls.max_foreground_ml)))


def _subsampled(image: sitk.Image, max_voxels: int = 300_000):
    arr = sitk.GetArrayViewFromImage(image)
    step = max(1, int(np.ceil((arr.size / max_voxels) ** (1 / 3))))
    return np.asarray(arr[::step, ::step, ::step], dtype=np.float32), step


def check_image(image: sitk.Image, spec: DomainSpec, name: str = "image") -> List[str]:
    """Warnings (sentences for the user) about ``image`` against ``spec``; empty when it looks fine."""
    warnings: List[str] = []
    size = np.asarray(image.GetSize())
    spacing = np.asarray(image.GetSpacing())
    extent = size * spacing
    if extent.min() < spec.min_extent_mm or size.min() < 16:
        warnings.append(f"{name} looks like a 2D-like slab ({' x '.join(str(int(s)) for s in size)} voxels, "
                        f"{' x '.join(f'{e:.0f}' for e in extent)} mm): the model expects a whole 3D volume "
                        f"({spec.expects})")
    elif spacing.max() >= 3.0 and spacing.max() > 3.0 * spacing.min():
        warnings.append(f"{name} has thick slices ({' x '.join(f'{s:.2g}' for s in spacing)} mm): the model "
                        f"was trained on about 1 mm isotropic images ({spec.expects})")
    arr, step = _subsampled(image)
    lo, hi = float(arr.min()), float(np.percentile(arr, 99.5))
    ct = float((arr <= -500).mean()) > 0.05 and float(arr.max()) > 500
    if spec.modality == "MR" and ct:
        warnings.append(f"{name} looks like CT (values from {lo:.0f} to {float(arr.max()):.0f}, Hounsfield units?): "
                        f"the model was trained on {spec.expects}")
    if spec.skull_stripped and not ct and hi > lo:
        fg = arr > lo + 0.1 * (hi - lo)
        ml = float(fg.sum()) * float(np.prod(spacing)) * step ** 3 / 1000.0
        if ml > spec.max_foreground_ml:
            warnings.append(f"{name} does not look skull-stripped: its foreground is {ml:.0f} ml, larger than a "
                            f"brain (at most ~{spec.max_foreground_ml:.0f} ml); the model was trained on "
                            f"{spec.expects}. Skull-strip it first (e.g. the SwissSkullStripper or HD-BET "
                            "extensions), or expect a poor result")
    return warnings


def check_pair(fixed: sitk.Image, moving: sitk.Image, card: Optional[dict]) -> List[str]:
    """Warnings for a fixed/moving pair against a model card."""
    spec = DomainSpec.from_card(card)
    return check_image(fixed, spec, "the fixed image") + check_image(moving, spec, "the moving image")
