"""`deepreg batch` on a real Dask LocalCluster (2 process workers) with small pairs made from the
bundled sample brains, one of them deliberately bad (a 2D image); resume; a worker that dies."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

distributed = pytest.importorskip("distributed", reason="deepreg batch needs dask[distributed] (the 'batch' extra)")

from DeepRegLib import cli  # noqa: E402
from DeepRegLib.batch.runner import (BatchConfig, Pair, atlas_pairs, local_cluster, read_pairs_csv,  # noqa: E402
                              run_batch)
from DeepRegLib.batch.summary import read_csv  # noqa: E402
from DeepRegLib.batch.task import TaskConfig  # noqa: E402
from DeepRegLib.errors import InputError  # noqa: E402

from conftest import sample_subject  # noqa: E402


@pytest.fixture(scope="module")
def small_pairs(tmp_path_factory) -> Path:
    """Sample brains 17 and 18 at 2 mm (128 x 128 x 80) with labels, a 2D slice, and pairs.csv:
    18 -> 17 and 17 -> 18 with labels, and the 2D slice as a bad moving image."""
    d = tmp_path_factory.mktemp("batch_data")
    for n in (17, 18):
        s = sample_subject(n)
        img = sitk.BinShrink(sitk.ReadImage(str(s["image"])), [2, 2, 2])
        lab = sitk.ReadImage(str(s["labels"]))
        lab = sitk.Resample(lab, img, sitk.Transform(), sitk.sitkNearestNeighbor, 0, lab.GetPixelID())
        sitk.WriteImage(img, str(d / f"s{n}.nii.gz"))
        sitk.WriteImage(lab, str(d / f"s{n}_labels.nii.gz"))
    sitk.WriteImage(sitk.ReadImage(str(d / "s18.nii.gz"))[:, :, 40], str(d / "slice2d.nii.gz"))
    (d / "pairs.csv").write_text(
        "fixed,moving,moving_labels,fixed_labels,id\n"
        "s17.nii.gz,s18.nii.gz,s18_labels.nii.gz,s17_labels.nii.gz,a\n"
        "s18.nii.gz,s17.nii.gz,s17_labels.nii.gz,s18_labels.nii.gz,b\n"
        "s17.nii.gz,slice2d.nii.gz,,,bad\n")
    return d


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster as `deepreg batch` starts one (2 process workers, 1 thread each), kept for the module."""
    with local_cluster(BatchConfig(workers=2, threads_per_worker=1)) as c:
        yield c


