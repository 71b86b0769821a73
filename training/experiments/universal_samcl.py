"""The `universal` candidate (issue 12): SAMCL over mindboggle -> prostate -> ct, from the default brain
model ldr_brain_v2, 400 steps per task. The tasks are the three that a network plus the card's
per-task refinement registers (the random-contrast heads of `synthhead` are registered by no method
here; RESULTS.md)."""
from ._base import UNIVERSAL_INIT, UNIVERSAL_STEPS_PER_TASK, UNIVERSAL_TASKS, continual


def config():
    cfg = continual("samcl", steps_per_task=UNIVERSAL_STEPS_PER_TASK, tasks=UNIVERSAL_TASKS, init=UNIVERSAL_INIT)
    cfg.description = "universal candidate: " + cfg.description + ", from ldr_brain_v2"
    return cfg
