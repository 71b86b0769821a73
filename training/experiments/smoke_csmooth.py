"""Smoke: the standard strategy with the csmooth curriculum on synthetic 32^3 pairs (seconds)."""
from ._base import smoke


def config():
    cfg = smoke("standard")
    cfg.description = "smoke test of the csmooth curriculum on synthetic 32^3 pairs"
    cfg.curriculum.smoothing_sigma, cfg.curriculum.smoothing_decay, cfg.curriculum.smoothing_every = 1.0, 0.5, 1
    return cfg
