"""Smoke: ALDK as published (linear critic gap, reference settings) on synthetic 32^3 pairs (tests)."""
from ._aldk import aldk_published
from ._base import smoke


def config():
    cfg = smoke("adversarial", teacher="training/runs/smoke_teacher")
    cfg.loop.steps = 4
    return aldk_published(cfg, "linear")
