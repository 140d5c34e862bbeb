import os
from pathlib import Path

import pytest

from st4r_lite import runtime
from st4r_lite.errors import InputError


def test_quick_mode_follows_env(monkeypatch):
    monkeypatch.delenv("ST4R_QUICK", raising=False)
    monkeypatch.delenv("CI", raising=False)
    assert runtime.quick_mode() is False
    monkeypatch.setenv("CI", "true")
    assert runtime.quick_mode() is True
    monkeypatch.setenv("ST4R_QUICK", "0")
    assert runtime.quick_mode() is False
    monkeypatch.setenv("ST4R_QUICK", "1")
    assert runtime.quick_mode() is True


def test_atomic_write_leaves_nothing_on_error(tmp_path: Path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with runtime.atomic_write(target) as handle:
            handle.write(b"half")
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_existing(tmp_path: Path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with runtime.atomic_write(target, "w") as handle:
        handle.write("new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_ensure_writable_dir_errors(tmp_path: Path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        runtime.ensure_writable_dir(a_file)
    if os.geteuid() != 0:  # root can write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ValueError, match="cannot write"):
            runtime.ensure_writable_dir(locked / "sub")
    assert runtime.ensure_writable_dir(tmp_path / "new" / "dir").is_dir()


def test_pick_device_cpu_and_missing_cuda():
    assert runtime.pick_device("cpu").type == "cpu"
    assert runtime.pick_device(None).type in ("cpu", "cuda")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA"):
            runtime.pick_device("cuda")


def test_repo_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ST4R_DATA", str(tmp_path))
    assert runtime.repo_data_dir() == tmp_path
    monkeypatch.delenv("ST4R_DATA")
    assert runtime.repo_data_dir().name == "data"
