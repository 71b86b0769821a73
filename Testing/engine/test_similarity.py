"""The similarity registry (DeepRegLib.similarity): known answers for each measure and one
vocabulary for the refinement and training."""
import pytest
import torch

from DeepRegLib.refine import RefineConfig
from DeepRegLib.similarity import SIMILARITIES, GlobalCC, LocalNCC, Similarity


def _pair(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 1, 10, 11, 12, generator=g), torch.rand(2, 1, 10, 11, 12, generator=g)


def test_global_cc_is_pearsons_correlation_per_sample():
    f, m = _pair()
    expected = torch.stack([torch.corrcoef(torch.stack([f[i].flatten(), m[i].flatten()]))[0, 1] for i in range(2)])
    assert torch.allclose(GlobalCC(f, eps=0.0)(m), expected.mean(), atol=1e-6)
    # a mask keeps only the voxels it weights: the same as cutting them out
    mask = torch.zeros(2, 1, 10, 11, 12)
    mask[:, :, 2:7, 3:9, 1:10] = 1
    cut = [torch.corrcoef(torch.stack([f[i, :, 2:7, 3:9, 1:10].flatten(), m[i, :, 2:7, 3:9, 1:10].flatten()]))[0, 1]
           for i in range(2)]
    assert torch.allclose(GlobalCC(f, mask, eps=0.0)(m), torch.stack(cut).mean(), atol=1e-6)


def test_local_ncc_is_one_for_a_linear_intensity_change_and_lower_otherwise():
    f, m = _pair()
    assert float(LocalNCC(f, 5, eps=1e-12)(2.0 * f + 0.3)) == pytest.approx(1.0, abs=1e-4)
    assert float(LocalNCC(f, 5)(m)) < 0.2


def test_registry_names_and_errors():
    assert set(SIMILARITIES) == {"ncc", "cc", "mind", "mi"}
    f, m = _pair()
    for name in SIMILARITIES:
        s = Similarity(name, window=5)
        bound = s.bind(f[:1])
        assert float(bound(bound.prepare(f[:1]))) > float(bound(bound.prepare(m[:1]))), name  # itself matches best
        assert float(s.loss(f[:1], f[:1])) < float(s.loss(f[:1], m[:1])), name
    with pytest.raises(ValueError, match=r"unknown similarity 'lnc'.*did you mean 'ncc'"):
        Similarity("lnc")
    with pytest.raises(ValueError, match="odd"):
        LocalNCC(f, 4)


def test_refinement_measures_with_the_registry():
    """The refinement's NCC window is its millimetres over the grid spacing (odd, >= 3), with the card's
    eps and minimum standard deviation."""
    cfg = RefineConfig(ncc_window_mm=10.0, ncc_eps=1e-12, ncc_min_std=0.03)
    assert cfg.measure(2.0) == Similarity("ncc", window=5, eps=1e-12, min_std=0.03)
    assert cfg.measure(1.0).window == 11 and cfg.measure(8.0).window == 3
    assert RefineConfig(similarity="mind").measure(2.0).name == "mind"


def test_one_similarity_object_for_refinement_and_training():
    """The object training's composite loss takes also drives refine_flow: given the config's own measure it
    changes nothing; another measure changes what is optimised."""
    import torch
    from DeepRegLib.refine import refine_flow
    from training.losses import CompositeLoss
    g = torch.Generator().manual_seed(3)
    fixed = torch.rand(1, 1, 16, 16, 16, generator=g)
    moving = torch.roll(fixed, 1, dims=4)
    flow = torch.zeros(1, 3, 16, 16, 16)
    cfg = RefineConfig(max_steps=3, ncc_window_mm=10.0, integration_steps=0)
    same = cfg.measure(2.0)
    a = refine_flow(fixed, moving, flow, 2.0, cfg)
    b = refine_flow(fixed, moving, flow, 2.0, cfg, similarity=same)
    assert a.losses == b.losses and torch.equal(a.flow, b.flow)
    c = refine_flow(fixed, moving, flow, 2.0, cfg, similarity=Similarity("cc"))
    assert c.losses[0] != a.losses[0]
    loss_cfg = type("L", (), {"similarity": "cc", "ncc_window": 9, "smooth": 0.0, "dice": 0.0, "distill": 0.0})()
    terms = CompositeLoss(loss_cfg, similarity=Similarity("cc"))({"fixed": fixed, "moving": moving}, flow, [flow])
    assert abs(float(terms["sim"]) - c.losses[0]) < 1e-6  # the same measure, the same number at the start
