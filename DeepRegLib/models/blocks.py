"""Small composable torch blocks (MONAI style)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvAct(nn.Sequential):
    """3D convolution followed by an activation (ReLU or LeakyReLU(0.1))."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: int | None = None,
                 act: str = "relu") -> None:
        pad = (kernel - 1) // 2 if padding is None else padding
        layers = [nn.Conv3d(cin, cout, kernel, stride, pad)]
        layers.append(nn.ReLU(inplace=True) if act == "relu" else nn.LeakyReLU(0.1, inplace=True))
        super().__init__(*layers)


class UpConvAct(nn.Sequential):
    """Transposed 3D convolution (4x4x4, stride 2: doubles each axis) and an activation."""

    def __init__(self, cin: int, cout: int, act: str = "relu") -> None:
        super().__init__(nn.ConvTranspose3d(cin, cout, 4, 2, 1),
                         nn.ReLU(inplace=True) if act == "relu" else nn.LeakyReLU(0.1, inplace=True))


def small_init(layer: nn.Module, std: float = 1e-5) -> nn.Module:
    """Initialise a flow-predicting layer near zero so that training starts from the identity."""
    nn.init.normal_(layer.weight, 0.0, std)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class PadToMultiple(nn.Module):
    """Run ``module`` on inputs padded (replicate) to a multiple of ``multiple``, crop its output back."""

    def __init__(self, module: nn.Module, multiple: int) -> None:
        super().__init__()
        self.module = module
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[2:]
        pads = [(-s) % self.multiple for s in shape]
        if not any(pads):
            return self.module(x)
        pad_arg = []
        for p in reversed(pads):
            pad_arg += [0, p]
        y = self.module(F.pad(x, pad_arg, mode="replicate"))
        return y[:, :, :shape[0], :shape[1], :shape[2]]
