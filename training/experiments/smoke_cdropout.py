"""Smoke: the standard strategy with the cdropout curriculum on synthetic 32^3 pairs (seconds)."""
from ._base import smoke


def config():
    cfg = smoke("standard")
    cfg.description = "smoke test of the cdropout curriculum on synthetic 32^3 pairs"
    cfg.curriculum.dropout_floor, cfg.curriculum.dropout_gamma = 0.5, 0.5
    return cfg
