"""Networks for training: the engine's students plus training-only teachers and critics."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from ..checkpoints import load_checkpoint

from DeepRegLib.models import ARCHITECTURES, RecursiveCascade, build_network

from .discriminator import FlowDiscriminator
from .voxelmorph_baseline import VoxelMorphSubnet
from .vtn import VTNAffine, VTNDense
from DeepRegLib.names import look_up_option

#: training-only subnets: the RCN teacher's dense cascade, and VoxelMorph as an outside baseline
TEACHER_SUBNETS = {"vtn": VTNDense, "voxelmorph": VoxelMorphSubnet}


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
        subnets: list[nn.Module] = list(load_prefix(model_cfg.prefix, model_cfg.prefix_frozen).subnets) \
            if model_cfg.prefix else []
        subnets += [VTNAffine(**kwargs)] if model_cfg.affine_subnet else []
        subnets += [cls(**kwargs) for _ in range(int(model_cfg.cascades))]
        return RecursiveCascade(subnets)
    look_up_option(model_cfg.architecture, ARCHITECTURES + sorted(TEACHER_SUBNETS), "architecture")
    raise AssertionError("unreachable")


REPO = Path(__file__).resolve().parents[2]


def load_trained(path: str | Path) -> nn.Module:
    """A trained network with its weights: a bundle folder (``card.json``), a run folder (its
    ``best.pt``) or a checkpoint file, built from the bundle's card or the checkpoint's saved config.
    Relative paths are taken from the repository root."""
    p = Path(path)
    p = p if p.is_absolute() else REPO / p
    if (p / "card.json").exists():
        from DeepRegLib.bundles import load_bundle
        return load_bundle(str(p)).network()
    from ..config import from_dict
    ck = load_checkpoint(p / "best.pt" if p.is_dir() else p)
    net = build_model(from_dict(ck["config"]).model)
    net.load_state_dict(ck["modules"]["model"])
    return net


def load_prefix(path: str, frozen: bool = True) -> RecursiveCascade:
    """A trained engine network (:func:`load_trained`) whose cascades become the first cascades of an
    RCN teacher. ``frozen``: their weights stay fixed and the teacher learns only the residual
    deformation on top of them; otherwise they are fine-tuned with the new cascades, end to end
    (a warm start).
    """
    net = load_trained(path)
    if not isinstance(net, RecursiveCascade):
        raise TypeError(f"prefix {path}: a {type(net).__name__} has no cascades to prepend")
    for prm in net.parameters():
        prm.requires_grad_(not frozen)
    return net


__all__ = ["build_model", "load_prefix", "load_trained", "FlowDiscriminator", "VoxelMorphSubnet", "VTNAffine",
           "VTNDense"]
