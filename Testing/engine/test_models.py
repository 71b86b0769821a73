"""Inference networks: shapes, cascades, identity start; the engine holds no training-only network."""
import pkgutil

import torch

import DeepRegLib.models as models
from DeepRegLib.models import build_network, count_parameters


def test_ldr_shapes_and_parameters():
    ldr = build_network("ldr", 1)
    f = torch.rand(1, 1, 32, 48, 32)
    flow, flows = ldr(f, f)
    assert flow.shape == (1, 3, 32, 48, 32) and len(flows) == 1
    # the student of the seed: 4 convs 16..128 + 3 deconvs + flow head (~1.55 M parameters)
    assert 1.4e6 < count_parameters(ldr) < 1.7e6


def test_cascades_compose_and_pad_odd_sizes():
    net = build_network("ldr", 3)
    f = torch.rand(1, 1, 30, 37, 33)
    flow, flows = net(f, torch.rand_like(f))
    assert flow.shape == (1, 3, 30, 37, 33) and len(flows) == 3


def test_flow_starts_near_identity():
    net = build_network("ldr", 2)
    f = torch.rand(1, 1, 32, 32, 32)
    flow, _ = net(f, f)
    assert flow.abs().max() < 1e-2


def test_engine_has_no_training_only_networks():
    names = {m.name for m in pkgutil.iter_modules(models.__path__)}
    assert not names & {"vtn", "discriminator"}, names
    assert set(models.SUBNETS) == {"ldr"}
