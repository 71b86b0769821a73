"""Training checkpoints load without running code from the file (issue 25: weights_only)."""
from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch

from training.checkpoints import load_checkpoint


class _Payload:
    def __reduce__(self):  # what a crafted checkpoint would carry
        return (exec, ("import pathlib; pathlib.Path(__file__ if '__file__' in dir() else 'x').parent",))


def test_a_checkpoint_with_rng_states_loads(tmp_path):
    rng = np.random.default_rng(3)
    state = {"config": {"name": "x", "loop": {"steps": 2}}, "modules": {"model": {"w": torch.ones(2)}},
             "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                     "sampler": rng.bit_generator.state},
             "history": [{"step": 1, "dice": 0.5}], "step": 2}
    path = tmp_path / "last.pt"
    torch.save(state, path)
    back = load_checkpoint(path)
    assert back["step"] == 2 and torch.equal(back["modules"]["model"]["w"], torch.ones(2))
    np.random.set_state(back["rng"]["numpy"])  # usable as saved
    assert back["rng"]["sampler"] == rng.bit_generator.state


def test_a_pickled_payload_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"modules": _Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path)
