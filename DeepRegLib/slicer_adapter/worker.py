"""Headless orchestration of one registration: a worker thread, cancellation, progress and a log.

No Qt, no Slicer, no MRML here: the Slicer panel (and the tests) drive a :class:`Job` from the
main thread.  The pattern is the one Slicer itself uses for non-blocking process output
(``slicer.util._startAsyncProcessHandling``): the work runs in a Python thread and talks to the
main thread only through a queue of :class:`Event` s, which the main thread drains with
:meth:`Job.poll` (from a ``qt.QTimer`` in the panel).  MRML nodes are therefore read before the
job starts (:func:`DeepRegLib.slicer_adapter.mrml.gather_inputs`) and written after it ends
(:func:`DeepRegLib.slicer_adapter.mrml.apply_outputs`), both on the main thread.

:func:`compute` is the work itself: the first ``import torch`` (with a version check), the model
load, :func:`DeepRegLib.inference.register` and every output that can be computed without MRML
(warped volume and label maps, the B-spline coefficients of the transform node, det J).  Coordinates: all
images are SimpleITK (LPS mm); ``initial`` matrices are RAS 4x4 as Slicer stores them.
"""
from __future__ import annotations

import queue
import re
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import DeepRegError

from ..errors import Cancelled  # noqa: F401  (re-exported: the engine's cancellation error)
from .geometry import ras_to_lps_matrix

#: PyTorch version the engine needs; keep equal to the ``torch`` requirement in pyproject.toml.
TORCH_REQUIREMENT = ">=2.6"

#: Share of the progress bar per job stage (the bar moves within each stage).  "register" is the
#: engine's run, whose own progress (fraction of its run, reported within its stages) fills it.
STAGE_WEIGHTS = {"importing PyTorch": 0.10, "loading model": 0.05, "register": 0.78, "register+refine": 0.93,
                 "outputs": 0.07}
#: Human-readable stage names for the status line.
STAGE_LABELS = {"importing PyTorch": "importing PyTorch (first use: a few seconds)", "loading model": "loading the model",
                "outputs": "computing the outputs", "loading": "reading images", "affine": "affine stage", "network": "deformable network",
                "refine": "refinement", "field": "building the field", "done": "done"}


# ----------------------------------------------------------------------------- events / cancellation
@dataclass
class Event:
    """One message from the worker to the main thread.

    ``kind``: ``"progress"`` (``stage``, ``fraction`` of the whole job in [0, 1]), ``"log"``
    (``message``), then exactly one of ``"done"`` (``value``: the result), ``"failed"``
    (``value``: the exception) or ``"cancelled"``.  ``elapsed``: seconds since the job started.
    """

    kind: str
    elapsed: float
    stage: str = ""
    fraction: float = 0.0
    message: str = ""
    value: Any = None


