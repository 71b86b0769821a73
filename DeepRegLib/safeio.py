"""Files handled safely: inputs checked before any work, outputs never onto an input, written atomically.

* :func:`check_input_file` tells a missing file from one that cannot be read (permission denied) or
  is a folder.
* :func:`check_output_path` refuses, before any work, an output that resolves to an input (the same
  real path, or the same inode through a hard link), a folder, a name too long for the file system
  (with the temporary suffix), a parent that is a file, a folder that cannot be written, and an
  extension no writer knows.
* :func:`atomic_write` writes to a uniquely named temporary file in the output's folder and renames
  it onto the final name (``os.replace``, atomic on POSIX and Windows): a file that exists under its
  final name is complete, and a write killed half-way leaves the previous file untouched.
  :class:`StagedOutputs` does that for several files at once: all are written first and renamed only
  when every one succeeded.
"""
from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple, Union

from .errors import InputError

PathLike = Union[str, os.PathLike]

#: marks temporary files (batch removes those of a killed attempt by this mark)
TMP_MARK = ".tmp-"
#: double extensions kept whole so that ITK and matplotlib choose the right writer for the temporary file
_DOUBLE_EXT = (".nii.gz", ".img.gz", ".gipl.gz", ".hdr.gz")
IMAGE_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".hdr", ".img", ".img.gz", ".vtk",
                    ".gipl", ".gipl.gz", ".tif", ".tiff")
TRANSFORM_EXTENSIONS = (".h5", ".hdf5", ".hdf", ".tfm", ".txt", ".mat")
#: length of the suffix a temporary name adds (TMP_MARK + 8 hex digits + "-" + pid up to 7 digits)
_TMP_EXTRA = len(TMP_MARK) + 8 + 8


def split_ext(name: str) -> Tuple[str, str]:
    """``('brain', '.nii.gz')`` for ``brain.nii.gz``; one extension otherwise."""
    low = name.lower()
    for ext in _DOUBLE_EXT:
        if low.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], name[-len(ext):]
    stem, ext = os.path.splitext(name)
    return stem, ext


def temporary_name(path: PathLike) -> Path:
    """A unique name beside ``path`` with the same extension (``T.tmp-1a2b3c4d-4242.h5``)."""
    p = Path(path)
    stem, ext = split_ext(p.name)
    return p.with_name(f"{stem}{TMP_MARK}{uuid.uuid4().hex[:8]}-{os.getpid()}{ext}")


def _fsync(path: PathLike) -> None:
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: PathLike, write: Callable[[str], object], *, make_parent: bool = True) -> int:
    """``write(tmp)`` to a temporary name in ``path``'s folder, then rename it onto ``path``; returns bytes."""
    path = Path(os.fspath(path))
    if make_parent:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        write(str(tmp))
        if not tmp.is_file():
            raise OSError(f"nothing was written to {tmp}")
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path.stat().st_size


def atomic_text(path: PathLike, text: str, encoding: str = "utf-8") -> int:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding=encoding, newline="") as fh:
            fh.write(text)
    return atomic_write(path, write)


class StagedOutputs:
    """Several outputs that appear together or not at all.

    ``stage(path, write)`` writes each to its temporary name; :meth:`commit` renames them all onto
    their final names; leaving a ``with`` block by an exception (or :meth:`discard`) removes the
    temporaries and touches no final name.
    """

    def __init__(self) -> None:
        self._staged: List[Tuple[Path, Path]] = []

    def stage(self, path: PathLike, write: Callable[[str], object]) -> None:
        final = Path(os.fspath(path))
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_name(final)
        self._staged.append((tmp, final))
        write(str(tmp))
        if not tmp.is_file():
            raise OSError(f"nothing was written to {tmp}")
        _fsync(tmp)

    def commit(self) -> List[Path]:
        done = []
        for tmp, final in self._staged:
            os.replace(tmp, final)
            done.append(final)
        self._staged = []
        return done

    def discard(self) -> None:
        for tmp, _ in self._staged:
            try:
                tmp.unlink()
            except OSError:
                pass
        self._staged = []

    def __enter__(self) -> "StagedOutputs":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.discard()  # after commit() nothing is left to discard


