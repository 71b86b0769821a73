"""CRD, the 4 mm student given its 2 mm detail: each image reaches the 4 mm network as 8 sub-voxel channels
(space to depth) instead of their mean. Starts from the bundled crd_lowres_brain with its first convolutions
widened so that it computes exactly that model's flow (trainer.widen_inputs), then the warm CRD recipe
(1,500 steps, lr 1e-4). Control on the same budget: crd_lowres_continued."""
from ._lowres import LOWRES_BUNDLE
from .crd_lowres import crd_config


def config():
    cfg = crd_config(warm=True)
    cfg.description = ("low-resolution LDR student (2 cascades at 4 mm) seeing each image as 2x2x2 sub-voxel channels, "
                       "started from crd_lowres_brain, cross-resolution distillation (FST, attention maps at 3 scales, "
                       "flow distillation) from the distilled 2 mm student (ldr_flowdistill)")
    cfg.model.kwargs["unshuffle"] = True
    cfg.model.init = LOWRES_BUNDLE
    return cfg
