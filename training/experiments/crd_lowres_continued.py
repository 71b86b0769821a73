"""Control for crd_lowres_unshuffle: the bundled crd_lowres_brain (averaged 4 mm inputs) trained on with the
same recipe and budget (1,500 steps, lr 1e-4), so that a gain can be told apart from more training."""
from ._lowres import LOWRES_BUNDLE
from .crd_lowres import crd_config


def config():
    cfg = crd_config(warm=True)
    cfg.description = ("low-resolution LDR student (2 cascades at 4 mm, averaged inputs), started from crd_lowres_brain, "
                       "cross-resolution distillation as crd_lowres_warm, the same budget again")
    cfg.model.init = LOWRES_BUNDLE
    return cfg
