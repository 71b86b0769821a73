"""LDR student, 2 cascades, ALDK as published: the reference code's linear critic gap (logits).

The student, start, teacher and budget of ``ldr_aldk`` (warm from ``ldr_brain_v1``, 1,200 steps, lr
1e-4, the label-aware RCN teacher); the ALDK settings of the reference code (``_aldk.PUBLISHED``):
the critic maximises D(teacher) - D(student) of its logits, gradient penalty lambda 0.1 at
beta = 0.1, gamma 0.3, the adversarial term every 3rd step (off from step 8000, beyond this budget),
a 5-layer critic (16..256 channels).
"""
from ._aldk import aldk_published
from ._base import BRAIN_TEACHER, brain_student


def config():
    cfg = brain_student(2, "LDR student (2 cascades) + ALDK as published (linear critic gap of logits, "
                           "lambda 0.1, gamma 0.3, beta 0.1, every 3rd step) from the label-aware RCN teacher",
                        name="adversarial", teacher=BRAIN_TEACHER)
    return aldk_published(cfg, "linear")
