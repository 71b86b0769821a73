"""Every CLI subcommand on bad or unusual input: exit status 2, one ``deepreg: error: ...`` line naming the
problem, no traceback, nothing written under an output's final name, every input byte-identical, and
no registration started (the checks come before any long work). Small synthetic images; seconds.

Plus: outputs are atomic (an interrupted write keeps the previous file), evaluate checks geometry,
resume keys pairs by their files, a broken model bundle is skipped, weights are confined and checked.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from DeepRegLib import DEFAULT_MODEL, cli
from DeepRegLib import inference as inference_module
from DeepRegLib.bundles import CARD_FILE, load_bundle

REPO = Path(__file__).resolve().parents[2]
N = 24


def blobs(seed: int, shift=(0.0, 0.0, 0.0), n: int = N) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:n, :n, :n].astype(np.float32)
    arr = np.zeros((n, n, n), np.float32)
    for _ in range(8):
        c = rng.uniform(n * 0.3, n * 0.7, 3) + np.asarray(shift)
        r = rng.uniform(2, 4)
        arr += np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / (2 * r * r))
    return arr


def image(arr, spacing=2.0, origin=None) -> sitk.Image:
    img = sitk.GetImageFromArray(np.asarray(arr))
    img.SetSpacing((spacing,) * 3)
    img.SetOrigin(origin if origin is not None else (-N * spacing / 2,) * 3)
    return img


def patch_nifti(src: Path, dst: Path, offset: int, fmt: str, value) -> None:
    head = bytearray(gzip.open(src).read())
    struct.pack_into(fmt, head, offset, value)
    with gzip.open(dst, "wb") as fh:
        fh.write(bytes(head))


class _Payload:
    """Unpickling this would write a file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo ran > {self.marker}",))


