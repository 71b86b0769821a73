"""CRD ablation (c), warm-started: the 4 mm student from the 2 mm default's weights, cross-resolution distillation."""
from .crd_lowres import crd_config


def config():
    return crd_config(warm=True)
