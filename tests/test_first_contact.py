"""What a new user meets first: the README's commands exist as written, `make test` needs nothing that CI adds,
and the method is cited from the repository's own reference (docs/method.md), not from a file that is absent."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "method.md"
CITING = ["st4r_lite", "notebooks", "slides", "course", "docs", "README.md"]
TEXT_SUFFIXES = {".py", ".ipynb", ".md", ".txt", ".html", ".json", ".toml", ".yml"}


def _text_files():
    for entry in CITING:
        path = ROOT / entry
        if path.is_file():
            yield path
        elif path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file() and f.suffix in TEXT_SUFFIXES and "revealjs" not in f.parts and "build" not in f.parts:
                    yield f


def _makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, flags=re.M))


def _extras() -> set[str]:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return set(tomllib.load(fh)["project"]["optional-dependencies"])


def test_no_citation_of_an_absent_design_file():
    bad = [f"{f.relative_to(ROOT)}:{i}" for f in _text_files()
           for i, line in enumerate(f.read_text(errors="replace").splitlines(), 1) if re.search(r"DESIGN\s*§", line)]
    assert not bad, f"cite docs/method.md §N instead of DESIGN §N: {bad}"


def test_every_method_citation_names_an_existing_section():
    anchors = set(re.findall(r'<a id="s(\d+)"></a>', METHOD.read_text()))
    assert anchors == {str(i) for i in range(1, 8)}
    cited = {(f.relative_to(ROOT), m) for f in _text_files()
             for m in re.findall(r"docs/method\.md §(\d+)", f.read_text(errors="replace"))}
    assert cited, "nothing cites docs/method.md"
    missing = sorted(str(c) for c in cited if c[1] not in anchors)
    assert not missing, f"citations of sections that docs/method.md does not have: {missing}"
    assert "DESIGN" not in METHOD.read_text()


def test_readme_commands_exist():
    readme = (ROOT / "README.md").read_text()
    targets = _makefile_targets()
    found = set(re.findall(r"(?:^|[`(])make ([a-z][\w-]*)", readme, flags=re.M))
    assert {"demo", "test", "test-full"} <= found
    for target in found:
        assert target in targets, f"README says `make {target}`, which the Makefile lacks"
    extras = _extras()
    for group in re.findall(r"\.\[([\w,]+)\]", readme):
        for extra in group.split(","):
            assert extra in extras, f"README installs the extra {extra!r}, which pyproject.toml lacks"


def test_make_test_installs_what_the_tests_need_and_ci_adds_nothing():
    make = (ROOT / "Makefile").read_text()
    install = re.search(r"^install-dev:.*\n\t(.+)$", make, flags=re.M).group(1)
    assert "'.[dev,video]'" in install            # notebook 08 and the video tests need PyAV (the video extra)
    assert {"test", "test-full", "test-fast"} <= _makefile_targets()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line for line in ci.splitlines() if not line.lstrip().startswith("#")]
    assert not any("install" in line and "-e" in line for line in commands), "CI must not install the package itself"
    assert not any("ST4R_QUICK" in line for line in commands), "quick mode must come from `make test`, not from CI"
    assert any(line.strip().startswith("make test ") or line.strip() == "make test" for line in commands)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("target, quick", [("test", "1"), ("test-full", "0")])
def test_make_test_quick_by_default_full_on_request(target, quick, monkeypatch):
    monkeypatch.delenv("ST4R_QUICK", raising=False)
    monkeypatch.delenv("MAKEFLAGS", raising=False)
    out = subprocess.run(["make", "-n", target, "PYTHON=python"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    runs = [line for line in out.splitlines() if "-m pytest" in line]
    assert len(runs) == 2 and all(line.startswith(f"ST4R_QUICK={quick} ") for line in runs), out


def test_every_record_the_docs_cite_is_in_the_repository():
    """README and docs/ quote numbers from files under data/: each file they name must be there (a placeholder
    such as scorecard64_NAME.json, in capitals, stands for a family of files and is skipped)."""
    missing = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for rel in set(re.findall(r"(data/[\w./-]+\.(?:jsonl|json|png|md|pt|txt))", doc.read_text())):
            if not re.search(r"[A-Z]{3,}", rel) and not (ROOT / rel).exists():
                missing.append(f"{doc.name}: {rel}")
    assert not missing, f"records cited but absent: {missing}"
