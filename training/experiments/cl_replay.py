"""Continual learning (replay) over mindboggle -> synthhead -> prostate -> ct (issue 12), one LDR backbone from
ldr_brain_v1, 200 steps per task."""
from ._base import continual


def config():
    return continual("replay")
