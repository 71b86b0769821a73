"""Slow checks, run separately: ``python -m pytest -m slow``."""
import itertools

import pytest
import SimpleITK as sitk

from DeepRegLib.inference import register
from DeepRegLib.metrics import dice_summary

pytestmark = pytest.mark.slow


def test_every_validation_pair_beats_affine(shared_mindboggle):
    for fs, ms in itertools.permutations([17, 18, 19], 2):
        f = shared_mindboggle / f"OASIS-TRT-20-{fs}"
        m = shared_mindboggle / f"OASIS-TRT-20-{ms}"
        res = register(f / "t1weighted_brain.nii.gz", m / "t1weighted_brain.nii.gz", device="cpu")
        fl = sitk.ReadImage(str(f / "labels.DKT31.manual+aseg.nii.gz"))
        ml = sitk.ReadImage(str(m / "labels.DKT31.manual+aseg.nii.gz"))
        aff, dfm = dice_summary(fl, res.warp_labels(ml, affine_only=True)), dice_summary(fl, res.warp_labels(ml))
        assert dfm["subcortical"] > aff["subcortical"] and dfm["cortical"] > aff["cortical"], (fs, ms, aff, dfm)


def test_refine_beats_network_on_every_validation_pair(shared_mindboggle):
    """Refinement (default settings) improves both label groups on each pair and does not fold (1 mm, brain)."""
    from DeepRegLib.qa import transform_folding
    for fs, ms in itertools.permutations([17, 18, 19], 2):
        f = shared_mindboggle / f"OASIS-TRT-20-{fs}"
        m = shared_mindboggle / f"OASIS-TRT-20-{ms}"
        fixed = sitk.ReadImage(str(f / "t1weighted_brain.nii.gz"), sitk.sitkFloat32)
        moving = sitk.ReadImage(str(m / "t1weighted_brain.nii.gz"), sitk.sitkFloat32)
        net = register(fixed, moving, device="cpu")
        ref = register(fixed, moving, device="cpu", refine=True)
        fl = sitk.ReadImage(str(f / "labels.DKT31.manual+aseg.nii.gz"))
        ml = sitk.ReadImage(str(m / "labels.DKT31.manual+aseg.nii.gz"))
        a, b = dice_summary(fl, net.warp_labels(ml)), dice_summary(fl, ref.warp_labels(ml))
        assert b["subcortical"] > a["subcortical"] and b["cortical"] > a["cortical"], (fs, ms, a, b)
        assert transform_folding(ref.transform(), fixed, 1.0, fixed > 0)["folding_percent"] < 0.05


def test_training_smoke(tmp_path, monkeypatch):
    """Two optimisation steps of the real training loop on a tiny grid, then resume from the checkpoint."""
    pytest.importorskip("training.train_ldr")
    from training import data as tdata
    from training.train_ldr import TrainConfig, train
    if not tdata.data_root().is_dir():
        pytest.skip("Mindboggle data not found")
    monkeypatch.setattr(tdata, "TRAIN_SUBJECTS", [1, 2])
    monkeypatch.setattr(tdata, "VALIDATION_SUBJECTS", [17, 18])
    monkeypatch.setattr(tdata, "REPO", tmp_path)
    import training.train_ldr as tl
    monkeypatch.setattr(tl, "REPO", tmp_path)
    cfg = TrainConfig(run=str(tmp_path / "run"), cascades=1, size=(32, 32, 32), spacing=5.0, steps=2, val_every=1)
    run = train(cfg)
    assert (run / "best.pt").exists() and (run / "last.pt").exists()
    cfg.steps = 3
    train(cfg)  # resumes at step 2
    import json
    assert json.loads((run / "history.json").read_text())["step"] == 3
    # fine-tuning: a fresh run initialised from that checkpoint, with the local NCC loss
    ft = TrainConfig(run=str(tmp_path / "ft"), cascades=1, size=(32, 32, 32), spacing=5.0, steps=1, val_every=1,
                     similarity="lncc", ncc_window=5, init=str(run / "best.pt"))
    hist = json.loads((train(ft) / "history.json").read_text())
    assert hist["step"] == 1 and hist["init"]["checkpoint"] == str(run / "best.pt")
    assert 0.0 <= hist["init"]["validation"]["dice"] <= 1.0
