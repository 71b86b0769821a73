"""Control for distillation: the same LDR student, same budget, trained on the teacher's own supervision.

1 - CC + smoothness + soft Dice on the training subjects' labels, no teacher: does distilling a
label-aware teacher beat giving the student the labels directly?
"""
from ._base import brain_student


def config():
    cfg = brain_student(2, "LDR student (2 cascades), no teacher: 1 - CC + 0.5 smoothness + 1.0 soft Dice on "
                           "training-subject labels", name="standard")
    cfg.loss.dice = 1.0
    return cfg
