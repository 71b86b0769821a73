"""The label-aware RCN teacher: as teacher_rcn, plus soft Dice on the training subjects' manual labels."""
from .teacher_rcn import config as unsupervised


def config():
    cfg = unsupervised()
    cfg.description = ("RCN teacher: VTN affine + 3 dense VTN cascades (base 20), 1 - CC + 0.5 smoothness "
                       "+ 1.0 soft Dice (16 random labels per step) on training-subject labels")
    cfg.loss.dice = 1.0
    return cfg
