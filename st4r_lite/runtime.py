"""Small runtime helpers shared by the library, the CLI and the notebooks.

- ``quick_mode()``: the notebooks' and demos' fast path (``ST4R_QUICK=1``, also on when ``CI`` is set).
- ``pick_device()``: "cuda" when available, else "cpu" (or what the user asked for, checked).
- ``repo_data_dir()``: where the shipped artefacts (``data/``) live.
- ``atomic_write(path)``: write to a temporary file beside the target and rename it into place only when the
  writer finished, so an interrupted run never leaves a half-written file behind; ``staged_dir(out)`` does the
  same for a whole output folder. Temporary names carry the writer's process id (``.NAME.<pid>-XXXX.tmp``,
  ``.NAME.tmp-<pid>-XXXX``): a run killed with SIGKILL leaves them behind, and the next write of NAME removes
  those whose process is gone (``sweep_stale``). Written files get the usual modes (0666 minus the umask).
- ``check_writable(path)`` / ``check_output_folder(out, inputs)``: fail in one line before the work when an
  output cannot be written (read-only filesystem, a path under a regular file) or would replace an input.
- ``sigterm_as_interrupt()``: SIGTERM (``kill``, a job scheduler) stops a command like Ctrl-C, so the same
  clean-up runs.
- ``hardware_info(device)``: what a measurement ran on (CPU, cores, threads, load, GPU, versions).
- ``to_jsonable(obj)``: dataclasses → dicts, tensors and arrays → lists, NaN / inf → None, recursively, so that
  every JSON file the project writes is strict JSON.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import random
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np
import torch

from st4r_lite.errors import InputError


def quick_mode() -> bool:
    """True when ``ST4R_QUICK`` is set to a true value, or when ``CI`` is set and ``ST4R_QUICK`` is not.

    >>> import os; os.environ["ST4R_QUICK"] = "0"; quick_mode()
    False
    """
    flag = os.environ.get("ST4R_QUICK")
    if flag is not None:
        return flag.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(os.environ.get("CI"))


def pick_device(requested: str | None = None) -> torch.device:
    """The device to run on: ``requested`` if given (checked), else CUDA when available, else CPU."""
    if requested in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError) as err:
        raise InputError(f"--device {requested!r} is not a device; use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            f"--device {requested} was asked for, but torch sees no CUDA GPU on this machine; "
            "use --device cpu (or leave --device out to pick automatically)"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                         f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    return device


def repo_data_dir() -> Path:
    """The folder of shipped artefacts: ``$ST4R_DATA`` if set, else ``data/`` at the repository root."""
    env = os.environ.get("ST4R_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "data"


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) if needed and check that files can be written there.

    Raises ``ValueError`` with a clear message when it exists as a file or cannot be written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"output folder {str(path)!r} exists and is not a folder; choose another --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise InputError(f"cannot write to output folder {str(path)!r}: {err.strerror or err}") from err
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def sweep_stale(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files / folders of ``path`` that a killed writer left beside it; returns them.

    Only names this module makes (``.NAME.<pid>-XXXX.tmp``, ``.NAME.tmp-<pid>-XXXX``, ``.NAME.old-<pid>``) whose
    process ``<pid>`` no longer runs are removed."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    name = re.escape(path.name)
    pattern = re.compile(rf"^\.{name}\.(?:(\d+)-[^/]*\.tmp|tmp-(\d+)-[^/]*|old-(\d+))$")
    removed = []
    for entry in path.parent.iterdir():
        m = pattern.match(entry.name)
        if not m or _pid_alive(int(next(g for g in m.groups() if g))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path``; on success rename it to ``path``, on error delete it.

    The file gets the usual mode (0666 minus the umask), and stale temporary files of ``path`` are swept first.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_write(d / "a.txt", "w") as f:
    ...     _ = f.write("hello")
    >>> (d / "a.txt").read_text()
    'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def staged_dir(out: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out`` to write the outputs into; on success move them into place,
    on any error (or Ctrl-C / SIGTERM) delete it, so a failed run leaves no empty or partial ``out``.

    replace=False: each file is moved into ``out`` (created if needed; other files already there stay).
    replace=True: the whole folder replaces ``out`` (``--overwrite``). Modes follow the umask."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(out)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-{os.getpid()}-"))
    try:
        yield tmp
        mask = _umask()
        for p in [tmp, *tmp.rglob("*")]:  # mkdtemp / mkstemp make private files; give them the usual modes
            p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)
        if not out.exists():
            os.replace(tmp, out)
        elif replace:
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            for entry in sorted(tmp.iterdir()):
                target = out / entry.name
                if target.is_dir() and entry.is_dir():
                    shutil.rmtree(target)
                os.replace(entry, target)
            tmp.rmdir()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def removed_on_failure(out: str | os.PathLike) -> Iterator[None]:
    """For outputs written in several steps: when ``out`` did not exist before, an error (or Ctrl-C / SIGTERM)
    inside the block removes it, so a failed run leaves no empty or partial ``out``; an existing one is kept."""
    out = Path(out)
    existed = out.exists()
    try:
        yield
    except BaseException:
        if not existed and out.is_dir():
            shutil.rmtree(out, ignore_errors=True)
        raise


def check_writable(path: str | os.PathLike, *, what: str = "--out", folder: bool = False) -> Path:
    """Fail now, with one InputError line, when ``path`` (a file, or a folder if ``folder``) cannot be written.

    Checks the kind of an existing ``path``, that no parent is a regular file, and that the nearest existing
    folder accepts a file (a read-only filesystem or missing permission fail here). Creates nothing."""
    path = Path(path).absolute()
    if path.exists() and path.is_dir() != folder:
        kind = "a folder" if path.is_dir() else "a file"
        raise InputError(f"{what} {str(path)!r} is {kind}; give {'a folder' if folder else 'a file name'}")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{what} {str(path)!r} is under {str(parent)!r}, which is a file, not a folder; "
                         f"choose another {what}")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".st4r-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise InputError(f"cannot write {what} {str(path)!r}: {str(parent)!r} is not writable "
                         f"({err.strerror or err}); choose another {what}") from None
    return path


def check_output_folder(out: str | os.PathLike, *, inputs: Iterable = (), overwrite: bool = False,
                        what: str = "--out") -> Path:
    """Check an output folder before the work: writable, and neither one of ``inputs`` nor a folder holding one
    (``--overwrite`` would delete the input; writing beside it would mix outputs into the input)."""
    out = check_writable(out, what=what, folder=True)
    real = Path(os.path.realpath(out))
    for item in inputs:
        if item is None or not isinstance(item, (str, os.PathLike)) or not Path(item).exists():
            continue
        source = Path(os.path.realpath(item))
        if real == source or real in source.parents:
            raise InputError(f"{what} {str(out)!r} {'is' if real == source else 'contains'} the input "
                             f"{str(item)!r}; {'--overwrite would delete it; ' if overwrite else ''}"
                             f"choose an output folder outside the input")
    return out


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt like Ctrl-C does (main thread only; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_info(device: torch.device | str = "cpu") -> dict:
    """The machine a measurement ran on (recorded with every number): CPU, cores, torch threads, the load
    average (other processes compete for shared cores), versions, and the GPU when ``device`` is CUDA."""
    device = torch.device(device)
    info = {"cpu": _cpu_name(), "machine": platform.machine(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
            "load_avg_1_5_15min": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
            "python": platform.python_version(), "torch": torch.__version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_memory_bytes"] = torch.cuda.get_device_properties(device).total_memory
    return info


def to_jsonable(obj):
    """Dataclasses → dicts, tensors / numpy arrays and numbers → lists / Python numbers, NaN and inf → None,
    dict keys → str, recursively (for ``json.dumps``)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (torch.Tensor, np.ndarray, np.generic)):
        return to_jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNG (and numpy's, if used) and return a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def command_line(argv: list[str]) -> str:
    """The command as a user would type it: the package's entry points (``st4r-lite``, ``python -m st4r_lite.cli``,
    whose argv[0] is a path to ``cli/__main__.py``) are written ``st4r-lite``.

    >>> command_line(["/repo/st4r_lite/cli/__main__.py", "pretrain", "--steps", "3"])
    'st4r-lite pretrain --steps 3'
    """
    head = argv[0] if argv else ""
    if head.endswith(("st4r-lite", "cli.py")) or head.replace("\\", "/").endswith("st4r_lite/cli/__main__.py"):
        head = "st4r-lite"
    return " ".join([head, *argv[1:]])
