"""Smoke: a tiny reference RCN teacher (affine stem + 2 VTN cascades, c=2) with det/ortho and free-form augmentation."""
from ._base import smoke


def config():
    cfg = smoke("standard")
    cfg.description = "smoke reference RCN teacher on synthetic 32^3 pairs"
    cfg.model.architecture = "vtn_ref"
    cfg.model.cascades = 2
    cfg.model.affine_subnet = True
    cfg.model.kwargs = {"channels": 2}
    cfg.loss.affine_det = 0.1
    cfg.loss.affine_ortho = 0.1
    cfg.data.free_form = (0.4, 5)
    return cfg
