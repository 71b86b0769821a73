"""Curriculum ablation arm: input blur over the first 20 % only (see _curricula.py); seeds via --set loop.seed=N --run-dir ..."""
from ._curricula import arm


def config():
    return arm("blurshort")
