"""ALDK as published (issue 27): known answers for the critic objective, the student loss, the gradient
penalty and the schedule; a toy game that catches a wrong critic sign; the published experiments."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from training import experiments
from training.config import LossConfig
from training.losses import CompositeLoss, critic_gap, gradient_penalty
from training.networks import FlowDiscriminator
from training.strategies.adversarial import adversarial_step, critic_loss, student_terms
from training.trainer import Trainer


class LinearCritic(torch.nn.Module):
    """``D(phi) = sum(w * phi) + b`` per sample: its gradient is ``w`` everywhere."""

    def __init__(self, w: torch.Tensor, b: float = 0.0, trainable: bool = False) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w.clone(), requires_grad=trainable)
        self.b = torch.nn.Parameter(torch.tensor(float(b)), requires_grad=trainable)

    def forward(self, phi: torch.Tensor) -> torch.Tensor:
        return (self.w * phi).flatten(1).sum(1) + self.b


def _grads(module: torch.nn.Module, loss: torch.Tensor) -> dict:
    module.zero_grad(set_to_none=True)
    loss.backward()
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in module.named_parameters()}


# ----------------------------------------------------------------------------- (a) the objective's gradient at equal scores
def test_linear_objective_has_a_critic_gradient_where_the_squared_one_has_none():
    """A critic that scores two different flows the same (its projection zeroed: every score is the bias,
    as near a fresh critic): the squared gap's gradient is exactly zero, the linear gap's is not, and it
    is -(mean features of the teacher's flow - mean features of the student's) on the projection."""
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 32, 32, 32), torch.randn(2, 3, 32, 32, 32) + 1.0
    grads, scores = {}, {}
    for objective, output in (("linear", "logit"), ("squared", "sigmoid")):
        torch.manual_seed(1)  # the same weights for both
        critic = FlowDiscriminator(layers=5, output=output)
        with torch.no_grad():
            critic.head.weight.zero_()
            critic.head.bias.fill_(0.3)
        scores[objective] = (critic(s).detach(), critic(t).detach())
        assert torch.equal(scores[objective][0], scores[objective][1])  # equal scores
        c = critic_loss(critic, s, t, objective, penalty=0.0)
        grads[objective] = _grads(critic, c["loss"])
        assert float(c["gap"].detach()) == 0.0
    assert all(float(g.abs().max()) == 0.0 for g in grads["squared"].values())
    g_lin = grads["linear"]["head.weight"].flatten()
    torch.manual_seed(1)
    probe = FlowDiscriminator(layers=5, output="logit")  # the same body as both critics
    with torch.no_grad():
        feat_t = probe.body(t).mean(dim=(2, 3, 4)).mean(0)  # d D / d head.weight: the mean feature, per channel
        feat_s = probe.body(s).mean(dim=(2, 3, 4)).mean(0)
    assert float(g_lin.abs().max()) > 1e-4
    assert torch.allclose(g_lin, -(feat_t - feat_s), atol=1e-6, rtol=1e-4)  # loss = -(D(t) - D(s))
    assert math.isclose(float(scores["linear"][0][0]), 0.3, rel_tol=1e-6)  # logits: no sigmoid
    assert math.isclose(float(scores["squared"][0][0]), 1 / (1 + math.exp(-0.3)), rel_tol=1e-6)


def test_critic_gap_known_values_and_unknown_objective():
    critic = LinearCritic(torch.full((1, 3, 2, 2, 2), 0.5))
    s, t = torch.zeros(1, 3, 2, 2, 2), torch.ones(1, 3, 2, 2, 2)  # D(s) = 0, D(t) = 0.5 * 24 = 12
    assert float(critic_gap(critic, s, t, "linear")) == pytest.approx(12.0)
    assert float(critic_gap(critic, s, t, "squared")) == pytest.approx(144.0)
    assert float(critic_gap(critic, s, t)) == pytest.approx(144.0)  # the earlier runs' default
    with pytest.raises(ValueError, match="critic objective"):
        critic_gap(critic, s, t, "hinge")


# ----------------------------------------------------------------------------- (b) the student's loss
@pytest.mark.parametrize("objective,l_dis", [("linear", 7.68), ("squared", 7.68 ** 2)])
def test_student_loss_is_gamma_rec_plus_one_minus_gamma_dis(objective, l_dis):
    """l_rec = 1 - CC(warped moving, fixed) = 2 for moving = -fixed and a zero flow; the critic
    D = 0.01 * sum(phi) scores the zero student flow 0 and the teacher's 0.5-voxel flow 0.01 * 0.5 * 1536
    = 7.68: l_dis = 7.68 (linear) or 7.68^2 (squared). gamma 0.3."""
    torch.manual_seed(0)
    fixed = torch.rand(1, 1, 8, 8, 8)
    batch = {"fixed": fixed, "moving": -fixed}
    loss = CompositeLoss(LossConfig(similarity="cc", smooth=0.0, dice=0.0))
    flow = torch.zeros(1, 3, 8, 8, 8)
    teacher = torch.full((1, 3, 8, 8, 8), 0.5)
    critic = LinearCritic(torch.full((1, 3, 8, 8, 8), 0.01))
    gamma = 0.3
    terms = student_terms(loss, batch, flow, [flow], teacher, critic, gamma, objective)
    assert float(terms["sim"]) == pytest.approx(2.0, abs=1e-4)
    assert float(terms["adv"]) == pytest.approx(l_dis, rel=1e-5)
    assert float(terms["total"]) == pytest.approx(gamma * 2.0 + (1 - gamma) * l_dis, rel=1e-5, abs=1e-4)
    off = student_terms(loss, batch, flow, [flow], teacher, critic, gamma, objective, adversarial=False)
    assert "adv" not in off and float(off["total"]) == pytest.approx(2.0, abs=1e-4)  # l_rec alone, weight 1


def test_student_loss_keeps_the_regularisers_outside_gamma():
    torch.manual_seed(0)
    fixed = torch.rand(1, 1, 8, 8, 8)
    batch = {"fixed": fixed, "moving": torch.rand(1, 1, 8, 8, 8)}
    loss = CompositeLoss(LossConfig(similarity="cc", smooth=0.5, dice=0.0))
    flow = 0.3 * torch.randn(1, 3, 8, 8, 8)
    critic = LinearCritic(torch.full((1, 3, 8, 8, 8), 0.01))
    t = student_terms(loss, batch, flow, [flow], torch.zeros_like(flow), critic, 0.3, "linear")
    assert float(t["total"]) == pytest.approx(0.3 * float(t["sim"]) + 0.5 * float(t["smooth"]) + 0.7 * float(t["adv"]),
                                              rel=1e-5)


# ----------------------------------------------------------------------------- (c) the gradient penalty
@pytest.mark.parametrize("beta", [None, 0.1, 0.0, 1.0, 0.5])
def test_gradient_penalty_of_a_linear_critic_is_norm_minus_one_squared(beta):
    torch.manual_seed(0)
    w = 0.05 * torch.randn(1, 3, 4, 4, 4)
    critic = LinearCritic(w, b=2.0)
    expected = (float(w.norm()) - 1.0) ** 2
    t, s = torch.randn(3, 3, 4, 4, 4), 5 * torch.randn(3, 3, 4, 4, 4)
    gen = torch.Generator().manual_seed(3)
    assert float(gradient_penalty(critic, t, s, gen, beta)) == pytest.approx(expected, rel=1e-6)
    for k in range(3):  # per sample
        assert float(gradient_penalty(critic, t[k:k + 1], s[k:k + 1], gen, beta)) == pytest.approx(expected, rel=1e-6)


def test_gradient_penalty_is_taken_at_beta_teacher_plus_one_minus_beta_student():
    """D = 0.5 ||phi||^2 has gradient phi: the penalty is (||beta t + (1 - beta) s|| - 1)^2 for a fixed beta."""
    class Quadratic(torch.nn.Module):
        def forward(self, phi):
            return 0.5 * phi.pow(2).flatten(1).sum(1)
    torch.manual_seed(0)
    t, s = 0.1 * torch.randn(1, 3, 4, 4, 4), 0.1 * torch.randn(1, 3, 4, 4, 4)
    for beta in (0.1, 0.7):
        expected = (float((beta * t + (1 - beta) * s).norm()) - 1.0) ** 2
        assert float(gradient_penalty(Quadratic(), t, s, beta=beta)) == pytest.approx(expected, rel=1e-6)
    swapped = (float((0.1 * s + 0.9 * t).norm()) - 1.0) ** 2  # beta weighing the student instead would give this
    assert abs(float(gradient_penalty(Quadratic(), t, s, beta=0.1)) - swapped) > 1e-3


# ----------------------------------------------------------------------------- a toy game: the signs
@pytest.mark.parametrize("objective", ["linear", "squared"])
def test_critic_then_student_steps_move_the_student_flow_towards_the_teachers(objective):
    """A linear critic trained by the critic loss, then the student's flow (a free tensor) stepped on the
    student loss with gamma = 0: the flow gets closer to the teacher's. A wrong sign of the critic's
    objective or of the student's term moves it away."""
    torch.manual_seed(0)
    teacher = torch.randn(1, 3, 4, 4, 4)
    student = torch.zeros(1, 3, 4, 4, 4, requires_grad=True)
    w0 = torch.zeros(1, 3, 4, 4, 4) if objective == "linear" else 0.01 * torch.randn(1, 3, 4, 4, 4)
    critic = LinearCritic(w0, trainable=True)
    # the squared gap grows the critic's weights geometrically (its ascent is proportional to the gap): a small step
    c_opt = torch.optim.SGD(critic.parameters(), lr=0.05 if objective == "linear" else 1e-2)
    s_opt = torch.optim.SGD([student], lr=0.05)
    loss = CompositeLoss(LossConfig(smooth=0.0, dice=0.0))
    batch = {"fixed": torch.rand(1, 1, 4, 4, 4), "moving": torch.rand(1, 1, 4, 4, 4)}
    start = float((student - teacher).norm())
    for _ in range(3):
        c_opt.zero_grad()
        critic_loss(critic, student, teacher, objective, penalty=0.1, beta=0.1)["loss"].backward()
        c_opt.step()
        critic.requires_grad_(False)
        s_opt.zero_grad()
        terms = student_terms(loss, batch, student, [student], teacher, critic, 0.0, objective)
        assert set(terms) == {"total", "adv"}  # gamma 0: the similarity term is not computed
        terms["total"].backward()
        s_opt.step()
        critic.requires_grad_(True)
    if objective == "linear":  # the critic's weights point from the student's flow to the teacher's
        cos = torch.nn.functional.cosine_similarity(critic.w.flatten(), teacher.flatten(), dim=0)
        assert float(cos) > 0.9
    assert float((student - teacher).norm()) < start - 1e-3


