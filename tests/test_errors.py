"""The command line's error contract: input the user can fix prints one ``error:`` line and exits 2; a bug
(any other exception, a plain ValueError included) keeps its traceback and exits non-zero, not 2."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from st4r_lite import cli
from st4r_lite.errors import InputError
from st4r_lite.world import benchmarks

REPO = Path(__file__).resolve().parents[1]


def _one_error_line(err: str, *words: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, err)


def test_input_error_prints_one_line_and_exits_2(tmp_path, capsys):
    rc = cli.main(["generate", "--domain", "moon", "--num-seqs", "1", "--frames", "2", "--height", "16",
                   "--width", "16", "--out", str(tmp_path / "gen")])
    assert rc == 2
    _one_error_line(capsys.readouterr().err, "moon", "pretrain")


def test_unknown_name_is_an_input_error():
    with pytest.raises(InputError, match="worldtrack-lite"):
        benchmarks.write_named_benchmark("no-such-benchmark", "/nonexistent")


@pytest.mark.parametrize("error", [FileNotFoundError("no such file: x.npz"), PermissionError("x: not permitted"),
                                   NotADirectoryError("x is a file"), IsADirectoryError("x is a folder"),
                                   FileExistsError("x is already there")])
def test_path_errors_are_user_errors(monkeypatch, tmp_path, capsys, error):
    def raise_it(*args, **kwargs):
        raise error

    monkeypatch.setattr(benchmarks, "write_benchmark", raise_it)
    assert cli.main(["generate", "--out", str(tmp_path)]) == 2
    _one_error_line(capsys.readouterr().err, str(error))


@pytest.mark.parametrize("error", [ValueError("a bug: shapes disagree"), KeyError("oops"), ZeroDivisionError()])
def test_a_bug_is_not_turned_into_a_user_error(monkeypatch, tmp_path, error):
    def raise_it(*args, **kwargs):
        raise error

    monkeypatch.setattr(benchmarks, "write_benchmark", raise_it)
    with pytest.raises(type(error)):
        cli.main(["generate", "--out", str(tmp_path)])


def test_a_bug_keeps_its_traceback_in_a_real_process(tmp_path):
    code = ("import sys\n"
            "from st4r_lite import cli\n"
            "from st4r_lite.world import benchmarks\n"
            "def bug(*a, **k):\n"
            "    raise ValueError('a bug, not the user')\n"
            "benchmarks.write_benchmark = bug\n"
            f"sys.exit(cli.main(['generate', '--out', {str(tmp_path)!r}]))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode not in (0, 2), proc.stderr
    assert "Traceback" in proc.stderr and "ValueError: a bug, not the user" in proc.stderr
    assert "error: a bug" not in proc.stderr
