"""Smoke: a tiny RCN teacher (affine + 1 VTN cascade, base 4) on synthetic pairs, for the distillation smokes."""
from ._base import smoke


def config():
    cfg = smoke("standard")
    cfg.description = "smoke RCN teacher on synthetic 32^3 pairs"
    cfg.model.architecture = "vtn"
    cfg.model.affine_subnet = True
    cfg.model.kwargs = {"base": 4}
    return cfg
