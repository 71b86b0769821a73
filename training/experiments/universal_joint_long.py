"""The `universal` candidate trained jointly for longer: mindboggle, prostate and ct mixed, from ldr_brain_v2,
1,000 steps per task (3,000 in all; universal_joint had 1,200, which left the prostate's landmark TRE
above the centre alignment's on the validation cases)."""
from ._base import UNIVERSAL_INIT, UNIVERSAL_TASKS, continual


def config():
    cfg = continual("joint", steps_per_task=1000, tasks=UNIVERSAL_TASKS, init=UNIVERSAL_INIT)
    cfg.description = "universal candidate: " + cfg.description + ", from ldr_brain_v2"
    return cfg
