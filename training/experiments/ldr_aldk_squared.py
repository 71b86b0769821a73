"""LDR student, 2 cascades, ALDK as published with the seed text's squared critic gap (sigmoid scores).

Everything as ``ldr_aldk_linear`` (the reference code's lambda 0.1, gamma 0.3, beta 0.1, every 3rd
step, 5-layer critic) except the objective: the critic maximises ||D(student) - D(teacher)||^2 of
sigmoid scores and the student minimises it (the text's l_dis), the ablation of the objective.
"""
from ._aldk import aldk_published
from ._base import BRAIN_TEACHER, brain_student


def config():
    cfg = brain_student(2, "LDR student (2 cascades) + ALDK as published but with the squared critic gap of "
                           "sigmoid scores (lambda 0.1, gamma 0.3, beta 0.1, every 3rd step) from the label-aware "
                           "RCN teacher",
                        name="adversarial", teacher=BRAIN_TEACHER)
    return aldk_published(cfg, "squared")
