"""Continual learning (replay) over synthhead -> prostate -> ct (issue 12), one LDR backbone, 1500 steps per task."""
from ._base import continual


def config():
    return continual("replay")