class CancelToken:
    """Thread-safe cancel flag; calling it returns whether cancellation was requested."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    def __call__(self) -> bool:
        return self._event.is_set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("registration cancelled")


class ProgressPlan:
    """Maps ``(stage, fraction within the stage)`` onto one monotone fraction of the whole job."""

    def __init__(self, stages: List[str], weights: Optional[Dict[str, float]] = None) -> None:
        w = weights or STAGE_WEIGHTS
        total = sum(w.get(s, 0.05) for s in stages)
        self.start: Dict[str, float] = {}
        self.width: Dict[str, float] = {}
        acc = 0.0
        for s in stages:
            self.start[s] = acc / total
            self.width[s] = w.get(s, 0.05) / total
            acc += w.get(s, 0.05)
        self._last = 0.0

    def overall(self, stage: str, within: float) -> float:
        if stage == "done":
            self._last = 1.0
        elif stage in self.start:
            f = self.start[stage] + self.width[stage] * min(max(float(within), 0.0), 1.0)
            self._last = max(self._last, f)
        return self._last


class JobContext:
    """What the work function gets: report progress and log lines, poll for cancellation."""

    def __init__(self, job: "Job", plan: Optional[ProgressPlan] = None) -> None:
        self._job = job
        self.plan = plan
        self.cancel = job.token  # callable -> bool: the user cancelled (discard everything)
        # for the engine's ``cancel=``: also True after "stop refinement" (the engine then keeps the
        # network's result, and the job goes on)
        self.engine_cancel = lambda: job.token() or job.stop_refine_token()

    def set_plan(self, stages: List[str]) -> None:
        self.plan = ProgressPlan(stages)

    def progress(self, stage: str, within: float = 0.0, label: Optional[str] = None) -> None:
        """Report ``within`` (0..1) of job ``stage`` (shown as ``label``); raises :class:`Cancelled` once
        cancel was requested."""
        overall = self.plan.overall(stage, within) if self.plan else float(within)
        self._job._put(Event("progress", self._job.elapsed, stage=label or stage, fraction=overall))
        self._job.token.raise_if_cancelled()

    def log(self, message: str) -> None:
        self._job._put(Event("log", self._job.elapsed, message=message))


class SyncContext(JobContext):
    """A context for running :func:`compute` in the caller's thread (console, scripts, tests).

    ``progress(stage, overall_fraction)`` and ``log(line)`` callbacks are called directly; a
    ``progress`` callback may raise (e.g. :class:`Cancelled`) to stop the work; ``cancel()`` is polled.
    """

    def __init__(self, progress: Optional[Callable[[str, float], None]] = None,
                 log: Optional[Callable[[str], None]] = None,
                 cancel: Optional[Callable[[], bool]] = None) -> None:
        self.plan = None
        self._progress_cb = progress
        self._log_cb = log
        self.cancel = cancel or (lambda: False)
        self.engine_cancel = self.cancel

    def progress(self, stage: str, within: float = 0.0, label: Optional[str] = None) -> None:
        overall = self.plan.overall(stage, within) if self.plan else float(within)
        if self._progress_cb is not None:
            self._progress_cb(label or stage, overall)
        if self.cancel():
            raise Cancelled("registration cancelled")

    def log(self, message: str) -> None:
        if self._log_cb is not None:
            self._log_cb(message)


class Job:
    """Runs ``work(context)`` in a daemon thread; the main thread polls events and may cancel.

    :meth:`cancel` ends the job for the main thread at once: the next :meth:`poll` reports
    ``"cancelled"`` and nothing the work returns afterwards is ever handed over, so the caller never
    applies a cancelled result and the scene stays as it was.  The work itself stops at its next
    progress report or cancel poll (the engine polls within its stages); :attr:`worker_alive` tells
    when that happened (the panel starts no new run before).
    """

    def __init__(self, work: Callable[[JobContext], Any], name: str = "DeepReg registration") -> None:
        self._work = work
        self.token = CancelToken()
        self.stop_refine_token = CancelToken()
        self._queue: "queue.Queue[Event]" = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._t0: Optional[float] = None
        self._t_end: Optional[float] = None
        self.context = JobContext(self)
        self.state = "new"  # new -> running -> done | failed | cancelled
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.stage = ""
        self.fraction = 0.0
        self.log: List[str] = []

    # -- worker side
    @property
    def elapsed(self) -> float:
        if self._t0 is None:
            return 0.0
        return (self._t_end or time.perf_counter()) - self._t0

    def _put(self, event: Event) -> None:
        self._queue.put(event)

    def _run(self) -> None:
        try:
            value = self._work(self.context)
            if self.token.cancelled:
                raise Cancelled("registration cancelled")
            self._put(Event("done", self.elapsed, value=value))
        except Cancelled:
            self._put(Event("cancelled", self.elapsed))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            if self.token.cancelled:
                self._put(Event("cancelled", self.elapsed))
            else:
                self._put(Event("failed", self.elapsed, value=exc))

    # -- main-thread side
    def start(self) -> "Job":
        self._t0 = time.perf_counter()
        self.state = "running"
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Cancel: the job ends now for the main thread; the work stops at its next poll."""
        if not self.token.cancelled and self.state == "running":
            self.token.cancel()
            self._put(Event("cancelled", self.elapsed))
        self.token.cancel()

    @property
    def worker_alive(self) -> bool:
        """Whether the worker thread still runs (after a cancel: until the work's next poll)."""
        return self._thread.is_alive()

    def stop_refinement(self) -> None:
        """End the refinement early and keep the network's result (the job goes on to its outputs)."""
        self.stop_refine_token.cancel()

    @property
    def running(self) -> bool:
        return self.state == "running"

    def poll(self) -> List[Event]:
        """Drain the events that arrived since the last call (main thread); updates ``state``."""
        events = []
        while True:
            try:
                ev = self._queue.get_nowait()
            except queue.Empty:
                break
            if self.state in ("done", "failed", "cancelled"):
                continue  # the job already ended for the main thread (e.g. cancelled): drop late events
            events.append(ev)
            if ev.kind == "progress":
                self.stage, self.fraction = ev.stage, ev.fraction
            elif ev.kind == "log":
                self.log.append(ev.message)
            elif ev.kind in ("done", "failed", "cancelled"):
                self._t_end = time.perf_counter()
                self.state = ev.kind
                self.result = ev.value if ev.kind == "done" else None
                self.error = ev.value if ev.kind == "failed" else None
        return events

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the worker thread ends (tests, console); True when it ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def run_to_end(self, on_event: Optional[Callable[[Event], None]] = None, interval: float = 0.02) -> str:
        """Poll until the job ends (what the panel's timer does), calling ``on_event`` for each event."""
        while True:
            alive = self._thread.is_alive()
            for _ in range(2):  # a thread that ended has queued its last event: drain it too
                for ev in self.poll():
                    if on_event is not None:
                        on_event(ev)
                if self.state != "running":
                    return self.state
                if alive:
                    break
            else:
                raise RuntimeError("the worker thread ended without reporting a result")
            time.sleep(interval)


