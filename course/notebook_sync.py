"""Keep the notebooks' jupytext sources and their generated ``.ipynb`` twins in sync.

The ``notebooks/NN_name.py`` files (jupytext "percent" format) are the source of truth: they are what you edit,
review and diff. The ``.ipynb`` twins are generated from them, with no outputs and no execution counts, and
committed so that Colab (which opens only ``.ipynb``) and nbval can use them.

    python -m course.notebook_sync write notebooks/*.py   # regenerate the .ipynb twins
    python -m course.notebook_sync check notebooks/*.py   # exit 1 if any twin is missing or stale
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


def record_timings(notebooks: list[Path], out: Path) -> str:
    """Run the notebooks under nbval (in this environment, quick or full mode as set by ``ST4R_QUICK``/``CI``)
    and write a Markdown record (command, machine, mode, per-notebook time and outcome) to ``out``."""
    import os
    import platform
    import subprocess
    import tempfile
    import time
    import xml.etree.ElementTree as ET

    import torch

    from st4r_lite.runtime import atomic_write, quick_mode

    rows = []
    for nb in notebooks:
        with tempfile.TemporaryDirectory() as tmp:
            xml = Path(tmp) / "junit.xml"
            cmd = [sys.executable, "-m", "pytest", "-q", "--nbval-lax", "--nbval-current-env", "-p",
                   "no:cacheprovider", f"--junitxml={xml}", str(nb)]
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - start
            cells = ET.parse(xml).getroot().iter("testcase") if xml.exists() else []
            cells = list(cells)
            failed = sum(1 for c in cells if c.find("failure") is not None or c.find("error") is not None)
        outcome = "passed" if proc.returncode == 0 else f"FAILED ({failed} cell(s))"
        rows.append(f"| {nb.name} | {len(cells)} | {sum(float(c.get('time', 0)) for c in cells):.1f} | "
                    f"{wall:.1f} | {outcome} |")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    text = "\n".join([
        "# Notebook timings (nbval)", "",
        f"- command: `python -m course.notebook_sync timings --out {out} {' '.join(str(n) for n in notebooks)}`",
        f"- mode: {'quick (ST4R_QUICK=1 or CI set)' if quick_mode() else 'full'}",
        f"- machine: {platform.platform()}, {os.cpu_count()} CPU cores, GPU: {gpu}, torch {torch.__version__}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
        "| notebook | cells | cell time (s) | wall time incl. kernel start (s) | outcome |", "|---|---|---|---|---|",
        *rows, ""])
    with atomic_write(out, "wb") as f:
        f.write(text.encode("utf-8"))
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["write", "check", "timings"])
    parser.add_argument("sources", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("notebooks/TIMINGS.md"), help="(timings) where to write")
    args = parser.parse_args(argv)
    if args.action == "timings":
        print(record_timings([twin_of(s) if s.suffix == ".py" else s for s in args.sources], args.out))
        return 0
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
