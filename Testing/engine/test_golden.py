"""Golden values for the bundled sample pair (18 -> 17): Dice and ~200 mapped points.

The stored figures (``Testing/golden/sample_pair.json``) are regenerated deliberately with
``Testing/golden/regenerate.py`` in a commit that says why (e.g. a new default model).  A change
in the engine that moves points by more than 0.2 mm (p95) or costs more than 0.005 Dice fails here.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "golden"))
import regenerate  # noqa: E402

from DeepRegLib import DEFAULT_MODEL  # noqa: E402

GOLDEN = json.loads(regenerate.GOLDEN.read_text())


def check(key: str) -> None:
    if GOLDEN.get("model") != DEFAULT_MODEL:
        pytest.fail(f"golden values are for {GOLDEN.get('model')}, the default model is {DEFAULT_MODEL}: "
                    "regenerate them deliberately (Testing/golden/regenerate.py)")
    want = GOLDEN[key]
    got = regenerate.run(key)
    for group in ("subcortical", "cortical", "all"):
        assert got["dice"][group] >= want["dice"][group] - 0.005, (group, got["dice"], want["dice"])
    err = np.linalg.norm(np.asarray(got["mapped"]) - np.asarray(want["mapped"]), axis=1)
    assert np.allclose(got["points"], want["points"])
    assert np.percentile(err, 95) <= 0.2, f"mapped points moved: p95 {np.percentile(err, 95):.3f} mm, max {err.max():.3f}"


def test_golden_default_model():
    check("default")


@pytest.mark.slow
def test_golden_refine():
    if "refine" not in GOLDEN:
        pytest.fail("no refine golden values stored: run Testing/golden/regenerate.py --refine")
    check("refine")