# ----------------------------------------------------------------------------- the registration work
@dataclass
class RegistrationRequest:
    """Everything :func:`compute` needs, copied out of MRML (or given by a script).

    ``moving`` and ``moving_mask`` / ``moving_labels`` carry the moving side in *initial-aligned*
    world coordinates: ``initial_ras`` (moving local RAS -> world RAS, 4x4; identity when there is no
    initial transform) is folded into their geometry.  ``moving_labels``: ``{key: label image}``
    (nearest-neighbour warps; a segmentation contributes one image per binary-labelmap layer).
    """

    fixed: sitk.Image
    moving: sitk.Image
    model: Optional[str] = None
    device: str = "auto"
    mode: str = "deformable"  # "affine" | "rigid" | "deformable"
    refine: Optional[bool] = None  # None: the model card's default refinement; True: full Refine; False: none
    initial_ras: np.ndarray = field(default_factory=lambda: np.eye(4))
    skip_affine_stage: bool = False  # use the initial transform as the affine as it is
    fixed_mask: Optional[sitk.Image] = None
    moving_mask: Optional[sitk.Image] = None
    moving_labels: Dict[str, sitk.Image] = field(default_factory=dict)
    warped_volume: bool = False
    jacobian: bool = False
    affine_part: bool = False  # also return the affine part on its own (deformable modes)
    bundle: Any = None  # the loaded ModelBundle of ``model`` (gather_inputs loads it once); None: loaded by compute


