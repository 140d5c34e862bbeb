"""Keep the notebooks' jupytext sources and their generated ``.ipynb`` twins in sync.

The ``notebooks/NN_name.py`` files (jupytext "percent" format) are the source of truth: they are what you edit,
review and diff. The ``.ipynb`` twins are generated from them, with no outputs and no execution counts, and
committed so that Colab (which opens only ``.ipynb``) and nbval can use them.

    python -m st4r_lite.notebook_sync write notebooks/*.py   # regenerate the .ipynb twins
    python -m st4r_lite.notebook_sync check notebooks/*.py   # exit 1 if any twin is missing or stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from st4r_lite.runtime import atomic_write


def render_ipynb(source: Path) -> str:
    """The ``.ipynb`` text generated from a jupytext percent ``.py`` source: outputs stripped, stable JSON."""
    import jupytext

    notebook = jupytext.read(source, fmt="py:percent")
    notebook.metadata.pop("jupytext", None)
    notebook.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    notebook.metadata["language_info"] = {"name": "python"}
    notebook.metadata["colab"] = {"provenance": []}
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index:03d}"  # stable ids, so regenerating gives the same file
        cell.metadata.pop("lines_to_next_cell", None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    text = jupytext.writes(notebook, fmt="ipynb")
    # Normalise to a canonical, diff-friendly JSON layout.
    return json.dumps(json.loads(text), indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def twin_of(source: Path) -> Path:
    return source.with_suffix(".ipynb")


def write(sources: list[Path]) -> None:
    for source in sources:
        with atomic_write(twin_of(source), "w") as handle:
            handle.write(render_ipynb(source))
        print(f"wrote {twin_of(source)}")


def check(sources: list[Path]) -> list[str]:
    """Problems found (empty when every twin exists and matches its source)."""
    problems = []
    for source in sources:
        twin = twin_of(source)
        if not twin.exists():
            problems.append(f"{twin} is missing: run `make notebooks`")
        elif twin.read_text(encoding="utf-8") != render_ipynb(source):
            problems.append(f"{twin} is out of date with {source}: run `make notebooks`")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["write", "check"])
    parser.add_argument("sources", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for source in args.sources:
        if source.suffix != ".py" or not source.exists():
            parser.error(f"{source} is not an existing jupytext .py source")
    if args.action == "write":
        write(args.sources)
        return 0
    problems = check(args.sources)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
