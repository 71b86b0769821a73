"""Curricula as schedules and callbacks on the trainer (any strategy, any network).

* **Input blur** (the curriculum seed's proposal): both inputs are Gaussian-blurred with
  a sigma (mm) that decreases to 0 over ``blur_steps`` (linear, cosine or step shape).
* **Curriculum dropout** (Morerio et al.): dropout on the feature maps after every
  activation, retain probability ``p(t) = (1 - floor) * exp(-gamma * t) + floor``,
  annealed from 1 towards ``floor``.
* **Curriculum by smoothing** (Sinha et al.): a Gaussian blur of every convolution's
  output feature map (the flow head excepted), sigma (voxels) multiplied by ``decay``
  every ``every`` steps; sigma 0 is the identity.

All three are training-time only: values are pure functions of the step (so a resumed
run continues the same schedule), and the feature hooks are removed when training ends,
so the shipped network is unchanged and costs nothing extra.
"""
from __future__ import annotations

import math
from typing import Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

from .callbacks import Callback
from DeepRegLib.names import look_up_option


# ----------------------------------------------------------------------------- schedules
def blur_sigma(step: int, start_mm: float, steps: int, shape: str = "linear") -> float:
    """Input-blur sigma (mm) at ``step``: ``start_mm`` at step 0, 0 from ``steps`` on."""
    if start_mm <= 0 or steps <= 0 or step >= steps:
        return 0.0
    t = step / steps
    if shape == "linear":
        return start_mm * (1.0 - t)
    if shape == "cosine":
        return start_mm * 0.5 * (1.0 + math.cos(math.pi * t))
    if shape == "step":
        return start_mm
    look_up_option(shape, ("linear", "cosine", "step"), "blur shape")
    raise AssertionError("unreachable")


def retain_probability(step: int, floor: float, gamma: float) -> float:
    """Curriculum-dropout retain probability ``(1 - floor) * exp(-gamma * step) + floor``."""
    return (1.0 - floor) * math.exp(-gamma * step) + floor