@dataclass
class RegistrationOutputs:
    """What :func:`compute` returns; no MRML objects.

    ``result``: the engine result mapping fixed world points to moving *local* points (the initial
    transform composed in: ``T_local = I^-1 o T_world``), what a transform node above the moving
    volume must hold.  ``world_result``: the engine's own result (fixed world -> initial-aligned world).
    """

    result: Any
    world_result: Any
    mode: str
    warped_volume: Optional[sitk.Image] = None
    warped_labels: Dict[str, sitk.Image] = field(default_factory=dict)
    jacobian: Optional[np.ndarray] = None
    log: List[str] = field(default_factory=list)
    timings: Dict[str, float] = field(default_factory=dict)
    refined: bool = False
    refine_cancelled: bool = False
    refinement: str = "none"  # what was asked: "none", "model default" (the card's few steps), "full", "custom"
    affine_part: bool = False  # the caller asked for the affine part as its own node
    quality: Any = None  # DeepRegLib.quality.QualityVerdict of the engine result (None if it could not be computed)


#: Engine modes whose result is a linear transform alone.
LINEAR_MODES = ("affine", "rigid")


def parse_version(text: str) -> tuple:
    """``"2.13.0+cpu"`` -> ``(2, 13, 0)``."""
    out = []
    for part in text.split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
        if digits != part:
            break
    return tuple(out)


def check_torch_version(version: str, requirement: str = TORCH_REQUIREMENT) -> None:
    """Raise :class:`DeepRegError` when ``version`` is older than ``requirement`` (``">=X.Y"``)."""
    need = parse_version(requirement.lstrip(">="))
    if parse_version(version)[:len(need)] < need:
        raise DeepRegError(
            f"PyTorch {version} is installed but DeepReg needs torch{requirement} (an older torch may have been "
            "installed by another extension). Update it from the PyTorch Utils module (Install PyTorch, with the "
            f"version requirement '{requirement}') or with slicer.util.pip_install('torch{requirement}'), then "
            "restart Slicer.")


#: torch releases built against NumPy 1.x only (NumPy 2 support came with torch 2.3)
TORCH_FIRST_NUMPY2 = (2, 3)


def numpy_torch_problem(numpy_version: Optional[str] = None, torch_version: Optional[str] = None) -> Optional[str]:
    """Why ``import torch`` would fail or misbehave with the installed NumPy (a message with the fix), else None.

    Reads the versions without importing torch (``importlib.metadata``): a torch built for NumPy 1.x
    (torch < 2.3) imported next to NumPy 2 prints "A module that was compiled using NumPy 1.x cannot be run
    in NumPy 2.x" and then fails on the first tensor <-> array conversion.
    """
    from importlib import metadata
    if numpy_version is None:
        import numpy
        numpy_version = numpy.__version__
    if torch_version is None:
        try:
            torch_version = metadata.version("torch")
        except metadata.PackageNotFoundError:
            return None  # not installed: said elsewhere
    np_v, t_v = parse_version(numpy_version), parse_version(torch_version)
    if np_v[:1] >= (2,) and t_v[:2] < TORCH_FIRST_NUMPY2:
        return (f"PyTorch {torch_version} was built for NumPy 1.x, but NumPy {numpy_version} is installed; importing "
                f"it would fail. Fix: update PyTorch (PyTorch Utils module: Install PyTorch with the version "
                f"requirement 'torch{TORCH_REQUIREMENT}', or slicer.util.pip_install('torch{TORCH_REQUIREMENT}')), "
                f"or install NumPy 1.x (slicer.util.pip_install('numpy<2')), then restart Slicer.")
    return None


def import_torch(ctx: Optional[JobContext] = None):
    """Import torch (the first import takes seconds) after checking it fits NumPy, and check its version."""
    if ctx is not None:
        ctx.progress("importing PyTorch", 0.0)
    if "torch" not in sys.modules:
        problem = numpy_torch_problem()
        if problem:
            raise DeepRegError(problem)
    import torch
    check_torch_version(torch.__version__)
    if ctx is not None:
        ctx.log(f"PyTorch {torch.__version__}; CUDA available: {torch.cuda.is_available()}")
        ctx.progress("importing PyTorch", 1.0)
    return torch


