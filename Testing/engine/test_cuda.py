"""The engine on a CUDA device gives the CPU's mapping (the bundled sample pair, the default model).

Skipped where torch sees no CUDA device (CI and the development machines are CPU-only); run on a lent
GPU machine (``benchmarks/device_consistency.py`` measures the same on more settings). The network's flow
differs between devices only by floating-point order (cuDNN's TF32 convolutions: ~0.003 mm), so the two
mappings agree to a small fraction of a 2 mm voxel, not bit for bit.
"""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from DeepRegLib.inference import register
from DeepRegLib.known_motion import brain_points

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device here (CI and this machine are CPU-only)")


def _image(subject: dict) -> sitk.Image:
    return sitk.ReadImage(str(subject["image"]), sitk.sitkFloat32)


def _mapped(fixed: sitk.Image, moving: sitk.Image, device: str, refine) -> np.ndarray:
    """Every 4th voxel of the fixed brain (LPS mm) through the fixed -> moving map found on ``device``."""
    res = register(fixed, moving, device=device, refine=refine, preflight=False, fallback_to_cpu=False)
    assert res.device == device
    return res.map_points(brain_points(fixed, step=4))


#: measured on a lent H200 (2026-12-04, torch 2.11): the default refinement's map differed from the CPU's by p95
#: 0.107 mm, max 2.8 mm inside the brain, with cuDNN TF32 on or off (training/results/gpu_profile/refine_diag.log);
#: cause not established (ulp-level input noise moves the CPU's refinement by <= 0.012 mm). Strict: once fixed,
#: this case passes and the marker must go.
REFINE_DIFFERS_ON_CUDA = pytest.mark.xfail(strict=True, reason="the default refinement differs between CPU and "
                                           "CUDA (p95 0.11 mm, max 2.8 mm on an H200, 2026-12-04); cause open")


@pytest.mark.parametrize("refine", [False, pytest.param(None, marks=REFINE_DIFFERS_ON_CUDA)],
                         ids=["network alone", "card default refinement"])
def test_cuda_gives_the_cpu_mapping(sample_pair, refine):
    fixed, moving = _image(sample_pair["fixed"]), _image(sample_pair["moving"])
    err = np.linalg.norm(_mapped(fixed, moving, "cpu", refine) - _mapped(fixed, moving, "cuda", refine), axis=1)
    assert np.percentile(err, 95) < 0.05 and err.max() < 0.5, (np.percentile(err, 95), err.max())


def test_cuda_does_not_move_an_image_registered_to_itself(sample_pair):
    fixed = _image(sample_pair["fixed"])
    points = brain_points(fixed, step=4)
    moved = {d: np.linalg.norm(_mapped(fixed, fixed, d, None) - points, axis=1).max() for d in ("cpu", "cuda")}
    assert moved["cuda"] <= moved["cpu"] + 0.05, moved
