"""The headless orchestration of the Slicer panel (DeepRegLib.slicer_adapter.worker): no Qt, no MRML.

The panel starts a :class:`Job` and polls it from a QTimer; here the same polling loop runs in
the test.  Real registrations of the bundled sample brains check progress within stages, the log,
and that Cancel ends the job within a second (during the affine stage, the network and the
refinement) with nothing produced.
"""
from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from DeepRegLib import DEFAULT_MODEL
from DeepRegLib.slicer_adapter import worker
from DeepRegLib.errors import Cancelled, DeepRegError
from DeepRegLib.imageio import read_image

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "Resources" / "SampleData"


# ----------------------------------------------------------------------------- the Job machinery
def test_job_reports_progress_log_and_result_in_order():
    def work(ctx):
        ctx.set_plan(["a", "b"])
        for i in range(5):
            ctx.progress("a", i / 4)
        ctx.log("half way")
        ctx.progress("b", 0.5)
        return 42

    job = worker.Job(work).start()
    events = []
    assert job.run_to_end(events.append) == "done"
    assert job.result == 42 and job.error is None
    kinds = [e.kind for e in events]
    assert kinds[-1] == "done" and kinds.count("log") == 1
    fr = [e.fraction for e in events if e.kind == "progress"]
    assert fr == sorted(fr) and len(set(fr)) == 6  # moves within stage "a", then into "b"
    assert 0.0 <= fr[0] < fr[-1] <= 1.0
    assert job.log == ["half way"] and job.elapsed > 0


def test_job_failure_is_handed_to_the_main_thread():
    def work(ctx):
        raise DeepRegError("bad input: shapes (2, 3) and (4,)")

    job = worker.Job(work).start()
    assert job.run_to_end() == "failed"
    assert isinstance(job.error, DeepRegError) and "shapes" in str(job.error) and job.result is None


def test_cancel_discards_a_result_that_arrives_anyway():
    """A job whose work ignores the cancel request still ends 'cancelled' and its result is dropped."""
    started = threading.Event()
    release = threading.Event()

    def work(ctx):
        started.set()
        release.wait(5)
        return "late result"

    job = worker.Job(work).start()
    started.wait(5)
    job.cancel()
    release.set()
    assert job.run_to_end() == "cancelled" and job.result is None


def test_progress_raises_once_cancelled():
    seen = []

    def work(ctx):
        ctx.set_plan(["x"])
        for i in range(1000):
            seen.append(i)
            ctx.progress("x", i / 1000)
            time.sleep(0.001)

    job = worker.Job(work).start()
    time.sleep(0.05)
    job.cancel()
    t0 = time.perf_counter()
    assert job.run_to_end() == "cancelled"
    assert time.perf_counter() - t0 < 0.5 and len(seen) < 1000


def test_progress_plan_is_monotone_and_spans_the_job():
    plan = worker.ProgressPlan(["importing PyTorch", "loading model", "register", "outputs"])
    assert plan.overall("importing PyTorch", 0.0) == 0.0
    a = plan.overall("register", 0.5)
    assert plan.overall("importing PyTorch", 1.0) <= a  # never goes back
    assert plan.overall("register", 0.2) == a
    assert plan.overall("outputs", 1.0) == pytest.approx(1.0)
    assert plan.overall("done", 0.0) == 1.0


# ----------------------------------------------------------------------------- PyTorch requirement
def test_torch_version_check_and_requirement_matches_pyproject():
    worker.check_torch_version("2.13.0+cpu")
    worker.check_torch_version("2.6.0")
    with pytest.raises(DeepRegError, match=r"PyTorch 1\.13\.1 .*torch>=2\.6.*another extension"):
        worker.check_torch_version("1.13.1")
    with pytest.raises(DeepRegError):
        worker.check_torch_version("2.5.1+cu117")
    deps = re.search(r"dependencies = \[(.*?)\]", (REPO / "pyproject.toml").read_text(), re.S).group(1)
    torch_req = re.search(r'"torch([^"]*)"', deps).group(1)
    assert torch_req == worker.TORCH_REQUIREMENT, "keep worker.TORCH_REQUIREMENT equal to pyproject.toml"


def test_the_installed_torch_passes_its_own_check():
    import torch
    worker.check_torch_version(torch.__version__)


# ----------------------------------------------------------------------------- real registrations
@pytest.fixture(scope="module")
def pair():
    return (read_image(SAMPLE / "OASIS-TRT-20-17" / "t1weighted_brain.nii.gz"),
            read_image(SAMPLE / "OASIS-TRT-20-18" / "t1weighted_brain.nii.gz"))


