"""The shipped default (``ldr_brain_v4``) + ALDK as published (linear critic gap, the reference code's settings,
``_aldk.py``) from the unsupervised RCN teacher on the inter-subject pairs (``_from_default.py``; control
``ldr4_noteacher``). The adversarial schedule counts trainer steps; a step on a same-subject pair has no
adversarial term, so about one step in six carries it."""
from ._aldk import aldk_published
from ._from_default import STEPS, taught


def config():
    cfg = taught(f"ldr_brain_v4 + {STEPS} steps of its own recipe + ALDK as published (linear critic) from "
                 "teacher_rcn_ref on the inter-subject pairs", "adversarial")
    return aldk_published(cfg, "linear")