# ----------------------------------------------------------------------------- (d) the schedule
def test_adversarial_schedule():
    assert [adversarial_step(k, 3) for k in range(7)] == [True, False, False, True, False, False, True]
    assert [adversarial_step(k, 3, until=6) for k in range(10)] == [True, False, False, True] + [False] * 6
    assert all(adversarial_step(k) for k in range(5))  # the earlier runs: every step, never off
    assert [adversarial_step(k, 2, 0) for k in range(4)] == [True, False, True, False]


@pytest.fixture(scope="module")
def smoke_teacher(tmp_path_factory) -> Path:
    from conftest import smoke_run
    return smoke_run(tmp_path_factory, "smoke_teacher")


class Record:
    """Every step's logs and the critic's weights after it."""

    def __init__(self) -> None:
        self.logs, self.critic = [], []

    def on_train_start(self, trainer): ...
    def on_step_start(self, trainer): ...
    def on_train_end(self, trainer): ...

    def on_step_end(self, trainer, logs):
        self.logs.append(dict(logs))
        if hasattr(trainer.strategy, "critic"):
            self.critic.append({k: v.clone() for k, v in trainer.strategy.critic.state_dict().items()})


def test_the_schedule_in_training(tmp_path, smoke_teacher):
    """smoke_aldk_linear with the adversarial term every 3rd step until step 6: the term and the critic
    rounds on steps 0 and 3 only; the other steps' loss is the plain composite loss."""
    cfg = experiments.load("smoke_aldk_linear")
    cfg.run_dir, cfg.strategy.teacher = str(tmp_path / "run"), str(smoke_teacher)
    cfg.loop.steps, cfg.loop.val_every = 8, 100
    cfg.strategy.adversarial_until = 6
    rec = Record()
    tr = Trainer(cfg, callbacks=[rec], verbose=False)
    critic0 = {k: v.clone() for k, v in tr.strategy.critic.state_dict().items()}
    tr.fit()
    on = [k for k, logs in enumerate(rec.logs) if "adv" in logs]
    assert on == [0, 3] and [k for k, logs in enumerate(rec.logs) if "critic_gap" in logs] == [0, 3]
    assert [logs["adversarial"] for logs in rec.logs] == [1.0, 0, 0, 1.0, 0, 0, 0, 0]
    before = [critic0] + rec.critic[:-1]
    changed = [k for k in range(8) if any(not torch.equal(before[k][n], rec.critic[k][n]) for n in critic0)]
    assert changed == [0, 3]
    w, lam, gamma = cfg.loss, cfg.loss.gradient_penalty, cfg.loss.gamma
    for k, logs in enumerate(rec.logs):
        rest = w.smooth * logs["smooth"] + w.dice * logs.get("dice", 0.0)
        if k in (0, 3):
            assert logs["total"] == pytest.approx(gamma * logs["sim"] + rest + (1 - gamma) * logs["adv"], rel=1e-5)
            assert logs["critic_loss"] == pytest.approx(-logs["critic_gap"] + lam * logs["critic_gp"], rel=1e-5)
        else:
            assert logs["total"] == pytest.approx(logs["sim"] + rest, rel=1e-5)


