"""The `universal` candidate trained jointly (issue 12's upper bound): mindboggle, prostate and ct mixed,
from ldr_brain_v2, the same 1,200 steps as universal_samcl."""
from ._base import UNIVERSAL_INIT, UNIVERSAL_STEPS_PER_TASK, UNIVERSAL_TASKS, continual


def config():
    cfg = continual("joint", steps_per_task=UNIVERSAL_STEPS_PER_TASK, tasks=UNIVERSAL_TASKS, init=UNIVERSAL_INIT)
    cfg.description = "universal candidate: " + cfg.description + ", from ldr_brain_v2"
    return cfg
