"""Smoke: the standard strategy on synthetic 32^3 pairs, a few steps (tests and quick checks)."""
from ._base import smoke


def config():
    cfg = smoke("standard")

    return cfg
