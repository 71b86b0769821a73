"""LDR student, 3 cascade(s), ALDK from the label-aware RCN teacher (cascade-count ablation)."""
from ._base import BRAIN_TEACHER, brain_student


def config():
    cfg = brain_student(3, "LDR student (3 cascade(s)) + ALDK from the label-aware RCN teacher",
                        name="adversarial", teacher=BRAIN_TEACHER, critic_steps=1, critic_every=2)
    cfg.loss.gamma = 0.5
    return cfg
