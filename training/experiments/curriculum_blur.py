"""Curriculum ablation arm: blur (see _curricula.py); seeds via --set loop.seed=N --run-dir ..."""
from ._curricula import arm


def config():
    return arm("blur")
