"""Networks for training: the engine's students plus training-only teachers and critics."""
from __future__ import annotations

import torch.nn as nn

from DeepRegLib.models import ARCHITECTURES, RecursiveCascade, build_network

from .discriminator import FlowDiscriminator
from .vtn import VTNAffine, VTNDense

TEACHER_SUBNETS = {"vtn": VTNDense}


def build_model(model_cfg) -> RecursiveCascade:
    """The network a :class:`training.config.ModelConfig` describes.

    Engine architectures (``ldr``, ``lowres_ldr``) are built exactly as a bundle builds them; ``vtn`` is
    the RCN teacher: an optional :class:`VTNAffine` subnet, then ``cascades`` dense
    :class:`VTNDense` subnets, composed recursively.
    """
    kwargs = dict(model_cfg.kwargs or {})
    if model_cfg.architecture in ARCHITECTURES:
        if model_cfg.affine_subnet:
            raise ValueError("the affine subnet is for teachers; engine students rely on the affine stage")
        return build_network(model_cfg.architecture, model_cfg.cascades, **kwargs)
    if model_cfg.architecture in TEACHER_SUBNETS:
        cls = TEACHER_SUBNETS[model_cfg.architecture]
        subnets: list[nn.Module] = [VTNAffine(**kwargs)] if model_cfg.affine_subnet else []
        subnets += [cls(**kwargs) for _ in range(int(model_cfg.cascades))]
        return RecursiveCascade(subnets)
    raise ValueError(f"unknown architecture {model_cfg.architecture!r}; "
                     f"choose from {ARCHITECTURES + sorted(TEACHER_SUBNETS)}")


__all__ = ["build_model", "FlowDiscriminator", "VTNAffine", "VTNDense"]
