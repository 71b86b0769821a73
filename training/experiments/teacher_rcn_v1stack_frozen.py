"""First attempt at a warm-started teacher (kept for the record in RESULTS.md): the frozen cascades of
ldr_brain_v1, then one dense VTN cascade learning the residual, label-aware. It learned too slowly."""
from .teacher_rcn_v1stack import config as fine_tuned


def config():
    cfg = fine_tuned()
    cfg.description = cfg.description.replace("ldr_brain_v1 cascades (fine-tuned)", "frozen ldr_brain_v1 cascades")
    cfg.model.prefix_frozen = True
    cfg.optim.lr = 2e-4
    return cfg
