"""The label-aware RCN teacher, warm-started: the frozen cascades of ldr_brain_v1, then dense VTN cascades.

An RCN is a composition of cascades, each warping the moving image by the flow so far;
here the first two are the bundled student's (frozen), so the teacher starts at the
student's accuracy and its VTN cascades learn only the residual deformation, with
1 - CC + smoothness + soft Dice on the training subjects' labels. On two CPU cores a
34.9 M-parameter teacher trained from scratch was still below the student after 1,000
steps (RESULTS.md); this one is useful within one session.
"""
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
