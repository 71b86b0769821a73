"""Smoke: the distill strategy on synthetic 32^3 pairs, a few steps (tests and quick checks)."""
from ._base import smoke


def config():
    cfg = smoke("distill", teacher="training/runs/smoke_teacher")
    cfg.loss.distill = 0.1
    return cfg
