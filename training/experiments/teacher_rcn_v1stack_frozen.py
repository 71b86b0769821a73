"""First attempt at a warm-started teacher (kept for the record in RESULTS.md): the frozen cascades of
ldr_brain_v1, then one dense VTN cascade learning the residual, label-aware. It learned too slowly."""
from .teacher_rcn import config as unsupervised


def config():
    cfg = unsupervised()
    cfg.description = ("RCN teacher: frozen ldr_brain_v1 cascades + 1 dense VTN cascade (base 16), "
                       "1 - CC + 0.5 smoothness + 1.0 soft Dice (16 random labels per step) on training-subject labels")
    cfg.model.prefix = "Resources/models/ldr_brain_v1"
    cfg.model.affine_subnet = False
    cfg.model.cascades = 1
    cfg.model.kwargs = {"base": 16}
    cfg.loss.dice = 1.0
    cfg.optim.lr = 2e-4
    cfg.loop.steps = 6000
    return cfg
