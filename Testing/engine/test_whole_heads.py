"""The brain models on whole heads that are not skull-stripped (issue 12: "keeps working on
whole-head images"): T1-like heads rendered from two SynthSeg label maps that no model was trained on
(``benchmarks/bench_heads.py`` measures all 12 pairs)."""
from __future__ import annotations

import sys

import pytest
import SimpleITK as sitk

from DeepRegLib import DEFAULT_MODEL
from DeepRegLib.inference import register

from conftest import REPO, SHARED


@pytest.mark.parametrize("model", [DEFAULT_MODEL, "universal"])
def test_brain_models_register_a_whole_head_pair_beyond_the_affine_stage(model):
    """The default model and the universal model's brain task (its default)."""
    if not (SHARED / "brain-synthseg-labelmaps").is_dir():
        pytest.skip(f"real data not found at {SHARED / 'brain-synthseg-labelmaps'} "
                    "(../shared/data is only on CI and developer machines)")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_heads import dice, rendered_heads
    heads = rendered_heads([17, 18], seed=0)
    fixed, moving = heads[17]["head"], heads[18]["head"]
    # whole heads: skull, scalp, eyes and neck present (non-brain labels cover most of the head)
    arr = heads[17]["labels"]
    assert float((sitk.GetArrayViewFromImage(arr) >= 100).mean()) > 0.05
    aff = register(fixed, moving, model=model, device="cpu", mode="affine")
    res = register(fixed, moving, model=model, device="cpu")
    d_aff = dice(heads[17]["labels"], heads[18]["labels"], aff.transform())
    d_def = dice(heads[17]["labels"], heads[18]["labels"], res.transform())
    assert d_aff["brain"] > 0.3  # the affine stage finds the head
    assert d_def["brain"] > d_aff["brain"] + 0.05 and d_def["subcortical"] > d_aff["subcortical"], (d_aff, d_def)
