"""Ablation (a): the same LDR student, same budget, no teacher (1 - CC + smoothness)."""
from ._base import brain_student


def config():
    return brain_student(2, "LDR student (2 cascades), no teacher: 1 - CC + 0.5 smoothness", name="standard")