def _run(req, on_event=None):
    job = worker.run_job(req)
    events = []

    def keep(ev):
        events.append(ev)
        if on_event is not None:
            on_event(job, ev)

    state = job.run_to_end(keep)
    return job, state, events


def test_real_job_progress_within_stages_and_log(pair):
    fixed, moving = pair
    labels = sitk.ReadImage(str(SAMPLE / "OASIS-TRT-20-18" / "labels.DKT31.manual+aseg.nii.gz"))
    req = worker.RegistrationRequest(fixed, moving, device="cpu", warped_volume=True, jacobian=True,
                                     moving_labels={"labelmap": labels})
    job, state, events = _run(req)
    assert state == "done", job.error
    out = job.result
    prog = [(e.stage, e.fraction) for e in events if e.kind == "progress"]
    stages = [s for s, _ in prog]
    for s in ("importing PyTorch", "loading model", "affine", "network", "field", "outputs"):
        assert s in stages, (s, stages)
    fr = [f for _, f in prog]
    assert fr == sorted(fr) and fr[-1] == 1.0
    affine = [f for s, f in prog if s == "affine"]
    assert len(set(affine)) >= 3, f"the bar should move within the affine stage: {affine}"
    assert any(DEFAULT_MODEL in line for line in job.log) and any("timings" in line for line in job.log)
    # outputs computed without MRML
    assert out.warped_volume.GetSize() == fixed.GetSize()
    assert out.warped_labels["labelmap"].GetSize() == fixed.GetSize()
    assert out.result.coefficients().shape[-1] == 3  # B-spline prefilter done in the worker
    assert 0.5 < float(np.median(out.jacobian)) < 1.5


@pytest.mark.parametrize("when", ["affine", "network"])
def test_cancel_within_a_second_nothing_produced(pair, when):
    fixed, moving = pair
    req = worker.RegistrationRequest(fixed, moving, device="cpu")
    t_cancel = {}

    def on_event(job, ev):
        if ev.kind == "progress" and ev.stage == when and "t" not in t_cancel:
            t_cancel["t"] = time.perf_counter()
            job.cancel()

    job, state, events = _run(req, on_event)
    assert "t" in t_cancel, f"stage {when} never reported"
    assert state == "cancelled" and job.result is None
    assert time.perf_counter() - t_cancel["t"] < 0.2  # the panel is free at once
    assert not any(e.kind == "done" for e in events)
    # and the work itself stops at the engine's next poll (within its stage)
    assert job.wait(3.0), "the worker did not stop"
    print(f"worker stopped {time.perf_counter() - t_cancel['t']:.2f} s after cancel during {when}")


def test_cancel_during_refinement_within_a_second(pair):
    fixed, moving = pair
    req = worker.RegistrationRequest(fixed, moving, device="cpu", refine=True)
    t_cancel = {}

    def on_event(job, ev):
        if ev.kind == "progress" and ev.stage == "refine" and "t" not in t_cancel:
            t_cancel["t"] = time.perf_counter()
            job.cancel()

    job, state, _ = _run(req, on_event)
    assert "t" in t_cancel, "refine stage never reported"
    assert state == "cancelled" and job.result is None
    assert time.perf_counter() - t_cancel["t"] < 0.2  # the panel is free at once
    # the engine polls cancel once per refinement step: the thread ends after the current step
    assert job.wait(60.0), "the worker did not stop"
    print(f"worker stopped {time.perf_counter() - t_cancel['t']:.2f} s after cancel during refine")


@pytest.mark.slow  # a whole refinement run after the stop (~45 s on 2 loaded cores)
def test_stop_refinement_keeps_the_network_result(pair):
    fixed, moving = pair
    req = worker.RegistrationRequest(fixed, moving, device="cpu", refine=True)
    refine_fr = []

    def on_event(job, ev):
        if ev.kind == "progress" and ev.stage == "refine":
            refine_fr.append(ev.fraction)
            if len(refine_fr) == 2:
                job.stop_refinement()

    job, state, _ = _run(req, on_event)
    assert state == "done", job.error
    assert job.result.refine_cancelled and not job.result.refined
    assert job.result.result.displacement is not None
    assert len(set(refine_fr)) >= 2  # progress moved within the refinement


def test_engine_cancelled_error_is_the_workers():
    assert worker.Cancelled is Cancelled