def affine_from_matrix(m: np.ndarray) -> sitk.AffineTransform:
    a = sitk.AffineTransform(3)
    a.SetMatrix(tuple(float(v) for v in m[:3, :3].ravel()))
    a.SetTranslation(tuple(float(v) for v in m[:3, 3]))
    return a


def compose_initial(result, initial_ras: np.ndarray):
    """The result with ``I^-1`` applied after it: fixed world -> moving local (``initial_ras`` = I, RAS)."""
    from ..transforms import affine_matrix
    if np.allclose(initial_ras, np.eye(4)):
        return result
    inv_lps = np.linalg.inv(ras_to_lps_matrix(initial_ras))
    return replace(result, affine=affine_from_matrix(inv_lps @ affine_matrix(result.affine)))


def _stages(req: RegistrationRequest) -> List[str]:
    engine = "register+refine" if (req.refine is True and req.mode not in LINEAR_MODES) else "register"
    return ["importing PyTorch", "loading model", engine, "outputs"]


def compute(req: RegistrationRequest, ctx: Optional[JobContext] = None) -> RegistrationOutputs:
    """Run the registration and compute every MRML-free output (in the worker thread)."""
    if ctx is None:  # synchronous use, no callbacks
        ctx = SyncContext()
    ctx.set_plan(_stages(req))
    log = []

    def note(line: str) -> None:
        log.append(line)
        ctx.log(line)

    t0 = time.perf_counter()
    import_torch(ctx)
    from .. import inference
    from ..bundles import load_bundle
    ctx.progress("loading model", 0.0)
    bundle = req.bundle if req.bundle is not None else load_bundle(req.model)
    device = inference.resolve_device(req.device)
    if req.mode not in LINEAR_MODES:
        inference.load_network(bundle, device)  # the first load of the weights, cached for register()
    note(f"model {bundle.name} ({bundle.card.get('description', '')}) on {device}; "
         f"loaded in {time.perf_counter() - t0:.2f} s (with the torch import)")
    ctx.progress("loading model", 1.0)

    kwargs: Dict[str, Any] = dict(mode=req.mode, refine=req.refine if req.mode not in LINEAR_MODES else False,
                                  fixed_mask=req.fixed_mask, moving_mask=req.moving_mask, cancel=ctx.engine_cancel)
    if req.skip_affine_stage:
        kwargs["initial_affine"] = sitk.AffineTransform(3)  # the initial transform, already folded in, as is
        note("affine stage skipped: the initial transform is used as the affine")
    elif not np.allclose(req.initial_ras, np.eye(4)):
        note("the initial transform places the moving image before the affine stage")

    engine_progress = EngineProgress(ctx, _stages(req)[2])
    result_w = inference.register(req.fixed, req.moving, model=bundle, device=device, progress=engine_progress,
                                  fallback_to_cpu=req.device in (None, "", "auto"), preflight=False, **kwargs)
    if ctx.cancel():
        raise Cancelled("registration cancelled")
    mode, refined, refine_cancelled = result_w.mode, bool(result_w.refined), bool(result_w.refine_cancelled)
    for line in result_w.log:
        note(line)
    note("engine timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in result_w.timings.items()))

    ctx.progress("outputs", 0.0)
    t1 = time.perf_counter()
    result = compose_initial(result_w, req.initial_ras)
    out = RegistrationOutputs(result=result, world_result=result_w, mode=mode, log=log,
                              refined=refined, refine_cancelled=refine_cancelled,
                              refinement=result_w.refinement, affine_part=req.affine_part)
    if result.displacement is not None:
        result.coefficients()  # the B-spline prefilter, cached on the result for the transform node (main thread)
    ctx.progress("outputs", 0.3)
    if req.warped_volume:
        out.warped_volume = result_w.warp_image(req.moving)
    for key, lab in req.moving_labels.items():
        out.warped_labels[key] = result_w.warp_labels(lab)
        ctx.progress("outputs", 0.3 + 0.5 * (len(out.warped_labels) / max(1, len(req.moving_labels))))
    if req.jacobian and result.displacement is not None:
        out.jacobian = np.asarray(result.jacobian_determinant(), dtype=np.float32)
    out.quality = assess_quality(result_w, req, note)
    out.timings = dict(result_w.timings)
    out.timings["outputs"] = time.perf_counter() - t1
    out.timings["job"] = time.perf_counter() - t0
    note(f"outputs computed in {out.timings['outputs']:.2f} s; whole job {out.timings['job']:.2f} s")
    ctx.progress("done", 1.0)
    return out


def assess_quality(result_w, req: RegistrationRequest, note: Callable[[str], None] = lambda line: None):
    """The quality verdict (:func:`DeepRegLib.quality.assess`) of the engine's result on the registered pair,
    or None when it cannot be computed (said in the log); a verdict never stops the registration."""
    try:
        from ..quality import assess
    except ImportError:  # an engine without the quality check
        return None
    try:
        verdict = assess(result_w, req.fixed, req.moving)
    except Exception as exc:  # noqa: BLE001 - the registration itself succeeded
        note(f"quality check failed: {exc}")
        return None
    note(verdict.summary())
    return verdict


class EngineProgress:
    """Adapts the engine's ``progress(stage, fraction)`` to the job: ``fraction`` is of the engine's whole
    run (reported at stage boundaries and within long stages) and fills the job's register stage;
    the engine's stage name ("affine", "network", "refine", ...) is what the status line shows."""

    def __init__(self, ctx: JobContext, job_stage: str = "register") -> None:
        self.ctx = ctx
        self.job_stage = job_stage

    def __call__(self, stage: str, fraction: float) -> None:
        if stage == "done":  # the engine is done; the job still computes its outputs
            stage = "field"
        self.ctx.progress(self.job_stage, float(fraction), label=stage)


def run_job(req: RegistrationRequest) -> Job:
    """Start :func:`compute` for ``req`` in a worker thread; poll the returned :class:`Job`."""
    return Job(lambda ctx: compute(req, ctx)).start()


# ----------------------------------------------------------------------------- batch in a separate process
#: one line per pair of ``deepreg batch`` on a pipe (DeepRegLib.batch.runner.ProgressBar): "... 3/10  ok 2 ...  <id>: ok"
_BATCH_COUNT = re.compile(r"\] (\d+)/(\d+)\s")
_BATCH_PAIR = re.compile(r"\s\s(\S+): (ok|failed|skipped)(?: \((.*)\))?\s*$")


def batch_command(output_dir: str, *, pairs_csv: Optional[str] = None, fixed: Optional[str] = None,
                  moving_list: Optional[str] = None, fixed_labels: Optional[str] = None, model: Optional[str] = None,
                  device: str = "auto", workers: int = 1, refine: Optional[bool] = None, warped: bool = False,
                  python: Optional[str] = None) -> List[str]:
    """The ``deepreg batch`` command line for a CSV of pairs or an atlas + a list of moving images."""
    if bool(pairs_csv) == bool(fixed and moving_list):
        raise DeepRegError("give either a CSV of pairs, or an atlas (fixed image) and a list of moving images")
    cmd = [python or sys.executable, "-m", "DeepRegLib.cli", "batch", "--output-dir", str(output_dir),
           "--device", "cuda" if device == "gpu" else device, "--workers", str(max(1, int(workers)))]
    if pairs_csv:
        cmd += ["--pairs", str(pairs_csv)]
    else:
        cmd += ["--fixed", str(fixed), "--moving-list", str(moving_list)]
        if fixed_labels:
            cmd += ["--fixed-labels", str(fixed_labels)]
    if model:
        cmd += ["--model", model]
    if refine is True:
        cmd.append("--refine")
    elif refine is False:
        cmd.append("--network-only")
    if warped:
        cmd.append("--warped")
    return cmd


def write_moving_list(path: str, moving: Sequence[str]) -> str:
    """A ``--moving-list`` file (one image per line) for the atlas form."""
    from ..safeio import atomic_text
    atomic_text(path, "".join(f"{m}\n" for m in moving))
    return path


class BatchProcess:
    """``deepreg batch`` in its own process (not in Slicer's Python): the panel polls it like a :class:`Job`.

    :meth:`poll` returns :class:`Event` s: ``"log"`` (each output line), ``"progress"`` (``fraction`` of the
    pairs finished, ``stage`` ``"done/total"``, ``value`` ``{"id", "status", "message"}`` of the pair that
    finished), then one of ``"done"`` (``value``: the exit status; 1 when a pair failed), ``"failed"``
    (``value``: the exit status, no summary written) or ``"cancelled"``.  :meth:`cancel` ends the whole
    process group (the batch's Dask workers too); pairs finished before are kept (a re-run skips them).
    """

    def __init__(self, command: List[str], output_dir: str, env: Optional[dict] = None) -> None:
        self.command, self.output_dir = list(command), str(output_dir)
        self.env = env
        self._queue: "queue.Queue[Event]" = queue.Queue()
        self._proc = None
        self._t0 = 0.0
        self.state = "new"
        self.pairs: List[dict] = []
        self.log: List[str] = []
        self.fraction = 0.0
        self.returncode: Optional[int] = None

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._t0 if self._t0 else 0.0

    @property
    def summary_csv(self) -> str:
        import os
        return os.path.join(self.output_dir, "summary.csv")

    def start(self) -> "BatchProcess":
        import os
        import subprocess
        kwargs: Dict[str, Any] = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True  # its own process group: cancel ends the Dask workers too
        else:
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
        self._t0 = time.perf_counter()
        self._proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, text=True, bufsize=1, env=self.env, **kwargs)
        self.state = "running"
        threading.Thread(target=self._read, name="DeepReg batch output", daemon=True).start()
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:  # blocks without the GIL
            self._queue.put(Event("log", self.elapsed, message=line.rstrip("\n")))
        rc = self._proc.wait()
        self._queue.put(Event("exit", self.elapsed, value=rc))

    @property
    def running(self) -> bool:
        return self.state == "running"

    def cancel(self) -> None:
        """End the batch now (its process group); pairs already finished stay on disk."""
        if self._proc is None or self.state != "running":
            return
        self.state = "cancelled"
        _end_process_group(self._proc)
        self._queue.put(Event("cancelled", self.elapsed))

    def poll(self) -> List[Event]:
        events: List[Event] = []
        while True:
            try:
                ev = self._queue.get_nowait()
            except queue.Empty:
                return events
            if ev.kind == "log":
                self.log.append(ev.message)
                events.append(ev)
                m, p = _BATCH_COUNT.search(ev.message), _BATCH_PAIR.search(ev.message)
                if m and p:
                    done, total = int(m.group(1)), int(m.group(2))
                    self.fraction = done / max(1, total)
                    rec = {"id": p.group(1), "status": p.group(2), "message": p.group(3) or ""}
                    self.pairs.append(rec)
                    events.append(Event("progress", ev.elapsed, stage=f"{done}/{total}", fraction=self.fraction,
                                        value=rec))
            elif ev.kind == "exit":
                self.returncode = ev.value
                if self.state == "running":
                    import os
                    self.state = "done" if os.path.isfile(self.summary_csv) else "failed"
                    events.append(Event(self.state, ev.elapsed, value=ev.value))
            elif ev.kind == "cancelled":
                events.append(ev)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the process ended (tests, console); True when it did."""
        import subprocess
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True


def _end_process_group(proc, grace: float = 3.0) -> None:
    import os
    import signal
    import subprocess
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.CTRL_BREAK_EVENT)
        proc.wait(grace)
    except (ProcessLookupError, OSError, subprocess.TimeoutExpired):
        pass
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL) if os.name == "posix" else proc.kill()
        except (ProcessLookupError, OSError):
            pass
