"""Outside baseline: VoxelMorph (the `voxelmorph` package's VxmPairwise, its default U-Net and
diffeomorphic integration) on the students' data, grid and loss, trained from scratch for the
students' step budget (training/RESULTS.md says what that budget means for a from-scratch net)."""
from ._base import STUDENT_STEPS, brain_student


def config():
    cfg = brain_student(1, "VoxelMorph (voxelmorph 0.3.4 VxmPairwise, nb_features 16 x 5, 5 integration steps), "
                           "1 - CC + 0.5 smoothness, from scratch", name="standard")
    cfg.model.architecture = "voxelmorph"
    cfg.optim.lr = 1e-4  # the package's usual learning rate
    cfg.loop.steps = STUDENT_STEPS
    cfg.loop.val_every = 200
    return cfg