# ----------------------------------------------------------------------------- the published experiments
def test_published_experiments_carry_the_reference_settings():
    """Values from the authors' code (github.com/aioz-ai/LDR_ALDK, train.py: --beta 0.1, --gamma 0.3,
    --lamb 0.1; the learning scheme's `% 3` and 8000) and the earlier ALDK runs left as they were."""
    base = experiments.load("ldr_aldk")
    for name, objective in (("ldr_aldk_linear", "linear"), ("ldr_aldk_squared", "squared")):
        cfg = experiments.load(name)
        s = cfg.strategy
        assert (s.name, s.critic_objective, s.aldk_beta, s.adversarial_every, s.adversarial_until) == \
            ("adversarial", objective, 0.1, 3, 8000)
        assert (cfg.loss.gamma, cfg.loss.gradient_penalty, s.critic_layers) == (0.3, 0.1, 5)
        assert (cfg.model, cfg.data, cfg.loop, cfg.optim, s.teacher) == \
            (base.model, base.data, base.loop, base.optim, base.strategy.teacher)
    for name in ("ldr_aldk", "ldr_aldk_c1", "ldr_aldk_c3", "ldr_aldk_unsup", "smoke_adversarial"):
        cfg = experiments.load(name)  # the earlier runs' settings (RESULTS.md) are unchanged
        s = cfg.strategy
        assert (cfg.loss.gradient_penalty, s.critic_objective, s.critic_layers, s.aldk_beta) == (10.0, "squared", 6, None)
        assert (s.adversarial_every, s.adversarial_until) == (1, 0)
        assert cfg.loss.gamma == 0.5 and (s.critic_every, s.critic_steps) == (2, 1)


