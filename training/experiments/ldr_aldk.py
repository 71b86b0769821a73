"""LDR student, 2 cascades, distilled from the label-aware RCN teacher with ALDK (adversarial)."""
from ._base import BRAIN_TEACHER, brain_student


def config():
    cfg = brain_student(2, "LDR student (2 cascades) + ALDK from the label-aware RCN teacher",
                        name="adversarial", teacher=BRAIN_TEACHER, critic_steps=1, critic_every=2)
    cfg.loss.gamma = 0.5
    return cfg
