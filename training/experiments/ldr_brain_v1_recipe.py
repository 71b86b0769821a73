"""ldr_brain_v1's recipe in one command: the LDR student (2 cascades) from scratch, 1 - CC + 0.5 smoothness,
Adam lr 2e-4, batch 1, left-right flips, 4,600 steps (where v1 was stopped by hand), validation every 200 steps.

``ldr_noteacher`` is not this recipe: it fine-tunes *from* v1's weights. v1 itself was made by the former
single-loop script ``training/train_ldr.py`` (commit 15f4b6d) on the data preparation of that time; this run
uses today's trainer and today's affine stage, so it rebuilds v1's recipe, not v1 bit for bit.
"""
from ._base import brain_student


def config():
    cfg = brain_student(2, "LDR student (2 cascades) from scratch, 1 - CC + 0.5 smoothness: ldr_brain_v1's recipe",
                        warm=False, name="standard")
    cfg.optim.lr = 2e-4
    cfg.loop.steps = 4600
    cfg.loop.val_every = 200
    return cfg