# ----------------------------------------------------------------------------- pairs with a known answer
@pytest.mark.parametrize("name", ["smoke_distill", "smoke_aldk_linear"])
def test_the_teacher_is_not_asked_on_pairs_with_a_known_answer(name, tmp_path, smoke_teacher):
    """With the precision work's same-subject pairs in the data (``data.same_subject``), a step on such a pair
    learns from its exact answer (the ``known`` term) and neither runs the teacher nor has a distillation or
    adversarial term; the other steps are distilled as before (both kinds occur in 10 steps of this seed)."""
    cfg = experiments.load(name)
    cfg.run_dir, cfg.strategy.teacher = str(tmp_path / "run"), str(smoke_teacher)
    cfg.loop.steps, cfg.loop.val_every = 10, 100
    cfg.strategy.adversarial_every, cfg.strategy.adversarial_until = 1, 0  # ALDK: every step would be adversarial
    cfg.data.same_subject, cfg.loss.known_flow = 0.5, 1.0
    rec = Record()
    tr = Trainer(cfg, callbacks=[rec], verbose=False)
    asked = []
    tr.strategy.teacher_flow = lambda batch, f=tr.strategy.teacher_flow: asked.append(tr.step) or f(batch)
    tr.fit()
    known = [k for k, logs in enumerate(rec.logs) if "known" in logs]
    taught = "distill" if name == "smoke_distill" else "adv"
    assert 0 < len(known) < 10
    assert asked == [k for k in range(10) if k not in known]
    assert [k for k, logs in enumerate(rec.logs) if taught in logs] == asked


def test_the_default_students_arms_differ_from_their_control_only_in_what_the_teacher_adds():
    """ldr4_flowdistill and ldr4_aldk_linear against ldr4_noteacher: the same start (the shipped default), data,
    optimiser, budget and selection; only the strategy and the teacher's loss weights differ."""
    from training.config import to_dict
    control = to_dict(experiments.load("ldr4_noteacher"))
    assert control["model"]["init"] == "Resources/models/ldr_brain_v4" and control["strategy"]["teacher"] == ""
    for name, loss_keys in (("ldr4_flowdistill", {"distill"}), ("ldr4_aldk_linear", {"gamma", "gradient_penalty"})):
        arm = to_dict(experiments.load(name))
        assert {k for k in control if arm[k] != control[k]} == {"name", "description", "strategy", "loss"}
        assert {k for k in control["loss"] if arm["loss"][k] != control["loss"][k]} == loss_keys
        assert arm["strategy"]["teacher"] == "training/runs/teacher_rcn_ref" and arm["strategy"]["teacher_store"]
