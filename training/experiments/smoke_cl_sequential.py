"""Smoke: continual learning (sequential) over three synthetic 16^3 tasks, 2 steps each (tests)."""
from ._base import smoke_continual


def config():
    return smoke_continual("sequential")
