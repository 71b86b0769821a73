"""Continual learning (issue 12): SAM, Reptile, replay buffer, accuracy matrix, task data, smoke runs.

Known answers: SAM on a quadratic, Reptile's interpolation, reservoir sampling's inclusion
probability, ACC/BWT of a hand-computed matrix, metrics with an oracle network. Smoke runs of
every method on three synthetic 16^3 tasks take seconds; the real-data task modules are
checked on one or two pairs each and skip without ``../shared/data``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from DeepRegLib.grid import Grid
from training import experiments
from training.config import from_dict, to_dict
from training.continual import ReplayBuffer, accuracy_summary
from training.data import PairSet
from training.evaluate import evaluate_pairs
from training.strategies.continual import reptile_interpolate, sam_perturbation, sam_step
from training.trainer import Trainer

from conftest import REPO, SHARED

METHODS = ["sequential", "joint", "replay", "sam", "samcl"]


# ----------------------------------------------------------------------------- SAM
def _quadratic():
    a = torch.tensor([1.0, 4.0, -2.0])
    w = torch.nn.Parameter(torch.tensor([0.5, -1.0, 2.0]))
    loss = lambda: 0.5 * (a * w * w).sum()  # grad = a * w
    return a, w, loss


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_ascent_step_and_update_on_a_quadratic(adaptive):
    a, w, loss = _quadratic()
    rho, lr = 0.05, 0.1
    w0 = w.detach().clone()
    g0 = a * w0
    t = w0.abs() if adaptive else torch.ones(3)
    e_expected = rho * t * t * g0 / torch.linalg.norm(t * g0)
    loss().backward()
    (e,) = sam_perturbation([w], rho, adaptive)
    assert torch.allclose(e, e_expected, atol=1e-7)
    assert math.isclose(float(torch.linalg.norm(e / t)), rho, rel_tol=1e-5)  # on the sphere of radius rho (in T^-1 norm)
    w.grad = None
    opt = torch.optim.SGD([w], lr=lr)

    def closure():
        value = loss()
        value.backward()
        return {"total": float(value.detach())}

    logs = sam_step([w], closure, opt, rho, adaptive)
    # the update uses the gradient at w + e, applied at w
    expected = w0 - lr * a * (w0 + e_expected)
    assert torch.allclose(w.detach(), expected, atol=1e-6)
    assert math.isclose(logs["total"], float(0.5 * (a * w0 * w0).sum()), rel_tol=1e-6)
    assert math.isclose(logs["sam_loss"], float(0.5 * (a * (w0 + e_expected) ** 2).sum()), rel_tol=1e-5)
    # the sharp loss is higher along the ascent direction (convex directions dominate here)
    assert logs["sam_loss"] > logs["total"]


# ----------------------------------------------------------------------------- Reptile
def test_reptile_interpolation_known_case():
    model = torch.nn.Linear(2, 1)
    anchor = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, -1.0]]))
        model.bias.fill_(2.0)
        anchor.weight.copy_(torch.tensor([[1.0, 1.0]]))
        anchor.bias.fill_(0.0)
    reptile_interpolate(model, anchor, 0.25)
    assert torch.allclose(model.weight, torch.tensor([[1.5, 0.5]]))
    assert torch.allclose(model.bias, torch.tensor([0.5]))
    reptile_interpolate(model, anchor, 1.0)  # beta = 1 leaves the inner weights
    assert torch.allclose(model.weight, torch.tensor([[1.5, 0.5]]))


def _smoke(experiment: str, tmp_path: Path, **strategy):
    cfg = experiments.load(experiment)
    cfg.run_dir = str(tmp_path / f"{experiment}-{len(list(tmp_path.iterdir()))}")
    for k, v in strategy.items():
        setattr(cfg.strategy, k, v)
    return cfg


def _weights(trainer) -> dict:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_reptile_outer_update_in_training_equals_interpolated_replay(tmp_path):
    """Reptile (replay inside) over one window of 2 steps = w0 + beta * (replay's weights - w0)."""
    def run(strategy, **kw):
        cfg = _smoke("smoke_cl_replay", tmp_path, name=strategy, reptile_inner_steps=2, **kw)
        cfg.loop.steps, cfg.loop.val_every = 2, 100
        tr = Trainer(cfg, verbose=False)
        w0 = _weights(tr)
        tr.fit()
        return w0, _weights(tr)
    w0, w_replay = run("replay")
    w0b, w_half = run("reptile", reptile_beta=0.5)
    _, w_one = run("reptile", reptile_beta=1.0)
    for k in w0:
        assert torch.equal(w0[k], w0b[k])
        assert torch.allclose(w_half[k], w0[k] + 0.5 * (w_replay[k] - w0[k]), atol=1e-6)
        assert torch.allclose(w_one[k], w_replay[k], atol=1e-7)
    assert any(not torch.equal(w_replay[k], w0[k]) for k in w0)  # training did move the weights


# ----------------------------------------------------------------------------- replay buffer
def test_replay_buffer_reservoir():
    buf = ReplayBuffer(5)
    rng = np.random.default_rng(0)
    for i in range(3):
        buf.add((0, i), rng)
    assert buf.items == [[0, 0], [0, 1], [0, 2]]  # below capacity: everything is kept, in order
    for i in range(3, 50):
        buf.add((1, i), rng)
    assert len(buf) == 5 and buf.state["seen"] == 50
    # exclude_task: another task's pair when the buffer holds one (the `mixed` buffer below), else (the fallback)
    # any stored pair, uniformly: this seeded stream left only task-1 pairs, and 400 draws meet each of the 5
    stored = {tuple(it) for it in buf.items}
    assert {t for t, _ in stored} == {1} and len(stored) == 5
    draws = [tuple(buf.sample(rng, exclude_task=1)) for _ in range(400)]
    assert set(draws) == stored and min(draws.count(it) for it in stored) > 40  # 80 expected each
    assert ReplayBuffer(3).sample(rng) is None
    mixed = ReplayBuffer(5)
    for item in ((0, 0), (0, 1), (1, 2)):
        mixed.add(item, rng)
    assert all(tuple(mixed.sample(rng, exclude_task=1)) in ((0, 0), (0, 1)) for _ in range(20))
    assert all(tuple(mixed.sample(rng, exclude_task=0)) == (1, 2) for _ in range(20))
    # inclusion probability of every stream item is capacity / n (Vitter's algorithm R)
    n, k, trials = 20, 4, 4000
    counts = np.zeros(n)
    rng = np.random.default_rng(1)
    for _ in range(trials):
        b = ReplayBuffer(k)
        for i in range(n):
            b.add((0, i), rng)
        for _, i in b.items:
            counts[i] += 1
    p = counts / trials
    assert np.allclose(p, k / n, atol=4 * math.sqrt(k / n * (1 - k / n) / trials))
    # an earlier task is preferred when sampling, and the state is a plain JSON-able dict
    b = ReplayBuffer(3, {"items": [[0, 1], [1, 2], [1, 3]], "seen": 3})
    assert all(b.sample(rng, exclude_task=1) == (0, 1) for _ in range(10))
    assert ReplayBuffer(3, json.loads(json.dumps(b.state))).items == b.items
    empty = ReplayBuffer(0)
    empty.add((0, 0), rng)
    assert len(empty) == 0 and empty.sample(rng) is None


# ----------------------------------------------------------------------------- accuracy matrix
def test_accuracy_matrix_average_and_backward_transfer():
    r = [[0.8, 0.1, 0.2],
         [0.6, 0.7, 0.3],
         [0.5, 0.65, 0.9]]
    s = accuracy_summary(r)
    assert math.isclose(s["average_accuracy"], (0.5 + 0.65 + 0.9) / 3)
    assert math.isclose(s["backward_transfer"], ((0.5 - 0.8) + (0.65 - 0.7)) / 2)
    partial = accuracy_summary(r[:2])  # after two tasks: the tasks seen so far
    assert math.isclose(partial["average_accuracy"], 0.65) and math.isclose(partial["backward_transfer"], -0.2)
    assert accuracy_summary([[0.4, 0.0]])["backward_transfer"] == 0.0
    with pytest.raises(ValueError):
        accuracy_summary([])


# ----------------------------------------------------------------------------- metrics (oracle)
class _Oracle(torch.nn.Module):
    def __init__(self, flows):
        super().__init__()
        self.flows, self.i = flows, 0

    def forward(self, f, m):
        out = torch.from_numpy(self.flows[self.i % len(self.flows)].astype(np.float32))[None]
        self.i += 1
        return out, [out]


def test_task_metrics_with_an_oracle_network():
    from DeepRegLib.spatial import warp
    from training.data import prostate
    from training.data.ct import smooth_flow
    rng = np.random.default_rng(0)
    shape = (16, 20, 24)
    flow = smooth_flow(rng, shape, 2.0)
    assert math.isclose(float(np.sqrt((flow ** 2).sum(0)).max()), 2.0, rel_tol=1e-4)
    moving_lab = np.zeros(shape, np.int16)
    moving_lab[4:12, 5:15, 6:18] = 7
    t = torch.from_numpy(flow)[None]
    fixed_lab = warp(torch.from_numpy(moving_lab.astype(np.float32))[None, None], t, mode="nearest")[0, 0].numpy()
    img = np.ones(shape, np.float16)
    grid = Grid((0.0, 0.0, 0.0), (3.0, 3.0, 3.0), shape[::-1])
    data = PairSet(img[None], img[None], [grid], fixed_lab.astype(np.int16)[None], moving_lab[None], [(0, 0)],
                   flow.astype(np.float16)[None])
    exact = evaluate_pairs(_Oracle([flow]), data, "ct")
    assert exact["accuracy"] > 0.97 and exact["tre_mm"] < 0.02  # float16 storage of the known flow
    zero = evaluate_pairs(_Oracle([np.zeros_like(flow)]), data, "ct")
    body_err = np.sqrt((flow ** 2).sum(0)).mean() * 3.0
    assert math.isclose(zero["tre_mm"], body_err, rel_tol=1e-2) and zero["accuracy"] < exact["accuracy"]
    # prostate: bit-packed gland (bit 0) + one landmark (bit 1), a shift of exactly 2 voxels along x
    f = np.zeros(shape, bool)
    f[4:12, 5:15, 6:16] = True
    lm = np.zeros(shape, bool)
    lm[7:9, 9:11, 8:10] = True
    fixed_p = prostate.pack([f, lm])
    moving_p = prostate.pack([np.roll(f, 2, axis=2), np.roll(lm, 2, axis=2)])
    assert prostate.unpack(fixed_p, 1).sum() == lm.sum() and prostate.unpack(fixed_p, 0).sum() == f.sum()
    shift = np.zeros((3,) + shape, np.float32)
    shift[2] = 2.0
    pdata = PairSet(img[None], img[None], [Grid((0.0,) * 3, (0.4,) * 3, shape[::-1])], fixed_p[None], moving_p[None])
    right = evaluate_pairs(_Oracle([shift]), pdata, "prostate")
    none = evaluate_pairs(_Oracle([np.zeros_like(shift)]), pdata, "prostate")
    assert right["gland_dice"] == 1.0 and right["tre_mm"] < 1e-6
    assert math.isclose(none["tre_mm"], 0.8, rel_tol=1e-6)  # 2 voxels of 0.4 mm
    assert math.isclose(none["gland_dice"], 2 * 8 * 10 * 8 / (2 * 8 * 10 * 10))


# ----------------------------------------------------------------------------- smoke runs
@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Every method's smoke run once: (config, trainer, initial weights, task of each step)."""
    tmp = tmp_path_factory.mktemp("cl")
    out = {}
    for method in METHODS:
        cfg = _smoke(f"smoke_cl_{method}", tmp)
        tr = Trainer(cfg, verbose=False)
        w0 = _weights(tr)
        tasks_seen = []
        original = tr.next_batch
        tr.next_batch = lambda original=original, seen=tasks_seen: (lambda b: (seen.append(b["task"]), b)[1])(original())
        tr.fit()
        out[method] = (cfg, tr, w0, tasks_seen)
    return out


@pytest.mark.parametrize("method", METHODS)
def test_smoke_every_method(method, smoke_runs):
    cfg, tr, w0, tasks_seen = smoke_runs[method]
    assert from_dict(json.loads(json.dumps(to_dict(cfg)))).continual.tasks == cfg.continual.tasks
    doc = json.loads((Path(cfg.run_dir) / "continual.json").read_text())
    t = len(cfg.continual.tasks)
    assert doc["steps"] == [2, 4, 6] and np.asarray(doc["matrix"]).shape == (t, t)
    s = accuracy_summary(doc["matrix"])
    assert math.isclose(doc["average_accuracy"], s["average_accuracy"])
    assert all(0.0 <= a <= 1.0 for row in doc["matrix"] for a in row)
    assert any(not torch.equal(w0[k], v) for k, v in _weights(tr).items())
    if cfg.continual.mode == "sequential":
        assert tasks_seen == [x for x in cfg.continual.tasks for _ in range(2)]
    else:
        assert len(set(tasks_seen)) >= 2
    if method in ("replay", "samcl"):
        assert 0 < len(tr.extra["replay"]["items"]) <= cfg.continual.buffer_size
    log = (Path(cfg.run_dir) / "log.csv").read_text()
    assert ("sam_loss" in log) == (method in ("sam", "samcl"))
    assert ("replay_total" in log) == (method in ("replay", "samcl"))
    # every step's logged total: the current pair's weighted terms plus replay_weight x the replayed pair's total
    import csv
    w, rw = cfg.loss, cfg.strategy.replay_weight
    rows = list(csv.DictReader((Path(cfg.run_dir) / "log.csv").open()))
    assert len(rows) == cfg.loop.steps
    for r in rows:
        x = {k: float(v) for k, v in r.items() if v}
        own = x["sim"] + w.smooth * x["smooth"] + w.dice * x.get("dice", 0.0)
        if "replay_total" in x:
            assert x["replay_total"] == pytest.approx(
                x["replay_sim"] + w.smooth * x["replay_smooth"] + w.dice * x.get("replay_dice", 0.0), rel=1e-5)
        assert x["total"] == pytest.approx(own + rw * x.get("replay_total", 0.0), rel=1e-5)
        if "sam_loss" in x:
            assert math.isfinite(x["sam_loss"]) and x["sam_loss"] > 0


def test_continual_report(smoke_runs, tmp_path):
    from training.studies.continual_report import main
    out = tmp_path / "report"
    assert main([smoke_runs[m][0].run_dir for m in METHODS] + ["--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "smoke_cl_samcl" in text and "| ACC | BWT |" in text
    assert (out / "accuracy.png").stat().st_size > 1000


def test_transfer_figures_known_answer():
    from training.studies.continual_report import transfer
    r = [[0.6, 0.3, 0.2], [0.5, 0.7, 0.4], [0.4, 0.6, 0.9]]
    start = [0.5, 0.2, 0.1]
    t = transfer(r, start)
    assert math.isclose(t["learn"], ((0.6 - 0.5) + (0.7 - 0.2) + (0.9 - 0.1)) / 3)
    assert math.isclose(t["forward_transfer"], ((0.3 - 0.2) + (0.4 - 0.1)) / 2)
    partial = transfer(r[:1], start)  # a run in progress: one row
    assert math.isclose(partial["learn"], 0.1) and math.isclose(partial["forward_transfer"], 0.1)


def test_start_row_of_a_run_started_from_trained_weights(smoke_runs, tmp_path):
    """A run that starts from another run's final weights: its start row is that run's last matrix row."""
    from training.studies.continual_report import main, read_run, start_row
    cfg, tr, _, _ = smoke_runs["sequential"]
    final = Path(cfg.run_dir) / "last.pt"
    child = tmp_path / "child"
    child.mkdir()
    doc = json.loads((Path(cfg.run_dir) / "continual.json").read_text())
    (child / "continual.json").write_text(json.dumps(doc))
    c = to_dict(cfg)
    c["model"]["init"] = str(final)
    (child / "config.json").write_text(json.dumps(c))
    cache = tmp_path / "start.json"
    row = start_row(read_run(child), cache)
    assert np.allclose(row, doc["matrix"][-1], atol=1e-6)
    assert start_row(read_run(Path(cfg.run_dir))) is None  # started from scratch
    cache.write_text(json.dumps({k: [0.0] * len(row) for k in json.loads(cache.read_text())}))
    assert start_row(read_run(child), cache) == [0.0] * len(row)  # computed once per init, then read back
    out = tmp_path / "report"
    assert main([str(child), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "| start (initial weights) |" in text and "LEARN | FWT |" in text
    assert "| affine stage only (zero flow) |" in text


def test_affine_row_is_the_dice_of_the_unwarped_labels(smoke_runs, tmp_path):
    from DeepRegLib.metrics import dice_scores
    from training.continual import Continual
    from training.studies.continual_report import affine_row, read_run
    cfg = smoke_runs["sequential"][0]
    row = affine_row(read_run(Path(cfg.run_dir)), tmp_path / "start.json")
    tasks = Continual(cfg, verbose=False)
    for j, val in enumerate(tasks.val):
        want = []
        for i in range(len(val)):
            fl, ml = val.fixed_labels[i].astype(np.int32), val.moving_labels[i].astype(np.int32)
            scores = dice_scores(fl, ml, [l for l in np.unique(fl) if l != 0])
            want.append(np.mean([v for v in scores.values() if np.isfinite(v)]))
        assert math.isclose(row[j], float(np.mean(want)), rel_tol=1e-6), j


def test_samcl_resume_is_exact(tmp_path):
    """Replay buffer, Reptile anchor and RNG states survive a checkpoint: 4 + 2 steps == 6 steps."""
    straight = _smoke("smoke_cl_samcl", tmp_path)
    a = Trainer(straight, verbose=False)
    a.fit()
    split = _smoke("smoke_cl_samcl", tmp_path)
    split.loop.steps = 3
    Trainer(split, verbose=False).fit()
    split.loop.steps = 6
    b = Trainer(split, verbose=False)
    assert b.step == 3
    b.fit()
    for k, v in _weights(a).items():
        assert torch.allclose(v, _weights(b)[k], atol=1e-6), k
    assert a.extra["replay"] == b.extra["replay"]
    assert a.extra["continual"]["matrix"] == b.extra["continual"]["matrix"]


# ----------------------------------------------------------------------------- real task data
def _need(sub: str) -> Path:
    p = SHARED / sub
    if not p.is_dir():
        pytest.skip(f"real data not found at {p} (../shared/data is only on CI and developer machines)")
    return p


def test_prostate_pairs_geometry_and_labels():
    _need("prostate-mr-us")
    from training.data import prostate
    data = prostate.build([22])  # a validation case
    g = data.grids[0]
    assert data.fixed.shape == (1, 48, 64, 48) and g.spacing == (0.4, 0.4, 0.4) and g.size == (48, 64, 48)
    assert 0.0 <= float(data.fixed.min()) and float(data.fixed.max()) <= 1.0
    fg, mg = prostate.unpack(data.fixed_labels[0], 0), prostate.unpack(data.moving_labels[0], 0)
    assert fg.sum() > 1000 and mg.sum() > 1000  # the gland (channel 0) in both, ~ cm^3 at 0.4 mm
    # the grid sits on the centre of the US image's box (placement 'image_centre')
    import SimpleITK as sitk
    from DeepRegLib.grid import physical_bounding_box
    us = sitk.ReadImage(str(prostate.case_paths(22)["fixed_images"]))
    lo, hi = physical_bounding_box(us)
    centre = np.asarray(g.origin) + 0.4 * (np.asarray(g.size) - 1) / 2
    assert np.allclose(centre, (lo + hi) / 2, atol=1e-4)
    assert data.fixed_labels.max() < 2 ** prostate.MAX_CHANNELS


def test_ct_pairs_known_displacement():
    _need("ct-totalsegmentator")
    from DeepRegLib.spatial import warp
    from training.data import ct
    data = ct.build([(ct.LABELLED, "inferior", 1)], seed=3)
    assert data.fixed.shape == (1, 48, 64, 64) and data.flows.shape == (1, 3, 48, 64, 64)
    peak_mm = float(np.sqrt((data.flows[0].astype(np.float32) ** 2).sum(0)).max()) * 3.0
    assert 0.5 * ct.MAX_DISPLACEMENT_MM - 0.1 <= peak_mm <= ct.MAX_DISPLACEMENT_MM + 0.1
    # the fixed labels are the moving labels warped by the known flow
    flow = torch.from_numpy(data.flows[0].astype(np.float32))[None]
    wl = warp(torch.from_numpy(data.moving_labels[0].astype(np.float32))[None, None], flow, mode="nearest")
    agree = (wl[0, 0].numpy().astype(np.int16) == data.fixed_labels[0]).mean()
    assert agree > 0.995 and len(np.unique(data.fixed_labels[0])) > 5
    # and the known flow aligns the images far better than none (noise aside)
    f = torch.from_numpy(data.fixed[0].astype(np.float32))[None, None]
    m = torch.from_numpy(data.moving[0].astype(np.float32))[None, None]
    assert float((warp(m, flow) - f).abs().mean()) < 0.6 * float((m - f).abs().mean())


def test_synthhead_pair_contrast_differs_labels_agree():
    _need("brain-synthseg-labelmaps")
    from DeepRegLib.affine import AffineConfig
    from DeepRegLib.metrics import dice_scores
    from DeepRegLib.pipeline import InputSpec
    from training.data import synthhead
    data = synthhead.build_pairs([(17, 18)], InputSpec(3.5, (64, 64, 64)), AffineConfig(), seed=1, verbose=False)
    fl, ml = data.fixed_labels[0], data.moving_labels[0]
    brain = [l for l in np.unique(fl) if 0 < l < synthhead.BRAIN_LABEL_LIMIT]
    assert len(brain) > 25 and np.any(fl >= synthhead.BRAIN_LABEL_LIMIT)  # whole head: non-brain labels too
    d = np.nanmean(list(dice_scores(fl, ml, brain).values()))
    assert d > 0.35  # the affine stage aligned the two heads
    # one random contrast per image: the intensity of a label differs between fixed and moving
    both = [l for l in brain if np.any(ml == l)]  # a structure of a few voxels may fall off the 3.5 mm grid
    assert len(both) > 25
    means_f = [float(data.fixed[0][fl == l].mean()) for l in both]
    means_m = [float(data.moving[0][ml == l].mean()) for l in both]
    assert abs(np.corrcoef(means_f, means_m)[0, 1]) < 0.9


def test_rerender_draws_a_new_contrast_each_step_on_unchanged_labels():
    """data.rerender (whole heads): both images are rendered anew from their label maps at every step,
    so a label's intensity changes from step to step while the labels stay as they were."""
    from DeepRegLib.pipeline import InputSpec
    from training.augment import rerender_batch
    lab = np.zeros((24, 24, 24), np.int64)
    lab[4:20, 4:20, 4:20], lab[8:16, 8:16, 8:16], lab[10:14, 10:14, 2:6] = 2, 17, 130
    labels = torch.from_numpy(lab)[None, None]
    batch = {"fixed": torch.zeros(1, 1, 24, 24, 24), "moving": torch.zeros(1, 1, 24, 24, 24),
             "fixed_labels": labels, "moving_labels": labels.clone()}
    spec = InputSpec(3.5, (24, 24, 24))
    rng = np.random.default_rng(0)
    a, b = rerender_batch(batch, rng, spec), rerender_batch(batch, rng, spec)
    assert torch.equal(a["fixed_labels"], labels) and torch.equal(b["moving_labels"], labels)
    assert a["fixed"].shape == (1, 1, 24, 24, 24) and 0 <= float(a["fixed"].min()) and float(a["fixed"].max()) <= 1
    means = lambda img: [float(img[0, 0][labels[0, 0] == l].mean()) for l in (0, 2, 17, 130)]
    for x, y in ((a["fixed"], b["fixed"]), (a["fixed"], a["moving"])):  # step to step, fixed to moving
        assert max(abs(u - v) for u, v in zip(means(x), means(y))) > 0.1
    assert float(batch["fixed"].abs().max()) == 0  # the input batch is left as it was
    # a contrast curriculum's start (random_share 0): one shared contrast, so both images are equal here
    shared = rerender_batch(batch, rng, spec, random_share=0.0)
    assert torch.allclose(shared["fixed"], shared["moving"]) and len(set(means(shared["fixed"]))) >= 3
    half = rerender_batch(batch, np.random.default_rng(5), spec, random_share=0.5)
    full = rerender_batch(batch, np.random.default_rng(5), spec, random_share=1.0)
    assert torch.allclose(half["fixed"], 0.5 * full["fixed"] + 0.5 * shared["fixed"], atol=1e-6)


def test_same_anatomy_pairs_render_one_label_map_twice():
    """data.same_anatomy: the chosen pairs' moving labels become the fixed ones (one anatomy, then two
    contrasts by rerender_batch); the others and the input batch are left alone; share 0 changes nothing."""
    from training.augment import same_anatomy_pairs
    fl = torch.arange(4)[:, None, None, None, None].expand(4, 1, 3, 3, 3).clone()
    batch = {"fixed_labels": fl, "moving_labels": fl + 10}
    assert same_anatomy_pairs(batch, np.random.default_rng(0), 0.0) is batch
    every = same_anatomy_pairs(batch, np.random.default_rng(0), 1.0)
    assert torch.equal(every["moving_labels"], fl) and torch.equal(batch["moving_labels"], fl + 10)
    some = same_anatomy_pairs(batch, np.random.default_rng(3), 0.5)
    same = [bool(torch.equal(some["moving_labels"][i], fl[i])) for i in range(4)]
    other = [bool(torch.equal(some["moving_labels"][i], fl[i] + 10)) for i in range(4)]
    assert all(a != b for a, b in zip(same, other)) and any(same) and not all(same), same


def test_rerender_is_refused_for_a_task_without_label_maps_to_render(tmp_path):
    from training.continual import Continual
    cfg = _smoke("smoke_cl_sequential", tmp_path)
    cfg.data.rerender = True
    with pytest.raises(ValueError, match="synthhead"):
        Continual(cfg, verbose=False).batch(0, [0], "cpu", np.random.default_rng(0))


def test_refine_tasks_scales_the_refinement_with_each_task_grid():
    """training/studies/refine_tasks.py: one setting in voxels, turned into mm per task; the wrapper refines what the
    network returns (here the affine stage's zero flow on a shifted pair) and leaves it alone without one."""
    import torch.nn.functional as F
    from training.evaluate import ZeroFlow
    from training.studies.refine_tasks import Refined, task_refinement
    assert task_refinement("none", 3.5, 30, 1.0, 1.0, 2) is None
    cfg = task_refinement("mind", 3.5, 30, 0.5, 2.0, 2)
    assert (cfg.learning_rate, cfg.ncc_window_mm, cfg.similarity, cfg.smooth_weight, cfg.max_steps) == (1.75, 17.5, "mind", 2.0, 30)
    torch.manual_seed(0)
    fixed = F.avg_pool3d(F.avg_pool3d(torch.rand(1, 1, 16, 16, 16), 5, 1, 2), 3, 1, 1)
    moving = torch.roll(fixed, 1, dims=4)
    plain, _ = Refined(ZeroFlow(), 2.0, None)(fixed, moving)
    refined = Refined(ZeroFlow(), 2.0, task_refinement("ncc", 2.0, 15, 0.5, 0.1, 1))
    with torch.no_grad():  # as evaluate_pairs calls it
        flow, _ = refined(fixed, moving)
    assert float(plain.abs().max()) == 0 and float(flow[0, 2].mean()) > 0.1 and len(refined.seconds) == 1


def test_refine_tasks_writes_the_tried_refinement_into_a_card(tmp_path):
    """--update-card: the card's refinement block becomes the tried setting, which register() then reads
    (DeepRegLib.bundles.card_refinement), with the validation figures before and after."""
    import json
    from DeepRegLib.bundles import card_refinement
    from training.studies.refine_tasks import task_refinement, write_card_refinement
    (tmp_path / "card.json").write_text(json.dumps({"name": "p", "refinement": {"default": {"max_steps": 3}}}))
    rc = task_refinement("mind", 0.4, 20, 1.0, 1.0, 2)
    before = {"task": "prostate", "refine": None, "pairs": 3, "accuracy": 0.61, "tre_mm": 2.5, "folding_percent": 0.0}
    after = {**before, "refine": rc.to_dict(), "accuracy": 0.66, "tre_mm": 2.2, "refine_seconds_mean": 0.3}
    write_card_refinement(tmp_path, before, after, "python -m training.studies.refine_tasks ...")
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["name"] == "p" and card_refinement(card) == rc
    v = card["refinement"]["validation"]
    assert (v["network"]["accuracy"], v["refined"]["accuracy"], v["refined"]["tre_mm"], v["pairs"]) == (0.61, 0.66, 2.2, 3)
    assert card["refinement"]["written_by"].startswith("python -m training.studies.refine_tasks")


def test_refine_tasks_update_card_needs_one_task_net_and_similarity(tmp_path):
    from training.studies.refine_tasks import main
    with pytest.raises(SystemExit):
        main(["--run", "x", "--tasks", "prostate", "--nets", "affine", "--similarities", "none", "mind", "mi",
              "--update-card", str(tmp_path), "--out", str(tmp_path)])


def test_shared_contrast_renders_one_intensity_per_label_in_both_images():
    from training.data.synthhead import reference_lut
    from training.studies.refine_tasks import shared_contrast
    lab_f = np.zeros((1, 6, 6, 6), np.int16)
    lab_f[0, 1:5, 1:5, 1:5], lab_f[0, 2:4, 2:4, 2:4] = 2, 17
    lab_m = np.roll(lab_f, 1, axis=3)
    noise = np.random.default_rng(0).random((1, 6, 6, 6)).astype(np.float16)
    data = PairSet(noise, noise.copy(), [Grid((0.0, 0.0, 0.0), (3.5, 3.5, 3.5), (6, 6, 6))], lab_f, lab_m)
    out = shared_contrast(data)
    assert out is not data and np.array_equal(data.fixed, noise)  # the input set is left as it was
    for img, lab in ((out.fixed, lab_f), (out.moving, lab_m)):
        assert np.all(img[lab == 0] == 0)
        for v in (2, 17):
            vals = np.unique(img[lab == v])
            assert vals.size == 1 and vals[0] == reference_lut(np.array([v]))[0] and 0.2 <= vals[0] < 1.2
    assert reference_lut(np.array([2]))[0] != reference_lut(np.array([17]))[0]


def test_export_of_a_continual_run_defines_its_task(smoke_runs, tmp_path):
    """The bundle of a continual run: the chosen task's grid in the card, all tasks and the accuracy matrix listed."""
    from DeepRegLib.bundles import load_bundle
    from training.export import main as export_main
    cfg = smoke_runs["samcl"][0]
    export_main([cfg.run_dir, "--name", "cl_smoke", "--out", str(tmp_path), "--task", "synthetic_inverted"])
    b = load_bundle(str(tmp_path / "cl_smoke"))
    assert b.card["task"] == "synthetic_inverted" and set(b.card["trained_on"]) == set(cfg.continual.tasks)
    assert np.asarray(b.card["continual"]["matrix"]).shape == (3, 3)
    spec = b.task
    assert spec.input.size == (16, 16, 16) and spec.input.spacing == 2.0
    net = b.network("cpu")
    assert sum(p.numel() for p in net.parameters()) == b.card["architecture"]["parameters"]
    with pytest.raises(ValueError):
        export_main([cfg.run_dir, "--name", "x", "--out", str(tmp_path), "--task", "prostate"])
    # exporting the same weights again keeps what was measured and chosen for them (nothing lost)
    card_path = tmp_path / "cl_smoke" / "card.json"
    card = json.loads(card_path.read_text())
    card["refinement"] = {"default": {"max_steps": 5, "similarity": "mi"}}
    card["speed"] = {"register_s_median": 1.5}
    card_path.write_text(json.dumps(card))
    export_main([cfg.run_dir, "--name", "cl_smoke", "--out", str(tmp_path), "--task", "synthetic_inverted"])
    again = json.loads(card_path.read_text())
    assert again["refinement"] == card["refinement"] and again["speed"] == card["speed"]


def test_export_of_all_tasks_makes_one_bundle_per_network(smoke_runs, tmp_path):
    """``--all-tasks``: one card, the chosen task at its top level and every other trained task in
    ``task_settings``, each chosen as ``NAME:TASK``; re-exporting the same weights keeps each task's
    chosen refinement and measurements."""
    from DeepRegLib.bundles import TASK_SETTINGS_KEY, load_bundle, update_card
    from training.export import main as export_main
    cfg = smoke_runs["samcl"][0]
    args = [cfg.run_dir, "--name", "uni", "--out", str(tmp_path), "--task", "synthetic", "--all-tasks"]
    export_main(args)
    b = load_bundle(str(tmp_path / "uni"))
    assert b.tasks == ["synthetic", "synthetic_inverted", "synthetic_large"] == b.card["tasks"]
    assert set(b.card[TASK_SETTINGS_KEY]) == {"synthetic_inverted", "synthetic_large"}
    large = load_bundle(f"{tmp_path / 'uni'}:synthetic_large")
    from training.data.tasks import task_data_config
    want = task_data_config(cfg.data, "synthetic_large", None)
    assert large.input_spec.size == tuple(want.size) and large.input_spec.spacing == want.spacing
    assert large.task.name == "synthetic_large" and large.card["licence"] == b.card["licence"]
    update_card(large, {"refinement": {"default": {"max_steps": 5, "similarity": "mi"}}, "accuracy": {"x": 1}})
    export_main(args)
    again = load_bundle(f"{tmp_path / 'uni'}:synthetic_large").card
    assert again["refinement"]["default"]["max_steps"] == 5 and again["accuracy"] == {"x": 1}
    assert "refinement" not in load_bundle(str(tmp_path / "uni")).card


def test_affine_only_figures_use_the_tasks_metric():
    """A prostate run's affine-only validation is gland Dice + landmark TRE of its bit-packed labels (bit 0 the
    gland, bit 1 a landmark), not a label-map Dice of the packed integers (the prostate_mrus card said 0.18)."""
    from training.evaluate import affine_only_grid, affine_only_validation
    lab_f = np.zeros((1, 12, 12, 12), np.int16)
    lab_f[0, 2:8, 2:8, 2:8] = 1
    lab_f[0, 4:6, 4:6, 4:6] |= 2  # a landmark inside the gland
    lab_m = np.roll(lab_f, 2, axis=3)  # shifted 2 voxels along x
    img = np.zeros((1, 12, 12, 12), np.float16)
    data = PairSet(img, img.copy(), [Grid((0.0, 0.0, 0.0), (0.5, 0.5, 0.5), (12, 12, 12))], lab_f, lab_m)
    out = affine_only_validation("prostate", data)
    assert out["gland_dice"] == pytest.approx(2 * 4 * 36 / (2 * 216)) and out["tre_mm"] == pytest.approx(1.0)
    assert affine_only_grid(data)["dice"] != pytest.approx(out["gland_dice"])
    assert affine_only_validation("synthetic", data)["dice"] == affine_only_grid(data)["dice"]


def test_export_carries_the_licence_of_the_starting_weights(tmp_path):
    """Weights fine-tuned from a bundle trained on CC BY-NC-SA brains carry that licence too, whatever the
    new task's data licence (the bundled prostate model starts from ldr_brain_v1); the engine's notice
    then treats the bundle as non-commercial. No start, or a start with the same licence, adds nothing."""
    from DeepRegLib.bundles.licence import is_non_commercial
    from training.export import with_inherited_licence
    v1 = "Resources/models/ldr_brain_v1"
    lic = with_inherited_licence("Apache-2.0 (prostate-mr-us)", v1)
    assert lic.startswith("Apache-2.0 (prostate-mr-us); weights initialised from " + v1) and "BY-NC-SA" in lic
    assert is_non_commercial({"licence": lic}) and not is_non_commercial({"licence": "Apache-2.0 (prostate-mr-us)"})
    assert with_inherited_licence("Apache-2.0", "") == "Apache-2.0"
    own = json.loads((REPO / v1 / "card.json").read_text())["licence"]
    assert with_inherited_licence(own, v1) == own
    assert "BY-NC-SA" in json.loads((REPO / "Resources/models/prostate_mrus/card.json").read_text())["licence"]


def test_filters_known_answers():
    from training.data.filters import gaussian_filter, resize_linear
    delta = np.zeros((21, 21, 21), np.float32)
    delta[10, 10, 10] = 1.0
    g = gaussian_filter(delta, 1.5)
    assert math.isclose(float(g.sum()), 1.0, rel_tol=1e-5)
    x = np.arange(21) - 10
    var = float((g.sum((0, 1)) * x * x).sum())  # along the last axis
    assert math.isclose(var, 1.5 ** 2, rel_tol=0.02)  # truncation at 3 sigma
    ramp = np.broadcast_to(np.arange(4, dtype=np.float32), (4, 4, 4))
    up = resize_linear(ramp, (7, 7, 7))
    assert np.allclose(up[0, 0], np.arange(7) / 2.0)  # linear stays linear, corners aligned
