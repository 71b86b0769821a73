"""Smoke: the standard strategy with the blur curriculum on synthetic 32^3 pairs (seconds)."""
from ._base import smoke


def config():
    cfg = smoke("standard")
    cfg.description = "smoke test of the blur curriculum on synthetic 32^3 pairs"
    cfg.curriculum.blur_sigma_mm, cfg.curriculum.blur_steps = 4.0, 4
    return cfg
