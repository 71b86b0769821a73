"""LDR student, 2 cascades, ALDK from the unsupervised RCN teacher (the better teacher at full resolution).

Same student, start, budget and ALDK settings as ldr_aldk (gamma 0.5, one critic step every 2 student
steps); the teacher is ``teacher_rcn_v1stack_unsup`` (0.642 / 0.508 subcortical / cortical Dice at full
resolution against the label-aware teacher's 0.634 / 0.493).
"""
from ._base import brain_student
from .ldr_flowdistill_unsup import UNSUP_TEACHER


def config():
    cfg = brain_student(2, "LDR student (2 cascades) + ALDK from the unsupervised RCN teacher",
                        name="adversarial", teacher=UNSUP_TEACHER, critic_steps=1, critic_every=2)
    cfg.loss.gamma = 0.5
    return cfg
