"""Networks for training: the engine's students plus training-only teachers and critics."""
from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from ..checkpoints import load_checkpoint

from DeepRegLib.models import ARCHITECTURES, RecursiveCascade, build_network
from DeepRegLib.models.ldr import LDRSubnet

from .discriminator import FlowDiscriminator
from .voxelmorph_baseline import VoxelMorphSubnet
from .fst import SharedFeatureShiftedTeacher
from .rcn import VTN, VTNAffineStem
from .vtn import VTNAffine, VTNDense
from DeepRegLib.names import look_up_option

#: training-only subnets: the RCN teacher's dense cascade (``vtn``: this project's first version;
#: ``vtn_ref``: the reference architecture, ``networks/rcn.py``), and VoxelMorph as an outside baseline
TEACHER_SUBNETS = {"vtn": VTNDense, "vtn_ref": VTN, "voxelmorph": VoxelMorphSubnet}
#: CRD's published feature-shifted teacher: one LDR subnet shared by the HR and LR inputs + a fusion decoder
#: (``kwargs``: the subnet's, plus ``factor``; ``prefix``: an engine network whose first cascade is the subnet)
FST_ARCHITECTURE = "fst_ldr"
#: the affine subnet each teacher architecture puts before its dense cascades (``model.affine_subnet``)
AFFINE_SUBNETS = {"vtn": VTNAffine, "vtn_ref": VTNAffineStem, "voxelmorph": VTNAffine}


def build_model(model_cfg) -> RecursiveCascade:
    """The network a :class:`training.config.ModelConfig` describes.

    Engine architectures (``ldr``, ``lowres_ldr``) are built exactly as a bundle builds them; ``vtn`` is
    the RCN teacher: an optional :class:`VTNAffine` subnet, then ``cascades`` dense
    :class:`VTNDense` subnets, composed recursively; ``vtn_ref`` the same with the reference's
    :class:`VTNAffineStem` and :class:`VTN` (whose ``flow_multiplier`` is ``1 / cascades`` unless the
    kwargs set it, as RCN does). A teacher with an affine subnet records its position in the cascade
    as ``affine_index`` (the loss's det/ortho terms apply to that cascade's flow).
    """
    kwargs = dict(model_cfg.kwargs or {})
    if model_cfg.architecture in ARCHITECTURES:
        if model_cfg.affine_subnet:
            raise ValueError("the affine subnet is for teachers; engine students rely on the affine stage")
        return build_network(model_cfg.architecture, model_cfg.cascades, **kwargs)
    if model_cfg.architecture == FST_ARCHITECTURE:  # CRD stage 1 (networks/fst.py)
        factor = int(kwargs.pop("factor", 2))
        subnet = load_prefix(model_cfg.prefix, model_cfg.prefix_frozen).subnets[0] if model_cfg.prefix \
            else LDRSubnet(**kwargs)
        return SharedFeatureShiftedTeacher(subnet, factor)
    if model_cfg.architecture in TEACHER_SUBNETS:
        cls = TEACHER_SUBNETS[model_cfg.architecture]
        subnets: list[nn.Module] = list(load_prefix(model_cfg.prefix, model_cfg.prefix_frozen).subnets) \
            if model_cfg.prefix else []
        affine_index = len(subnets) if model_cfg.affine_subnet else None
        dense_kwargs = dict(kwargs)
        if cls is VTN:
            dense_kwargs.setdefault("flow_multiplier", 1.0 / max(1, int(model_cfg.cascades)))
            kwargs.pop("flow_multiplier", None)  # the reference's affine stem keeps its own (1)
        subnets += [AFFINE_SUBNETS[model_cfg.architecture](**kwargs)] if model_cfg.affine_subnet else []
        subnets += [cls(**dense_kwargs) for _ in range(int(model_cfg.cascades))]
        model = RecursiveCascade(subnets)
        model.affine_index = affine_index
        return model
    look_up_option(model_cfg.architecture, ARCHITECTURES + sorted(TEACHER_SUBNETS) + [FST_ARCHITECTURE],
                   "architecture")
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


__all__ = ["build_model", "load_prefix", "load_trained", "FlowDiscriminator", "SharedFeatureShiftedTeacher",
           "VoxelMorphSubnet", "VTN", "VTNAffine", "VTNAffineStem", "VTNDense"]
