"""The shipped default (``ldr_brain_v4``) trained further on its own recipe, no teacher: the matched
control of ``ldr4_flowdistill`` and ``ldr4_aldk_linear`` (``_from_default.py``)."""
from ._from_default import STEPS, default_student


def config():
    return default_student(f"ldr_brain_v4 + {STEPS} steps of its own recipe (precision data), no teacher: "
                           "the control of the ldr4_* distillation arms", name="standard")
