"""The shipped default (``ldr_brain_v4``) + plain flow distillation from the unsupervised RCN teacher on the
inter-subject pairs (``_from_default.py``; control ``ldr4_noteacher``)."""
from ._from_default import STEPS, taught

#: the distillation weight: at the start (ldr_brain_v4 vs teacher_rcn_ref at step ~6,300, median of 6 inter-subject
#: training pairs) the term is 1.48 mm^2 and 1 - CC is 0.023: 0.015 makes them about equal, as ldr_flowdistill's 0.03 did
DISTILL = 0.015


def config():
    cfg = taught(f"ldr_brain_v4 + {STEPS} steps of its own recipe + flow distillation (MSE, mm^2) from "
                 "teacher_rcn_ref on the inter-subject pairs", "distill")
    cfg.loss.distill = DISTILL
    return cfg