def test_local_cluster_workers_keep_glibc_malloc_defaults(cluster):
    """No MALLOC_* tuning in the workers: Dask's MALLOC_TRIM_THRESHOLD_ made torch page-fault on every
    large tensor (the refinement ran 4x slower in a worker than in `deepreg register`)."""
    with distributed.Client(cluster) as client:
        envs = client.run(lambda: {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")})
    assert envs and all(env == {} for env in envs.values()), envs


def test_worker_environ_variable_reaches_dask_config():
    """What the README tells users to export for their own `dask worker`s is read by Dask (a fresh process:
    Dask reads the environment at import) into the pre-spawn environment of its worker processes."""
    import subprocess
    import sys

    from DeepRegLib.batch.runner import OWN_WORKER_ENVIRON, WORKER_ENVIRON_VARIABLE, worker_environ
    assert worker_environ() and not any(k.startswith("MALLOC_") for k in worker_environ())
    code = "import dask, distributed; print(dict(dask.config.get('distributed.nanny.pre-spawn-environ')))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, WORKER_ENVIRON_VARIABLE: repr(OWN_WORKER_ENVIRON)})
    assert proc.returncode == 0, proc.stderr
    got = eval(proc.stdout.strip())  # noqa: S307 - Dask's repr of a dict of numbers
    assert {k: got.get(k) for k in OWN_WORKER_ENVIRON} == OWN_WORKER_ENVIRON, got


def _cli_register_1_thread(fixed: Path, moving: Path, out: Path) -> None:
    """`deepreg register` with 1 torch/ITK thread, as each batch worker (results depend on threads)."""
    import torch
    n_torch, n_itk = torch.get_num_threads(), sitk.ProcessObject_GetGlobalDefaultNumberOfThreads()
    torch.set_num_threads(1)
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(1)
    try:
        assert cli.main(["register", "--fixed", str(fixed), "--moving", str(moving),
                         "--output-transform", str(out), "--device", "cpu"]) == 0
    finally:
        torch.set_num_threads(n_torch)
        sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(n_itk)


def _transform_arrays(path: Path) -> list:
    """Kind, fixed parameters and parameters of each transform in an ITK composite file (the HDF5 bytes
    themselves differ between two writes of the same transform)."""
    t = sitk.CompositeTransform(sitk.ReadTransform(str(path)))
    out = []
    for i in range(t.GetNumberOfTransforms()):
        sub = t.GetNthTransform(i)
        out += [np.asarray(sub.GetName()), np.asarray(sub.GetFixedParameters()), np.asarray(sub.GetParameters())]
    return out


def test_batch_cli_on_local_cluster_with_bad_pair_and_resume(small_pairs, cluster, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["batch", "--pairs", str(small_pairs / "pairs.csv"), "--output-dir", str(out), "--workers", "2",
            "--threads-per-worker", "1", "--device", "cpu", "--warped-labels", "--folding-spacing", "2"]
    assert cli.main(args) == 1  # one pair failed
    err = capsys.readouterr().err
    assert "2 ok, 1 failed, 0 skipped" in err and "on 2 workers" in err

    rows = {r["id"]: r for r in read_csv(out / "summary.csv")}
    assert [rows[k]["status"] for k in ("a", "b", "bad")] == ["ok", "ok", "failed"]
    assert "3D" in rows["bad"]["message"] and "2 dimensions" in rows["bad"]["message"]
    assert rows["a"]["worker"] and float(rows["a"]["time_s"]) > float(rows["a"]["register_s"]) > 0
    # the quality verdict (DeepRegLib.quality) of each completed pair: a column, its flags listed if untrusted
    assert rows["a"]["trusted"] in ("True", "False") and rows["bad"]["trusted"] == ""
    assert float(rows["a"]["similarity_after"]) > float(rows["a"]["similarity_before"])

    # the good pairs' transforms are those of `deepreg register` for the same pair, exactly
    for pid, fixed, moving in (("a", "s17", "s18"), ("b", "s18", "s17")):
        ref = tmp_path / f"ref_{pid}.h5"
        _cli_register_1_thread(small_pairs / f"{fixed}.nii.gz", small_pairs / f"{moving}.nii.gz", ref)
        got = out / "pairs" / pid / "transform.h5"
        assert len(_transform_arrays(got)) == 6  # [affine, displacement field]
        for x, y in zip(_transform_arrays(got), _transform_arrays(ref)):
            # to rounding: the B-spline coefficients of one field have differed in the last bits (2.8e-14 mm)
            same = np.array_equal(x, y) if x.dtype.kind not in "fc" else np.allclose(x, y, rtol=0, atol=1e-9)
            assert same, f"pair {pid}: batch transform differs from deepreg register"
        # Dice recomputed from the written warped labels agrees with the summary
        from DeepRegLib.metrics import dice_summary
        dice = dice_summary(sitk.ReadImage(str(small_pairs / f"{fixed}_labels.nii.gz")),
                            sitk.ReadImage(str(out / "pairs" / pid / "warped_labels.nii.gz")))
        assert abs(dice["all"] - float(rows[pid]["dice_all"])) < 1e-5
        assert 0.3 < dice["all"] < 1.0 and float(rows[pid]["folding_percent"]) < 0.5
        assert not [p.name for p in (out / "pairs" / pid).iterdir() if ".tmp-" in p.name]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"pairs": 3, "ok": 2, "failed": 1, "skipped": 0}
    assert summary["failures"][0]["id"] == "bad" and "2 dimensions" in summary["failures"][0]["message"]
    assert summary["untrusted"] == [{"id": k, "flags": rows[k]["quality_flags"]} for k in "ab"
                                    if rows[k]["trusted"] == "False"]
    med = summary["metrics"]["dice_all"]["median"]
    assert med == pytest.approx(np.median([float(rows[k]["dice_all"]) for k in "ab"]))
    assert summary["metrics"]["time_s"]["n"] == 2 and summary["run"]["workers"] == 2
    png = sitk.ReadImage(str(out / "summary_dice_time.png"))
    assert png.GetSize()[0] > 100

    # second run, on an existing cluster (--scheduler): the done pairs are skipped (files untouched,
    # no attempt logged), the bad one is tried again
    before = {pid: ((out / "pairs" / pid / "transform.h5").stat().st_mtime_ns,
                    (out / "pairs" / pid / ".attempts").read_text()) for pid in "ab"}
    assert cli.main(args + ["--scheduler", cluster.scheduler_address]) == 1
    assert "0 ok, 1 failed, 2 skipped" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["registered"] == 1 and summary["run"]["scheduler"] == cluster.scheduler_address
    for pid in "ab":
        assert ((out / "pairs" / pid / "transform.h5").stat().st_mtime_ns,
                (out / "pairs" / pid / ".attempts").read_text()) == before[pid]
    # the summary still reports the skipped pairs' metrics from the first run
    rows2 = {r["id"]: r for r in read_csv(out / "summary.csv")}
    assert [rows2[k]["status"] for k in ("a", "b", "bad")] == ["skipped", "skipped", "failed"]
    assert rows2["a"]["dice_all"] == rows["a"]["dice_all"] and rows2["b"]["time_s"] == rows["b"]["time_s"]

    # changing a setting (now also the warped image) makes the pairs incomplete again; without
    # --refine/--network-only the run used the default model's card refinement, which is part of the key
    from DeepRegLib import DEFAULT_MODEL
    from DeepRegLib.batch.task import TaskConfig, completed_record
    from DeepRegLib.bundles import load_bundle
    from DeepRegLib.bundles import card_refinement
    default = card_refinement(load_bundle(DEFAULT_MODEL).card) or False
    pairs = read_pairs_csv(small_pairs / "pairs.csv")
    assert completed_record(pairs[0], TaskConfig(str(out), DEFAULT_MODEL, "cpu", default, write_warped_labels=True,
                                                 folding_spacing_mm=2.0))
    assert completed_record(pairs[0], TaskConfig(str(out), DEFAULT_MODEL, "cpu", default, write_warped_labels=True)) is None
    tcfg = TaskConfig(str(out), DEFAULT_MODEL, "cpu", default, write_warped=True, write_warped_labels=True,
                      folding_spacing_mm=2.0)
    assert completed_record(pairs[0], tcfg) is None
    if default:  # --network-only is other work
        assert completed_record(pairs[0], TaskConfig(str(out), DEFAULT_MODEL, "cpu", False, write_warped_labels=True,
                                                     folding_spacing_mm=2.0)) is None


class _KillWorker(distributed.WorkerPlugin):
    """Fault injection through Dask's public plugin API: the worker process exits (no cleanup) while it
    registers a pair in ``always``, or a pair in ``once`` the first time (right after the pair's start
    is logged in its ``.attempts`` file, i.e. during the registration)."""

    def __init__(self, out_dir: str, once: tuple, always: tuple) -> None:
        self.out_dir, self.once, self.always = out_dir, once, always

    def transition(self, key, start, finish, **kwargs):
        import threading
        import time
        if finish != "executing" or not str(key).startswith("deepreg-"):
            return
        pid = str(key).split("-")[1]
        if pid not in self.once + self.always:
            return
        log = os.path.join(self.out_dir, "pairs", pid, ".attempts")
        seen = open(log).read().count("\n") if os.path.exists(log) else 0
        if pid in self.once and seen:
            return

        def kill_when_started():
            for _ in range(3000):
                if os.path.exists(log) and open(log).read().count("\n") > seen:
                    os._exit(1)
                time.sleep(0.01)
        threading.Thread(target=kill_when_started, daemon=True).start()


def test_dead_worker_is_replaced_and_its_pair_retried_once(small_pairs, cluster, tmp_path):
    pairs = [Pair("retried", str(small_pairs / "s17.nii.gz"), str(small_pairs / "s18.nii.gz")),
             Pair("doomed", str(small_pairs / "s18.nii.gz"), str(small_pairs / "s17.nii.gz"))]
    out = tmp_path / "out"
    with distributed.Client(cluster) as client:
        client.register_plugin(_KillWorker(str(out), once=("retried",), always=("doomed",)), name="kill")
        try:
            rep = run_batch(pairs, out, BatchConfig(device="cpu"), client=client, progress=False)
            client.wait_for_workers(2, timeout=300)  # the nannies replaced the dead workers
        finally:
            client.unregister_worker_plugin("kill")
    retried, doomed = rep.records
    assert retried["status"] == "ok" and retried["attempt"] == 2, retried  # its first worker died
    assert (out / "pairs" / "retried" / "transform.h5").is_file()
    assert doomed["status"] == "failed" and "died while registering this pair, 2 times" in doomed["message"]
    assert len((out / "pairs" / "doomed" / ".attempts").read_text().splitlines()) == 2  # retried once only
    assert not (out / "pairs" / "doomed" / "result.json").exists()
    assert rep.summary["failures"] == [{"id": "doomed", "fixed": pairs[1].fixed, "moving": pairs[1].moving,
                                        "message": doomed["message"]}]


def test_a_pair_finished_in_this_run_is_not_registered_again(small_pairs, tmp_path):
    """Dask recomputes a finished pair whose result was lost with its worker (the worker died later,
    on another pair): the stored record of this run is returned, with no second attempt; another run
    (another run_id) registers it again."""
    from DeepRegLib import DEFAULT_MODEL
    from DeepRegLib.batch.task import process_pair, started_attempts
    pair = Pair("once", str(small_pairs / "s17.nii.gz"), str(small_pairs / "s18.nii.gz"))
    cfg = TaskConfig(str(tmp_path), DEFAULT_MODEL, refine=False)
    first = process_pair(pair, cfg, "run1")
    assert first["status"] == "ok" and first["attempt"] == 1, first
    assert isinstance(first["trusted"], bool) and "quality_flags" in first and first["similarity_after"] > 0
    again = process_pair(pair, cfg, "run1")
    assert again == first and started_attempts(tmp_path, "once", "run1") == 1
    other = process_pair(pair, cfg, "run2")
    assert other["run_id"] == "run2" and started_attempts(tmp_path, "once", "run2") == 1


@pytest.mark.slow
def test_refine_reaches_register_on_the_workers(small_pairs, cluster, tmp_path):
    """`refine` (here a 2-step RefineConfig, to stay fast) is what the workers pass to register(), and
    a refined pair is not complete for an unrefined run (and vice versa). Slow: ~10-20 s of refinement."""
    from DeepRegLib.batch.task import TaskConfig, completed_record
    from DeepRegLib.refine import RefineConfig
    refine = RefineConfig(max_steps=2)
    pair = Pair("r", str(small_pairs / "s17.nii.gz"), str(small_pairs / "s18.nii.gz"))
    with distributed.Client(cluster) as client:
        rep = run_batch([pair], tmp_path / "out", BatchConfig(device="cpu", refine=refine), client=client,
                        progress=False)
    rec = rep.records[0]
    assert rec["status"] == "ok" and rec["refined"] is True and rec["timings"]["refine"] > 0, rec
    assert rep.summary["run"]["refine"]["max_steps"] == 2
    out = str(tmp_path / "out")
    from DeepRegLib import DEFAULT_MODEL
    assert completed_record(pair, TaskConfig(out, DEFAULT_MODEL, refine=refine)) is not None
    assert completed_record(pair, TaskConfig(out, DEFAULT_MODEL, refine=False)) is None
    assert completed_record(pair, TaskConfig(out, DEFAULT_MODEL, refine=RefineConfig(max_steps=3))) is None


def _finished_pair(tmp_path, cfg):
    """A pair ``p`` recorded as done with ``cfg`` (its record written as JSON, a 10-byte transform);
    returns ``(pair, folder)``."""
    import json as _json

    from DeepRegLib.batch.task import OUTPUT_NAMES, RESULT, pair_dir, signature
    pair = Pair("p", "f.nii.gz", "m.nii.gz")
    d = pair_dir(tmp_path, "p")
    d.mkdir(parents=True)
    (d / OUTPUT_NAMES["transform"]).write_bytes(b"x" * 10)
    (d / RESULT).write_text(_json.dumps({"status": "ok", "signature": signature(pair, cfg),
                                         "output_bytes": {"transform": 10}}))
    return pair, d


def test_refine_setting_is_part_of_a_pairs_identity(tmp_path):
    """A pair done without refinement is not done for --refine, nor for other refinement settings."""
    from DeepRegLib.batch.task import OUTPUT_NAMES, TaskConfig, completed_record
    from DeepRegLib.refine import RefineConfig
    plain = TaskConfig(str(tmp_path), "ldr_brain_v1")
    pair, d = _finished_pair(tmp_path, plain)
    assert completed_record(pair, plain) is not None
    for refine in (True, RefineConfig(), RefineConfig(max_steps=3)):
        assert completed_record(pair, TaskConfig(str(tmp_path), "ldr_brain_v1", refine=refine)) is None
    (d / OUTPUT_NAMES["transform"]).write_bytes(b"x" * 9)  # a truncated output is not complete
    assert completed_record(pair, plain) is None


def test_a_pair_done_with_a_pyramid_refinement_is_complete_on_resume(tmp_path):
    """The stored signature is read back from JSON (tuples become lists): a refinement with tuple fields
    (``pyramid``, as the default card's full refinement has) must still compare equal, or every resumed
    batch would register its finished pairs again."""
    from DeepRegLib.batch.task import TaskConfig, completed_record
    from DeepRegLib.refine import RefineConfig
    cfg = TaskConfig(str(tmp_path), "ldr_brain_v1", refine=RefineConfig(pyramid=((4, 15, 0.5), (2, 15, 0.3))))
    pair, _ = _finished_pair(tmp_path, cfg)
    assert completed_record(pair, cfg) is not None
    other = TaskConfig(str(tmp_path), "ldr_brain_v1", refine=RefineConfig(pyramid=((4, 15, 0.5),)))
    assert completed_record(pair, other) is None


def test_pairs_csv_and_atlas_list(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "pairs.csv").write_text("moving,fixed\nsub/A/t1.nii.gz,atlas.nii.gz\n"
                                        "sub/B/t1.nii.gz,atlas.nii.gz\n\n")
    pairs = read_pairs_csv(tmp_path / "pairs.csv")
    assert [p.id for p in pairs] == ["A_t1_to_atlas", "B_t1_to_atlas"]  # distinct names from the paths
    assert pairs[0].fixed == str(tmp_path / "atlas.nii.gz") and pairs[0].moving_labels is None

    (tmp_path / "list.txt").write_text("# subjects\nsub/A/t1.nii.gz, sub/A/lab.nii.gz\n/abs/B.nii.gz\n")
    at = atlas_pairs(tmp_path / "atlas.nii.gz", tmp_path / "list.txt", fixed_labels=tmp_path / "atlas_lab.nii.gz")
    assert [(p.id, p.moving_labels) for p in at] == [("t1_to_atlas", str(tmp_path / "sub/A/lab.nii.gz")),
                                                     ("B_to_atlas", None)]
    assert all(p.fixed_labels == str(tmp_path / "atlas_lab.nii.gz") for p in at)

    for text, msg in (("fixed,movng\na,b\n", "missing ['moving']"),
                      ("fixed,moving,colour\na,b,c\n", "unknown columns"),
                      ("fixed,moving,id\na,b,x\nc,d,x\n", "same id 'x'"),
                      ("fixed,moving\na,\n", "line 2: fixed and moving are required")):
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(InputError, match=msg.replace("[", r"\[").replace("]", r"\]")):
            read_pairs_csv(tmp_path / "bad.csv")
    assert cli.main(["batch", "--pairs", str(tmp_path / "nope.csv"), "--output-dir", str(tmp_path / "o")]) == 2
    assert cli.main(["batch", "--moving-list", str(tmp_path / "list.txt"), "--output-dir", str(tmp_path / "o")]) == 2