def check_input_file(path: PathLike, name: str = "input", kind: str = "file") -> str:
    """``path`` as a string if it is a readable file; else :class:`InputError` saying what is wrong.

    ``name``: the input's role (``fixed``); ``kind``: what it is (``image file``), for the messages."""
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"{name}: expected a file path, got {type(path).__name__}")
    p = os.fspath(path)
    if not p:
        raise InputError(f"{name}: no file name given")
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise InputError(f"{kind} not found: {p}" + (f" ({name})" if name not in ("input", "image") else "")) from None
    except PermissionError:
        raise InputError(f"{name}: permission denied: cannot reach {p} (a folder on its path is not accessible)") from None
    except OSError as exc:
        raise InputError(f"{name}: cannot access {p}: {exc.strerror or exc}") from None
    if os.path.isdir(p):
        raise InputError(f"{name} {p} is a folder, not a file")
    if not os.access(p, os.R_OK):
        raise InputError(f"{name}: permission denied: cannot read {p}")
    if st.st_size == 0:
        raise InputError(f"{name} {p} is an empty file (0 bytes)")
    return p


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name one file: the same real path, or the same inode (a hard link)."""
    a, b = os.fspath(a), os.fspath(b)
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _nearest_existing(folder: str) -> str:
    d = os.path.abspath(folder)
    while not os.path.lexists(d):
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    return d


def _name_max(folder: str) -> int:
    """The longest file name (bytes) the file system of ``folder`` takes (255 where it cannot say)."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def check_folder_writable(folder: PathLike, what: str = "output folder") -> str:
    """``folder`` (absolute) if it is, or can be created as, a writable folder; else :class:`InputError`."""
    folder = os.path.abspath(os.fspath(folder))
    anc = _nearest_existing(folder)
    if not os.path.isdir(anc):
        raise InputError(f"{what} {folder} cannot be created: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise InputError(f"{what} {folder} is not writable: permission denied on {anc}")
    name_max = _name_max(anc)
    rest = os.path.relpath(folder, anc)
    for part in ([] if rest == "." else rest.split(os.sep)):
        if len(os.fsencode(part)) > name_max:
            raise InputError(f"{what} {folder}: the name {part[:40]}... is too long ({len(os.fsencode(part))} "
                             f"bytes; at most {name_max})")
    return folder


def check_output_path(path: PathLike, inputs: Optional[Mapping[str, Optional[PathLike]]] = None,
                      what: str = "output", kind: Optional[str] = None) -> str:
    """Refuse, before any work, an output that would destroy an input or cannot be written.

    ``inputs``: ``{name: path}`` of every input of the command (None values ignored); ``kind``:
    ``"image"`` or ``"transform"`` to check the extension. Returns the path as given.
    """
    p = os.fspath(path)
    if not p:
        raise InputError(f"{what}: no file name given")
    for name, inp in (inputs or {}).items():
        if inp is not None and os.path.lexists(os.fspath(inp)) and same_file(p, inp):
            raise InputError(f"{what} {p} is the same file as the {name} {os.fspath(inp)}: DeepReg never "
                             "overwrites an input; choose another output name")
    if os.path.isdir(p):
        raise InputError(f"{what} {p} is a folder; give a file name")
    name = os.path.basename(p)
    if kind is not None:
        exts = IMAGE_EXTENSIONS if kind == "image" else TRANSFORM_EXTENSIONS
        if not name.lower().endswith(exts):
            raise InputError(f"{what} {p}: unknown {kind} file type; use one of {', '.join(exts)}")
    folder = check_folder_writable(os.path.dirname(os.path.abspath(p)), f"folder of the {what}")
    name_max = _name_max(_nearest_existing(folder))
    if len(os.fsencode(name)) + _TMP_EXTRA > name_max:
        raise InputError(f"{what} {p}: the file name is too long ({len(os.fsencode(name))} bytes; at most "
                         f"{name_max - _TMP_EXTRA} here)")
    return p


def check_distinct_outputs(outputs: Mapping[str, Optional[PathLike]]) -> None:
    """Two outputs of one command must not be one file."""
    seen: Dict[str, str] = {}
    for name, p in outputs.items():
        if p is None:
            continue
        for other, q in seen.items():
            if same_file(p, q):
                raise InputError(f"{name} and {other} are the same file ({os.fspath(p)}); give each output its own name")
        seen[name] = os.fspath(p)


def describe_os_error(exc: OSError) -> str:
    """A one-line description of a failed file operation."""
    what = exc.strerror or errno.errorcode.get(exc.errno or 0, "") or str(exc)
    names = " -> ".join(str(n) for n in (exc.filename, exc.filename2) if n)
    return f"{what}: {names}" if names else what
