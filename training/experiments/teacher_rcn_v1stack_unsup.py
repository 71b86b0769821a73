"""The unsupervised counterpart of teacher_rcn_v1stack: the same warm-started RCN, 1 - CC + smoothness only."""
from .teacher_rcn_v1stack import config as label_aware


def config():
    cfg = label_aware()
    cfg.description = ("RCN teacher: ldr_brain_v1 cascades (fine-tuned, not frozen: prefix_frozen=False as in "
                       "teacher_rcn_v1stack) + 1 dense VTN cascade (base 16), unsupervised 1 - CC + 0.5 smoothness")
    cfg.loss.dice = 0.0
    return cfg