def bundle(root: Path, name: str, weights: bytes = None, weights_name: str = "weights.pt") -> Path:
    """A copy of the default bundle's card with other weights."""
    src = load_bundle(DEFAULT_MODEL)
    folder = root / name
    folder.mkdir()
    card = dict(src.card)
    card["weights"] = weights_name
    (folder / CARD_FILE).write_text(json.dumps(card))
    if weights is not None:
        (folder / weights_name).write_bytes(weights)
    return folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("inputs")
    f, m = blobs(0), blobs(0, shift=(1.0, -1.0, 0.5))
    sitk.WriteImage(image(f), str(d / "f.nii.gz"))
    sitk.WriteImage(image(m), str(d / "m.nii.gz"))
    sitk.WriteImage(image(f), str(d / "f.nii"))
    lab_f, lab_m = (f > 0.5).astype(np.uint8), (m > 0.5).astype(np.uint8)
    sitk.WriteImage(image(lab_f), str(d / "lab_f.nii.gz"))
    sitk.WriteImage(image(lab_m), str(d / "lab_m.nii.gz"))
    sitk.WriteImage(image(lab_m, origin=(-N + 40.0, -N, -N)), str(d / "lab_shift.nii.gz"))  # 40 mm away
    sitk.WriteImage(image(lab_m.astype(np.int16) - 1), str(d / "lab_neg.nii.gz"))
    sitk.WriteImage(image(lab_m.astype(np.float32) * 1.5), str(d / "lab_frac.nii.gz"))
    sitk.WriteTransform(sitk.AffineTransform(3), str(d / "T.h5"))
    # damaged images
    raw = gzip.open(d / "m.nii.gz").read()
    with gzip.open(d / "trunc_data.nii.gz", "wb") as fh:  # a complete gzip stream of half the voxels
        fh.write(raw[: len(raw) // 2])
    comp = (d / "m.nii.gz").read_bytes()
    (d / "trunc_stream.nii.gz").write_bytes(comp[: len(comp) // 2])  # an interrupted copy
    (d / "trunc.nii").write_bytes((d / "f.nii").read_bytes()[:20000])
    nan = m.copy()
    nan[5, 6, 7] = np.nan
    nan[8, 8, 8] = np.inf
    sitk.WriteImage(image(nan), str(d / "nan.nii.gz"))
    patch_nifti(d / "m.nii.gz", d / "pixdim0.nii.gz", 80, "<f", 0.0)
    patch_nifti(d / "m.nii.gz", d / "pixdim_neg.nii.gz", 84, "<f", -2.0)
    sitk.WriteImage(sitk.JoinSeries([image(m), image(m)]), str(d / "4d.nii.gz"))
    sitk.WriteImage(sitk.JoinSeries([image(lab_m), image(lab_m)]), str(d / "4d_labels.nii.gz"))
    (d / "garbage.nii.gz").write_bytes(os.urandom(3000))
    (d / "garbage.h5").write_bytes(os.urandom(3000))
    (d / "afile").write_text("a file where a folder is expected")
    os.link(d / "f.nii.gz", d / "f_hardlink.nii.gz")
    os.symlink(d / "m.nii.gz", d / "m_symlink.nii.gz")
    (d / "pairs.csv").write_text("fixed,moving\nf.nii.gz,m.nii.gz\n")
    (d / "latin1.csv").write_bytes("fixed,moving\nf.nii.gz,m_\xe9t\xe9.nii.gz\n".encode("latin-1"))
    (d / "latin1.txt").write_bytes("m_\xe9t\xe9.nii.gz\n".encode("latin-1"))
    # model bundles with bad weights
    src = load_bundle(DEFAULT_MODEL)
    good = (src.path / src.card["weights"]).read_bytes()
    models = d / "models"
    models.mkdir()
    bundle(models, "truncated", good[: len(good) // 3])
    bundle(models, "notzip", b"this is not a torch file\n" * 100)
    buf = Path(d / "payload.zip")
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": _Payload(str(d / "PAYLOAD_RAN"))}, protocol=2))
        z.writestr("archive/version", "3\n")
    bundle(models, "pickle", buf.read_bytes())
    buf.unlink()
    (d / "escaped.pt").write_bytes(good)
    bundle(models, "escape", None, weights_name="../../escaped.pt")
    return d


def tree_digest(folder: Path) -> dict:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(folder))] = hashlib.sha1(p.read_bytes()).hexdigest()
        elif p.is_symlink():
            out[str(p.relative_to(folder))] = "link->" + os.readlink(p)
    return out


REG = ["register", "--fixed", "{d}/f.nii.gz", "--moving", "{d}/m.nii.gz", "--output-transform", "{o}/T.h5",
       "--device", "cpu"]
WARP = ["warp", "--input", "{d}/m.nii.gz", "--reference", "{d}/f.nii.gz", "--transform", "{d}/T.h5",
        "--output", "{o}/W.nii.gz"]
EVAL = ["evaluate", "--fixed-labels", "{d}/lab_f.nii.gz", "--warped-labels", "{d}/lab_m.nii.gz"]
BATCH = ["batch", "--pairs", "{d}/pairs.csv", "--output-dir", "{o}/out", "--no-progress", "--device", "cpu"]


def _set(argv, flag, value):
    argv = list(argv)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    return argv


def _deny(mode_bit, suffix):
    """A patch making ``os.access`` answer no for paths ending in ``suffix`` (tests run as root too)."""
    def patch(monkeypatch):
        real = os.access

        def access(path, mode, *args, **kw):
            if str(path).endswith(suffix) and mode & mode_bit:
                return False
            return real(path, mode, *args, **kw)
        monkeypatch.setattr(os, "access", access)
    return patch


LONG = "x" * 250
CASES = [
    # ---- data loss: an output that is an input
    ("register-transform-is-fixed", _set(REG, "--output-transform", "{d}/f.nii.gz"), "same file as the --fixed"),
    ("register-warped-is-moving", REG + ["--output-warped", "{d}/m.nii.gz"], "same file as the --moving"),
    ("register-warped-labels-is-labels-respelled", REG + ["--moving-labels", "{d}/lab_m.nii.gz",
     "--output-warped-labels", "{d}/./sub/../lab_m.nii.gz"], "same file as the --moving-labels"),
    ("register-warped-is-hard-link-of-fixed", REG + ["--output-warped", "{d}/f_hardlink.nii.gz"], "same file as the --fixed"),
    ("register-warped-is-symlink-to-moving", REG + ["--output-warped", "{d}/m_symlink.nii.gz"], "same file as the --moving"),
    ("register-two-outputs-one-file", REG + ["--output-warped", "{o}/w.nii.gz", "--moving-labels", "{d}/lab_m.nii.gz",
     "--output-warped-labels", "{o}/w.nii.gz"], "are the same file"),
    ("warp-output-is-input", _set(WARP, "--output", "{d}/m.nii.gz"), "same file as the --input"),
    ("warp-output-is-reference", _set(WARP, "--output", "{d}/f.nii.gz"), "same file as the --reference"),
    ("evaluate-output-is-labels", EVAL + ["--output", "{d}/lab_f.nii.gz"], "same file as the --fixed-labels"),
    # ---- silently wrong results
    ("register-truncated-nii-gz-data", _set(REG, "--moving", "{d}/trunc_data.nii.gz"), "is truncated"),
    ("register-truncated-nii-gz-stream", _set(REG, "--fixed", "{d}/trunc_stream.nii.gz"), "is truncated"),
    ("register-truncated-nii", _set(REG, "--fixed", "{d}/trunc.nii"), "is truncated"),
    ("register-nan-in-nifti", _set(REG, "--moving", "{d}/nan.nii.gz"), "2 NaN or infinite"),
    ("register-pixdim-0", _set(REG, "--moving", "{d}/pixdim0.nii.gz"), "voxel size .* must be positive"),
    ("register-pixdim-negative", _set(REG, "--fixed", "{d}/pixdim_neg.nii.gz"), "voxel size .* must be positive"),
    ("evaluate-grids-40mm-apart", _set(EVAL, "--warped-labels", "{d}/lab_shift.nii.gz"), "not on the same voxel grid.*40.00 mm"),
    # ---- clear errors instead of tracebacks
    ("register-4d-input", _set(REG, "--moving", "{d}/4d.nii.gz"), "4 dimensions"),
    ("register-folder-as-input", _set(REG, "--moving", "{d}"), "is a folder"),
    ("register-garbage-image", _set(REG, "--fixed", "{d}/garbage.nii.gz"), "cannot read"),
    ("register-output-parent-is-file", _set(REG, "--output-transform", "{d}/afile/sub/T.h5"), "is a file, not a folder"),
    ("register-output-name-too-long", _set(REG, "--output-transform", "{o}/" + LONG + ".h5"), "too long"),
    ("register-output-folder-name-too-long", _set(REG, "--output-transform", "{o}/" + LONG + "x" * 10 + "/T.h5"), "too long"),
    ("register-output-not-writable", REG, "not writable: permission denied", _deny(os.W_OK, "/out_dir")),
    ("batch-output-not-writable", BATCH, "not writable: permission denied", _deny(os.W_OK, "/out_dir")),
    ("register-input-permission-denied", REG, "permission denied: cannot read .*f.nii.gz", _deny(os.R_OK, "f.nii.gz")),
    ("register-unknown-transform-type", _set(REG, "--output-transform", "{o}/T.xyz"), "unknown transform file type"),
    ("register-missing-moving-labels", REG + ["--moving-labels", "{d}/nope.nii.gz", "--output-warped-labels",
     "{o}/wl.nii.gz"], "not found"),
    ("register-4d-moving-labels", REG + ["--moving-labels", "{d}/4d_labels.nii.gz", "--output-warped-labels",
     "{o}/wl.nii.gz"], "4 dimensions"),
    ("register-4d-fixed-mask", REG + ["--fixed-mask", "{d}/4d_labels.nii.gz"], "4 dimensions"),
    ("register-truncated-weights", REG + ["--model", "{d}/models/truncated"], "truncated or damaged"),
    ("register-non-zip-weights", REG + ["--model", "{d}/models/notzip"], "not a readable torch file"),
    ("register-pickle-payload-weights", REG + ["--model", "{d}/models/pickle"], "refusing to load .*could run code"),
    ("register-weights-outside-bundle", REG + ["--model", "{d}/models/escape"], "outside the bundle folder"),
    ("warp-unreadable-transform", _set(WARP, "--transform", "{d}/garbage.h5"), "cannot read the transform"),
    ("warp-missing-transform", _set(WARP, "--transform", "{d}/nope.h5"), "not found"),
    ("warp-unreadable-input", _set(WARP, "--input", "{d}/garbage.nii.gz"), "cannot read"),
    ("warp-truncated-input", _set(WARP, "--input", "{d}/trunc_data.nii.gz"), "is truncated"),
    ("warp-4d-reference", _set(WARP, "--reference", "{d}/4d.nii.gz"), "4 dimensions"),
    ("warp-output-parent-is-file", _set(WARP, "--output", "{d}/afile/W.nii.gz"), "is a file, not a folder"),
    ("evaluate-negative-labels", _set(EVAL, "--warped-labels", "{d}/lab_neg.nii.gz"), "negative labels"),
    ("evaluate-fractional-labels", _set(EVAL, "--warped-labels", "{d}/lab_frac.nii.gz"), "non-integer values"),
    ("evaluate-unreadable-transform", EVAL + ["--transform", "{d}/garbage.h5"], "cannot read the transform"),
    ("evaluate-missing-labels", _set(EVAL, "--fixed-labels", "{d}/nope.nii.gz"), "not found"),
    ("evaluate-output-parent-is-file", EVAL + ["--output", "{d}/afile/r.json"], "is a file, not a folder"),
    ("batch-folding-spacing-0", BATCH + ["--folding-spacing", "0"], "must be a positive number"),
    ("batch-folding-spacing-nan", BATCH + ["--folding-spacing", "nan"], "must be a positive number"),
    ("batch-non-utf8-csv", _set(BATCH, "--pairs", "{d}/latin1.csv"), "not UTF-8"),
    ("batch-non-utf8-list", ["batch", "--fixed", "{d}/f.nii.gz", "--moving-list", "{d}/latin1.txt", "--output-dir",
     "{o}/out"], "not UTF-8"),
    ("batch-missing-csv", _set(BATCH, "--pairs", "{d}/nope.csv"), "not found"),
    ("batch-output-parent-is-file", _set(BATCH, "--output-dir", "{d}/afile/out"), "is a file, not a folder"),
    ("batch-pickle-payload-weights", BATCH + ["--model", "{d}/models/pickle"], "refusing to load"),
    ("demo-output-parent-is-file", ["demo", "--output-dir", "{d}/afile/demo"], "is a file, not a folder"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_error_and_touches_nothing(case, inputs, tmp_path, capsys, monkeypatch):
    name, template, expected = case[:3]
    out = tmp_path / "out_dir"
    out.mkdir()
    argv = [a.replace("{d}", str(inputs)).replace("{o}", str(out)) for a in template]
    monkeypatch.setenv("DEEPREG_CONFIG_DIR", str(tmp_path / "config"))

    def no_work(*args, **kwargs):
        raise AssertionError("the registration started before the input was checked")
    monkeypatch.setattr(inference_module, "register", no_work)
    import DeepRegLib.batch.runner as batch_module
    monkeypatch.setattr(batch_module, "_run_on_dask", no_work)
    monkeypatch.setattr("DeepRegLib.demos.brain.run_demo", no_work)
    if len(case) > 3:
        case[3](monkeypatch)
    before = tree_digest(inputs)
    rc = cli.main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("deepreg: error:")]
    assert rc == 2, err
    assert len(errors) == 1, err
    import re
    assert re.search(expected, errors[0]), errors[0]
    assert "Traceback" not in err
    assert tree_digest(inputs) == before, "an input was modified"
    assert [p for p in out.rglob("*") if p.is_file()] == [], "an output was left behind"
    assert not (inputs / "PAYLOAD_RAN").exists()


def test_the_real_entry_point_prints_no_traceback(inputs, tmp_path):
    """Through ``python -m DeepRegLib.cli`` (a fresh process), the help with a '%' and two bad inputs."""
    env = {**os.environ, "DEEPREG_CONFIG_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    run = [sys.executable, "-m", "DeepRegLib.cli"]
    p = subprocess.run(run + ["evaluate", "--help"], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0 and "% folding" in p.stdout, p.stderr
    for argv, words in ((["warp", "--input", f"{inputs}/m.nii.gz", "--reference", f"{inputs}/f.nii.gz",
                          "--transform", f"{inputs}/T.h5", "--output", f"{inputs}/m.nii.gz"], "same file"),
                        (["evaluate", "--fixed-labels", f"{inputs}/lab_f.nii.gz", "--warped-labels",
                          f"{inputs}/lab_neg.nii.gz"], "negative labels")):
        before = tree_digest(inputs)
        p = subprocess.run(run + argv, capture_output=True, text=True, timeout=120, env=env)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert p.stderr.strip().startswith("deepreg: error:") and words in p.stderr
        assert tree_digest(inputs) == before


# ----------------------------------------------------------------------------- good input still works
def test_register_warp_evaluate_on_good_input(inputs, tmp_path, capsys, monkeypatch):
    """The happy path after all these checks: register (with a 1e30 voxel in the moving image: clipped,
    with a warning), warp, evaluate into a folder that does not exist yet; inputs untouched."""
    monkeypatch.setenv("DEEPREG_CONFIG_DIR", str(tmp_path / "config"))
    work = tmp_path / "in"
    shutil.copytree(inputs, work, symlinks=True)
    m = blobs(0, shift=(1.0, -1.0, 0.5))
    m[3, 3, 3] = 1e30
    sitk.WriteImage(image(m), str(work / "m_outlier.nii.gz"))
    before = tree_digest(work)
    o = tmp_path / "out"
    assert cli.main(["register", "--fixed", str(work / "f.nii.gz"), "--moving", str(work / "m_outlier.nii.gz"),
                     "--output-transform", str(o / "T.h5"), "--output-warped", str(o / "W.nii.gz"),
                     "--moving-labels", str(work / "lab_m.nii.gz"), "--output-warped-labels", str(o / "WL.nii.gz"),
                     "--device", "cpu", "--network-only"]) == 0
    err = capsys.readouterr().err
    assert "deepreg: warning: moving has 1 voxel(s) with extreme values" in err and "clipped" in err
    assert "[deepreg] quality: similarity" in err
    assert sorted(p.name for p in o.iterdir()) == ["T.h5", "W.nii.gz", "WL.nii.gz"]  # no temporaries left
    assert cli.main(["warp", "--input", str(work / "lab_m.nii.gz"), "--reference", str(work / "f.nii.gz"),
                     "--transform", str(o / "T.h5"), "--output", str(o / "WL2.nii.gz"), "--labels"]) == 0
    report = o / "new" / "folder" / "r.json"
    assert cli.main(["evaluate", "--fixed-labels", str(work / "lab_f.nii.gz"), "--warped-labels",
                     str(o / "WL2.nii.gz"), "--transform", str(o / "T.h5"), "--output", str(report)]) == 0
    assert json.loads(report.read_text())["dice"]["all"] > 0.5
    assert tree_digest(work) == before


def test_outlier_voxel_is_clipped_with_a_warning():
    from DeepRegLib.errors import InputWarning
    from DeepRegLib.imageio import as_image
    arr = blobs(1)
    arr[2, 2, 2] = 1e30
    with pytest.warns(InputWarning, match="extreme values"):
        img = as_image(image(arr), "moving")
    assert float(sitk.GetArrayViewFromImage(img).max()) < 1e3
    assert arr[2, 2, 2] == 1e30  # the caller's data is not changed
    with _no_warning():
        as_image(image(blobs(1)), "moving")  # an ordinary image: no warning, unchanged


class _no_warning:
    def __enter__(self):
        import warnings
        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


# ----------------------------------------------------------------------------- atomic outputs
def test_interrupted_writes_keep_the_previous_file(tmp_path, monkeypatch):
    """A write that dies half-way (simulated: the writer writes some bytes, then fails) leaves the
    previous complete file under the final name and no temporary behind."""
    from DeepRegLib import imageio, transforms
    t_path, i_path = tmp_path / "T.h5", tmp_path / "W.nii.gz"
    transforms.write_transform(sitk.TranslationTransform(3, (1.0, 2.0, 3.0)), t_path)
    imageio.write_image(image(blobs(2)), i_path)
    good_t, good_i = t_path.read_bytes(), i_path.read_bytes()

    def dies(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"\0" * 8192)
        raise KeyboardInterrupt  # a kill: not an error the writer could handle
    monkeypatch.setattr(sitk, "WriteTransform", dies)
    monkeypatch.setattr(sitk, "WriteImage", dies)
    with pytest.raises(KeyboardInterrupt):
        transforms.write_transform(sitk.TranslationTransform(3), t_path)
    with pytest.raises(KeyboardInterrupt):
        imageio.write_image(image(blobs(3)), i_path)
    assert t_path.read_bytes() == good_t and i_path.read_bytes() == good_i
    assert sorted(p.name for p in tmp_path.iterdir()) == ["T.h5", "W.nii.gz"]


def test_staged_outputs_appear_together_or_not_at_all(tmp_path):
    from DeepRegLib.safeio import StagedOutputs
    (tmp_path / "a.txt").write_text("old a")
    with pytest.raises(RuntimeError):
        with StagedOutputs() as out:
            out.stage(tmp_path / "a.txt", lambda p: Path(p).write_text("new a"))
            out.stage(tmp_path / "b.txt", lambda p: (_ for _ in ()).throw(RuntimeError("disk full")))
            out.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old a"
    with StagedOutputs() as out:
        out.stage(tmp_path / "a.txt", lambda p: Path(p).write_text("new a"))
        out.stage(tmp_path / "sub" / "b.txt", lambda p: Path(p).write_text("b"))
        out.commit()
    assert (tmp_path / "a.txt").read_text() == "new a" and (tmp_path / "sub" / "b.txt").read_text() == "b"


def test_temporary_names_are_unique_and_keep_the_extension(tmp_path):
    from DeepRegLib.safeio import temporary_name
    names = {temporary_name(tmp_path / "summary.csv") for _ in range(100)}
    assert len(names) == 100 and all(n.name.endswith(".csv") and n.parent == tmp_path for n in names)
    assert temporary_name(tmp_path / "w.nii.gz").name.endswith(".nii.gz")


def test_summary_and_licence_files_use_unique_temporaries(tmp_path, monkeypatch):
    """Two runs writing ``summary.*`` or the licence store at once no longer share a temporary name."""
    from DeepRegLib import safeio
    from DeepRegLib.batch.summary import write_summary
    from DeepRegLib.bundles.licence import LicenceStore
    used = []
    real = safeio.temporary_name
    monkeypatch.setattr(safeio, "temporary_name", lambda p: used.append(real(p)) or used[-1])
    rec = {"id": "a", "status": "ok", "message": "", "fixed": "f", "moving": "m", "trusted": True}
    write_summary([rec], tmp_path, {"wall_s": 1.0})
    write_summary([rec], tmp_path, {"wall_s": 1.0})
    store = LicenceStore(tmp_path / "cfg" / "licences.json")
    store.accept({"name": "x", "licence": "CC BY-NC-SA"})
    assert store.accepted({"name": "x", "licence": "CC BY-NC-SA"})
    assert len(used) == len(set(used)) >= 5
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


# ----------------------------------------------------------------------------- resume keys
def _done(pair, cfg):
    """Mark ``pair`` as done for ``cfg`` the way a worker does (its result.json and transform)."""
    from DeepRegLib.batch.task import OUTPUT_NAMES, RESULT, pair_dir, signature
    d = pair_dir(cfg.output_dir, pair.id)
    d.mkdir(parents=True, exist_ok=True)
    (d / OUTPUT_NAMES["transform"]).write_bytes(b"x" * 10)
    (d / RESULT).write_text(json.dumps({"status": "ok", "signature": signature(pair, cfg),
                                        "output_bytes": {"transform": 10}}))


def test_resume_keys_pairs_by_their_files(tmp_path, monkeypatch):
    from DeepRegLib.batch.runner import read_pairs_csv
    from DeepRegLib.batch.task import TaskConfig, completed_record
    cohorts = []
    for name in ("cohort1", "cohort2"):
        c = tmp_path / name
        c.mkdir()
        sitk.WriteImage(image(blobs(0 if name == "cohort1" else 5)), str(c / "f.nii.gz"))
        sitk.WriteImage(image(blobs(1 if name == "cohort1" else 6)), str(c / "m.nii.gz"))
        (c / "pairs.csv").write_text("fixed,moving\nf.nii.gz,m.nii.gz\n")
        cohorts.append(c)
    cfg = TaskConfig(str(tmp_path / "OUT"), DEFAULT_MODEL, "cpu", False)
    monkeypatch.chdir(cohorts[0])
    first = read_pairs_csv("pairs.csv")[0]
    _done(first, cfg)
    assert completed_record(first, cfg) is not None
    # the same CSV spelled differently: the same pair, still done
    monkeypatch.chdir(tmp_path)
    for spelling in (cohorts[0] / "pairs.csv", "cohort1/../cohort1/./pairs.csv"):
        again = read_pairs_csv(spelling)[0]
        assert again == first and completed_record(again, cfg) is not None
    # the same relative names in another folder: other work
    monkeypatch.chdir(cohorts[1])
    other = read_pairs_csv("pairs.csv")[0]
    assert other.id == first.id and completed_record(other, cfg) is None
    # an input replaced at the same path: other work
    sitk.WriteImage(image(blobs(9)), str(cohorts[0] / "m.nii.gz"))
    os.utime(cohorts[0] / "m.nii.gz", ns=(1, 10 ** 18))
    assert completed_record(first, cfg) is None
    # another setting (device) or model: other work
    _done(first, cfg)
    assert completed_record(first, cfg) is not None
    assert completed_record(first, TaskConfig(cfg.output_dir, DEFAULT_MODEL, "cuda", False)) is None
    assert completed_record(first, TaskConfig(cfg.output_dir, "ldr_brain_v1", "cpu", False)) is None


# ----------------------------------------------------------------------------- models
def test_one_broken_bundle_does_not_break_the_others(tmp_path, monkeypatch, capsys):
    from DeepRegLib.bundles import list_models
    from DeepRegLib.errors import DeepRegError, ModelWarning
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / CARD_FILE).write_text("{ not json")
    (tmp_path / "noarch").mkdir()
    (tmp_path / "noarch" / CARD_FILE).write_text(json.dumps({"input": {}}))
    monkeypatch.setenv("DEEPREG_MODELS_PATH", str(tmp_path))
    with pytest.warns(ModelWarning) as caught:
        models = list_models()
    said = " ".join(str(w.message) for w in caught)
    assert "skipped model broken" in said and "skipped model noarch" in said and "no 'architecture'" in said
    assert DEFAULT_MODEL in models and "broken" not in models and "noarch" not in models
    assert load_bundle().name == DEFAULT_MODEL  # the default model still loads
    with pytest.raises(DeepRegError, match="'broken' cannot be used: broken: invalid model card"):
        load_bundle("broken")
    assert cli.main(["models"]) == 0
    out = capsys.readouterr()
    assert DEFAULT_MODEL in out.out and "deepreg: warning: skipped model broken" in out.err


def test_weights_path_is_confined_to_the_bundle(inputs, monkeypatch):
    from DeepRegLib.bundles import list_models
    from DeepRegLib.errors import DeepRegError
    escape = load_bundle(str(inputs / "models" / "escape"))  # a folder named explicitly: its card is read
    for use in (lambda: escape.weights_path, escape.check_weights_file, escape.load_state, escape.network):
        with pytest.raises(DeepRegError, match="outside the bundle folder"):
            use()
    problems = []
    monkeypatch.setenv("DEEPREG_MODELS_PATH", str(inputs / "models"))
    models = list_models(problems)
    assert "escape" not in models and any("escape" in p and "outside" in p for p in problems)


def test_malicious_weights_never_run_code(inputs):
    """Both gates refuse the payload: the torch-free check and torch.load(weights_only=True)."""
    from DeepRegLib.errors import DeepRegError
    b = load_bundle(str(inputs / "models" / "pickle"))
    with pytest.raises(DeepRegError, match="refusing to load"):
        b.check_weights_file()
    with pytest.raises(DeepRegError, match="refusing to load|damaged|not a readable"):
        b.load_state()
    assert not (inputs / "PAYLOAD_RAN").exists()
    with pytest.raises(DeepRegError, match="not a readable torch file"):
        load_bundle(str(inputs / "models" / "truncated")).load_state()
    load_bundle().check_weights_file()  # the bundled weights pass


def test_register_with_a_non_string_model_is_an_input_error():
    from DeepRegLib.errors import InputError
    from DeepRegLib.inference import register
    img = image(blobs(0))
    with pytest.raises(InputError, match="model must be a model name"):
        register(img, img, model=123)


# ----------------------------------------------------------------------------- packaging
def test_packaging_supports_slicer_python_and_a_safe_torch():
    tomllib = pytest.importorskip("tomllib")
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert meta["requires-python"] == ">=3.9"
    deps = {d.split(">=")[0].split("==")[0]: d for d in meta["dependencies"]}
    assert deps["torch"] == "torch>=2.6" and deps["SimpleITK"] == "SimpleITK>=2.2.1"


def test_engine_parses_as_python_3_9():
    """Slicer 5.6-5.8 embed Python 3.9: no syntax newer than 3.9 in the engine (annotations are not
    evaluated: every module has ``from __future__ import annotations`` where it writes ``X | Y``)."""
    import ast
    for f in sorted((REPO / "DeepRegLib").rglob("*.py")):
        src = f.read_text()
        tree = ast.parse(src, feature_version=(3, 9))
        for node in ast.walk(tree):
            assert not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "zip"
                        and any(k.arg == "strict" for k in node.keywords)), f"{f}:{node.lineno}: zip(strict=)"
        if " | " in src and "->" in src:
            annotated = any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr)
                            for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                            for a in [*fn.args.args, *fn.args.kwonlyargs] if a.annotation for n in ast.walk(a.annotation))
            assert not annotated or "from __future__ import annotations" in src, f"{f}: X | Y annotations need the future import"


def test_sheared_or_degenerate_direction_is_refused():
    from DeepRegLib.errors import InputError
    from DeepRegLib.imageio import validate_image
    for direction in ((1, 0.3, 0, 0, 1, 0, 0, 0, 1), (2, 0, 0, 0, 1, 0, 0, 0, 1.0)):  # sheared; not unit length
        img = image(blobs(0))
        img.SetDirection(direction)
        with pytest.raises(InputError, match="invalid direction matrix"):
            validate_image(img, "moving")
    img = image(blobs(0))
    img.SetDirection((0, -1, 0, 1, 0, 0, 0, 0, -1))  # any rotation or reflection is fine
    validate_image(img, "moving")
