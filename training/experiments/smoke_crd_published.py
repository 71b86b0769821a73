"""Smoke: CRD stage 2 as published (flow + raw attention MSE from the frozen smoke_crd_fst) on synthetic 32^3 pairs."""
from ._lowres import lowres_smoke


def config():
    cfg = lowres_smoke("crd_published", teacher="training/runs/smoke_crd_fst")
    cfg.model.kwargs = {"factor": 2, "pad_inside": True}
    cfg.loss.similarity_weight = 0.0
    cfg.loss.smooth = 0.0
    cfg.loss.dice = 0.0
    cfg.loss.distill = 1.0 / 12.0
    cfg.loss.attention = 1.0
    return cfg
