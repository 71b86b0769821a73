"""Smoke: the CRD strategy (low-resolution student, FST) on synthetic 32^3 pairs, HR teacher = the smoke_standard LDR run."""
from ._lowres import lowres_smoke


def config():
    cfg = lowres_smoke("crd", teacher="training/runs/smoke_standard")
    cfg.loss.distill = 0.1
    cfg.loss.fst_flow = 0.1
    cfg.loss.attention = 0.5
    return cfg
