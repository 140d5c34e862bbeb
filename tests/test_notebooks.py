"""The notebooks' generated .ipynb twins are in sync with their jupytext sources and read as a course."""

import json
from pathlib import Path

import pytest

from course import notebook_sync

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def test_there_are_notebooks():
    assert SOURCES, "no notebooks/NN_name.py sources found"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_ipynb_twin_in_sync(source: Path):
    assert notebook_sync.check([source]) == []


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_ipynb_stripped_and_has_badge(source: Path):
    nb = json.loads(source.with_suffix(".ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    first = "".join(nb["cells"][0]["source"])
    assert "colab.research.google.com" in first and source.stem in first, "Open in Colab badge missing"
    assert "Goals" in first, "a notebook starts with its goals"


def test_check_detects_stale_twin(tmp_path: Path):
    src = tmp_path / "01_x.py"
    src.write_text("# %% [markdown]\n# hello\n\n# %%\nprint(1)\n")
    assert notebook_sync.check([src]) and "missing" in notebook_sync.check([src])[0]
    notebook_sync.write([src])
    assert notebook_sync.check([src]) == []
    src.write_text(src.read_text() + "\n# %%\nprint(2)\n")
    assert "out of date" in notebook_sync.check([src])[0]
