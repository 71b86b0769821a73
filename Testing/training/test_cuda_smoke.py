"""Mixed precision (AMP): one gradient scaler per optimiser, and every strategy's two steps under fp16 autocast.

The CUDA smoke runs skip without a device (CI and the development machine are CPU-only; they passed on a lent
H200 on 2026-12-04, `training/results/gpu_profile/pytest_cuda.log`); the CPU tests
check the structure (one scaler per optimiser, distinct objects, checkpointed) and the behaviour with
enabled scalers: an overflow in one player's gradients skips only that player's step, and SAM's
two passes under a scaler give the update they give without one.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from training import experiments
from training.strategies.continual import sam_step
from training.trainer import Trainer

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here (CI and this machine are CPU-only)")

#: strategy -> (smoke experiment, teacher it needs: 'vtn' the RCN smoke teacher, 'hr' a 2 mm LDR run, None)
STRATEGIES = {
    "standard": ("smoke_standard", None),
    "distill": ("smoke_distill", "vtn"),
    "adversarial": ("smoke_adversarial", "vtn"),
    "adversarial_published": ("smoke_aldk_linear", "vtn"),
    "crd": ("smoke_crd", "hr"),
    "replay": ("smoke_cl_replay", None),
    "reptile": ("smoke_cl_replay", None),  # the replay smoke run with the Reptile outer loop
    "sam": ("smoke_cl_sam", None),
    "samcl": ("smoke_cl_samcl", None),
}


def make_teachers(tmp: Path, device: str) -> dict:
    out = {}
    for key, name in (("vtn", "smoke_teacher"), ("hr", "smoke_standard")):
        cfg = experiments.load(name)
        cfg.run_dir, cfg.loop.steps, cfg.loop.device = str(tmp / f"teacher_{key}"), 1, device
        out[key] = Trainer(cfg, verbose=False).fit()
    return out


def smoke_cfg(strategy: str, tmp: Path, teachers: dict, device: str, steps: int = 2):
    name, teacher = STRATEGIES[strategy]
    cfg = experiments.load(name)
    cfg.run_dir = str(tmp / strategy)
    if strategy == "reptile":
        cfg.strategy.name = "reptile"
    if teacher:
        cfg.strategy.teacher = str(teachers[teacher])
    cfg.loop.steps, cfg.loop.val_every, cfg.loop.device, cfg.loop.amp = steps, 100, device, True
    return cfg


class Logs:
    def __init__(self) -> None:
        self.rows = []

    def on_train_start(self, trainer): ...
    def on_step_start(self, trainer): ...
    def on_train_end(self, trainer): ...

    def on_step_end(self, trainer, logs):
        self.rows.append(dict(logs))


def run_two_steps(cfg, force_amp: bool = False):
    """Two AMP steps; ``force_amp``: fp16 autocast and enabled scalers on the CPU too (the same code paths)."""
    logs = Logs()
    tr = Trainer(cfg, callbacks=[logs], verbose=False)
    if force_amp:
        tr.amp = True  # read by the strategy's autocast and when its scalers are made (first use)
    before = {k: {n: v.clone() for n, v in m.state_dict().items()} for k, m in tr.strategy.modules.items()}
    tr.fit()
    return tr, before, logs.rows


def check_amp_run(tr, before, rows) -> None:
    s = tr.strategy
    assert tr.amp and len(rows) == 2
    assert set(s.scalers) == set(s.optimisers) and len({id(x) for x in s.scalers.values()}) == len(s.scalers)
    for row in rows:
        assert all(math.isfinite(v) for k, v in row.items() if k != "sam_loss"), row
    for name, scaler in s.scalers.items():
        assert scaler.is_enabled() and math.isfinite(scaler.get_scale()) and scaler.get_scale() > 0, name
        assert scaler._scale is not None, f"{name}'s scaler never scaled a loss"  # made lazily by its first scale()
        module = s.modules[name]
        moved = any(not torch.equal(before[name][n], v) for n, v in module.state_dict().items())
        # a step is taken, or every step overflowed and the scaler backed off (never both unchanged)
        assert moved or scaler.get_scale() < 2.0 ** 16, name
    ck = torch.load(tr.run_dir / "last.pt", weights_only=False)
    assert set(ck["scalers"]) == set(s.optimisers)


# ----------------------------------------------------------------------------- CUDA (skipped here)
@pytest.fixture(scope="module")
def cuda_teachers(tmp_path_factory):
    return make_teachers(tmp_path_factory.mktemp("cuda_teachers"), "cuda")


@CUDA
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_two_amp_steps_on_cuda(strategy, tmp_path, cuda_teachers):
    tr, before, rows = run_two_steps(smoke_cfg(strategy, tmp_path, cuda_teachers, "cuda"))
    assert tr.device.type == "cuda"
    check_amp_run(tr, before, rows)


# ----------------------------------------------------------------------------- CPU: structure and behaviour
@pytest.fixture(scope="module")
def cpu_teachers(tmp_path_factory):
    return make_teachers(tmp_path_factory.mktemp("cpu_teachers"), "cpu")


@pytest.mark.parametrize("strategy,names", [("adversarial", {"model", "critic"}), ("crd", {"model", "fst"}),
                                            ("samcl", {"model"})])
def test_one_scaler_per_optimiser(strategy, names, tmp_path, cpu_teachers):
    tr = Trainer(smoke_cfg(strategy, tmp_path, cpu_teachers, "cpu"), verbose=False)
    s = tr.strategy
    assert set(s.optimisers) == set(s.scalers) == names
    assert len({id(x) for x in s.scalers.values()}) == len(names)  # distinct objects
    assert s.scaler is s.scalers["model"] and not any(x.is_enabled() for x in s.scalers.values())  # no AMP on the CPU


def test_an_overflow_skips_only_that_players_step(tmp_path, cpu_teachers):
    """Enabled scalers (CPU): infinite critic gradients skip the critic's step and halve its scale only;
    the model's scaler and step are untouched, as they were not with one shared scaler."""
    tr = Trainer(smoke_cfg("adversarial", tmp_path, cpu_teachers, "cpu"), verbose=False)
    tr.amp = True
    s = tr.strategy
    critic0 = {n: v.clone() for n, v in s.critic.state_dict().items()}
    p = next(s.critic.parameters())
    s.optimise(p.sum() * float("inf"), "critic")
    assert all(torch.equal(critic0[n], v) for n, v in s.critic.state_dict().items())  # skipped
    assert s.scalers["critic"].get_scale() == 2.0 ** 15 and s.scalers["model"].get_scale() == 2.0 ** 16
    model0 = {n: v.clone() for n, v in s.model.state_dict().items()}
    s.optimise(sum(q.pow(2).sum() for q in s.model.parameters()), "model")
    assert any(not torch.equal(model0[n], v) for n, v in s.model.state_dict().items())
    assert s.scalers["model"].get_scale() == 2.0 ** 16


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_step_under_a_scaler_equals_the_unscaled_step(adaptive):
    """SAM on a quadratic with a scaler (scale 2^10) and gradient clipping: the same update as without a scaler
    (the ascent step is scale-invariant, the final gradients are unscaled before clipping); an overflowing
    first pass skips the step and halves the scale."""
    a = torch.tensor([1.0, 4.0, -2.0])
    results = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)):
        w = torch.nn.Parameter(torch.tensor([0.5, -1.0, 2.0]))
        opt = torch.optim.SGD([w], lr=0.1)

        def closure():
            value = 0.5 * (a * w * w).sum()
            (value if scaler is None else scaler.scale(value)).backward()
            return {"total": float(value.detach())}

        sam_step([w], closure, opt, 0.05, adaptive, grad_clip=0.5, scaler=scaler)
        results.append(w.detach().clone())
    assert torch.allclose(results[0], results[1], atol=1e-6)
    assert not torch.allclose(results[0], torch.tensor([0.5, -1.0, 2.0]))
    w = torch.nn.Parameter(torch.tensor([0.5, -1.0, 2.0]))
    opt = torch.optim.SGD([w], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)

    def overflow():
        scaler.scale((w * float("inf")).sum()).backward()
        return {"total": float("inf")}

    logs = sam_step([w], overflow, opt, 0.05, adaptive, scaler=scaler)
    assert torch.equal(w.detach(), torch.tensor([0.5, -1.0, 2.0])) and scaler.get_scale() == 2.0 ** 9
    assert math.isnan(logs["sam_loss"])


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_amp_code_paths_on_the_cpu(strategy, tmp_path, cpu_teachers):
    """The CUDA smoke runs' code paths with fp16 autocast and enabled scalers on the CPU (the scalers' and
    strategies' logic; not CUDA's kernels): two steps, finite losses, every player stepped or backed off."""
    tr, before, rows = run_two_steps(smoke_cfg(strategy, tmp_path, cpu_teachers, "cpu"), force_amp=True)
    check_amp_run(tr, before, rows)


def test_a_checkpoint_from_before_per_optimiser_scalers_resumes(tmp_path, cpu_teachers):
    """An earlier run's checkpoint (one shared scaler, no ALDK options in its config) resumes: the new
    options' defaults are the earlier behaviour, and its one scaler state goes to every optimiser."""
    cfg = smoke_cfg("adversarial", tmp_path, cpu_teachers, "cpu")
    cfg.loop.steps = 1
    Trainer(cfg, verbose=False).fit()
    last = Path(cfg.run_dir) / "last.pt"
    ck = torch.load(last, weights_only=False)
    del ck["scalers"]
    for k in ("critic_objective", "critic_layers", "aldk_beta", "adversarial_every", "adversarial_until"):
        del ck["config"]["strategy"][k]
    torch.save(ck, last)
    cfg.loop.steps = 2
    tr = Trainer(cfg, verbose=False)
    assert tr.step == 1
    tr.fit()
    assert tr.step == 2 and set(torch.load(last, weights_only=False)["scalers"]) == {"model", "critic"}
