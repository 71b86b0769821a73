"""A prostate MR -> transrectal ultrasound specialist (issue 12's non-brain sample task): the LDR backbone
from ldr_brain_v1, trained on the prostate task alone (training cases 0-21, label-driven Dice loss, the
task's centre-alignment affine stage), 2,000 steps, validated on cases 22-24 every 250 steps. What
``deepreg demo --task prostate`` registers with once exported as ``prostate_mrus``."""
from ._base import continual


def config():
    cfg = continual("sequential", steps_per_task=2000, tasks=["prostate"])
    cfg.description = "prostate MR -> US specialist from ldr_brain_v1: 2,000 steps on the prostate task alone"
    cfg.loop.val_every = 250
    cfg.loop.threads = 1
    return cfg