def smoothing_sigma(step: int, start: float, decay: float, every: int) -> float:
    """Feature-smoothing sigma (voxels): ``start * decay ** (step // every)``; below 0.05 it is 0."""
    if start <= 0 or every <= 0:
        return 0.0
    s = start * decay ** (step // every)
    return s if s >= 0.05 else 0.0


def describe(c) -> str:
    """The curricula a :class:`~training.config.CurriculumConfig` switches on, in words (``"none"`` if none)."""
    parts = []
    if c.blur_sigma_mm > 0 and c.blur_steps > 0:
        parts.append(f"input blur {c.blur_sigma_mm:g} mm -> 0 over {c.blur_steps} steps ({c.blur_shape})")
    if c.dropout_floor < 1.0:
        parts.append(f"curriculum dropout, retain 1 -> {c.dropout_floor:g} (gamma {c.dropout_gamma:g} per step)")
    if c.smoothing_sigma > 0 and c.smoothing_every > 0:
        parts.append(f"curriculum by smoothing, feature sigma {c.smoothing_sigma:g} voxel "
                     f"x{c.smoothing_decay:g} every {c.smoothing_every} steps")
    return "; ".join(parts) or "none"


# ----------------------------------------------------------------------------- operators
def gaussian_kernel1d(sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma_vox) -> torch.Tensor:
    """Separable Gaussian blur of ``x`` ``(B, C, D, H, W)``; ``sigma_vox`` per axis (z, y, x) or one value.

    A sigma of 0 on an axis leaves that axis untouched (exactly the identity when all are 0).
    """
    sig = [float(sigma_vox)] * 3 if not isinstance(sigma_vox, (list, tuple)) else [float(s) for s in sigma_vox]
    c = x.shape[1]
    for axis, s in enumerate(sig):
        if s <= 0:
            continue
        k = gaussian_kernel1d(s, x.device, x.dtype)
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k.numel()
        weight = k.view(shape).repeat(c, 1, 1, 1, 1)
        pad = [0, 0, 0, 0, 0, 0]
        r = k.numel() // 2
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = r
        x = F.conv3d(F.pad(x, pad, mode="replicate"), weight, groups=c)
    return x


def _feature_layers(model: nn.Module, kinds: tuple) -> List[nn.Module]:
    """Layers of type ``kinds``, except the layers that output a 3-channel flow (the heads)."""
    out = []
    for m in model.modules():
        if isinstance(m, kinds) and getattr(m, "out_channels", None) != 3:
            out.append(m)
    return out


# ----------------------------------------------------------------------------- callbacks
class InputBlur(Callback):
    """Blurs both network inputs with ``blur_sigma(step)`` mm (converted with the batch's grid spacing)."""

    def __init__(self, start_mm: float, steps: int, shape: str) -> None:
        self.start_mm, self.steps, self.shape = start_mm, steps, shape
        self.sigma_mm = 0.0

    def transform(self, x: torch.Tensor, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        if self.sigma_mm <= 0:
            return x
        spacing = batch["spacing"].tolist()
        return gaussian_blur(x, [self.sigma_mm / s for s in spacing])

    def on_train_start(self, trainer) -> None:
        trainer.input_transforms.append(self.transform)

    def on_step_start(self, trainer) -> None:
        self.sigma_mm = blur_sigma(trainer.step, self.start_mm, self.steps, self.shape)

    def on_step_end(self, trainer, logs: Dict[str, float]) -> None:
        logs["blur_sigma_mm"] = self.sigma_mm

    def on_train_end(self, trainer) -> None:
        if self.transform in trainer.input_transforms:
            trainer.input_transforms.remove(self.transform)


class _FeatureHooks(Callback):
    """Forward hooks on the model's feature layers while training; removed at the end and for validation."""

    kinds: tuple = ()

    def __init__(self) -> None:
        self.handles: list = []

    def hook(self, module, inputs, output):
        raise NotImplementedError

    def on_train_start(self, trainer) -> None:
        self.handles = [m.register_forward_hook(self.hook) for m in _feature_layers(trainer.model, self.kinds)]

    def on_train_end(self, trainer) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


class CurriculumDropout(_FeatureHooks):
    kinds = (nn.ReLU, nn.LeakyReLU)

    def __init__(self, floor: float, gamma: float) -> None:
        super().__init__()
        self.floor, self.gamma = floor, gamma
        self.retain = 1.0

    def hook(self, module, inputs, output):
        if not module.training or self.retain >= 1.0:
            return output
        return F.dropout(output, p=1.0 - self.retain, training=True)

    def on_step_start(self, trainer) -> None:
        self.retain = retain_probability(trainer.step, self.floor, self.gamma)

    def on_step_end(self, trainer, logs: Dict[str, float]) -> None:
        logs["retain_probability"] = self.retain


class CurriculumSmoothing(_FeatureHooks):
    kinds = (nn.Conv3d, nn.ConvTranspose3d)

    def __init__(self, start: float, decay: float, every: int) -> None:
        super().__init__()
        self.start, self.decay, self.every = start, decay, every
        self.sigma = 0.0

    def hook(self, module, inputs, output):
        if not module.training or self.sigma <= 0:
            return output
        return gaussian_blur(output, self.sigma)

    def on_step_start(self, trainer) -> None:
        self.sigma = smoothing_sigma(trainer.step, self.start, self.decay, self.every)

    def on_step_end(self, trainer, logs: Dict[str, float]) -> None:
        logs["feature_sigma"] = self.sigma


def curriculum_callbacks(cfg) -> List[Callback]:
    """The callbacks a :class:`training.config.CurriculumConfig` switches on."""
    out: List[Callback] = []
    if cfg.blur_sigma_mm > 0 and cfg.blur_steps > 0:
        out.append(InputBlur(cfg.blur_sigma_mm, cfg.blur_steps, cfg.blur_shape))
    if cfg.dropout_floor < 1.0:
        out.append(CurriculumDropout(cfg.dropout_floor, cfg.dropout_gamma))
    if cfg.smoothing_sigma > 0 and cfg.smoothing_every > 0:
        out.append(CurriculumSmoothing(cfg.smoothing_sigma, cfg.smoothing_decay, cfg.smoothing_every))
    return out
