"""Networks: shapes, parameter budget of the LDR student, cascades, discriminator."""
import torch

from DeepRegLib.models import FlowDiscriminator, VTNAffine, build_network, count_parameters


def test_ldr_shapes_and_parameter_ratio():
    ldr = build_network("ldr", 1)
    vtn = build_network("vtn", 1)
    f = torch.rand(1, 1, 32, 48, 32)
    flow, flows = ldr(f, f)
    assert flow.shape == (1, 3, 32, 48, 32) and len(flows) == 1
    n_ldr, n_vtn = count_parameters(ldr), count_parameters(vtn)
    assert n_vtn / n_ldr > 4, (n_ldr, n_vtn)


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


def test_affine_subnet_and_discriminator():
    f = torch.rand(2, 1, 32, 32, 32)
    flow = VTNAffine()(f, f)
    assert flow.shape == (2, 3, 32, 32, 32) and flow.abs().max() < 1e-5  # zero-initialised head
    score = FlowDiscriminator()(torch.randn(2, 3, 32, 32, 32), f)
    assert score.shape == (2,)
