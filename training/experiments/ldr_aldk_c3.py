"""LDR student, 3 cascade(s), ALDK from the label-aware RCN teacher (cascade-count ablation).

Warm-started from ``ldr_brain_v1`` like the 2-cascade ``ldr_aldk`` (its two cascades plus a fresh third),
on the same budget (1,200 steps, lr 1e-4), so the three cascade counts differ only in the count.
"""
from ._base import BRAIN_TEACHER, brain_student


def config():
    cfg = brain_student(3, "LDR student (3 cascade(s), from ldr_brain_v1) + ALDK from the label-aware RCN teacher",
                        warm=True, name="adversarial", teacher=BRAIN_TEACHER, critic_steps=1, critic_every=2)
    cfg.loss.gamma = 0.5
    return cfg
