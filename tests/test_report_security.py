"""The report treats results.json as untrusted: every string is escaped, the document is validated first."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from st4r_lite import cli
from st4r_lite.errors import InputError
from st4r_lite.runtime import repo_data_dir
from st4r_lite.studies import report
from st4r_lite.studies.results_schema import validate_results

XSS = '<img src=x onerror="pwn({})">'


@pytest.fixture()
def results(tmp_path):
    folder = tmp_path / "abl"
    folder.mkdir()
    shutil.copy(repo_data_dir() / "ablation_quick" / "results.json", folder / "results.json")
    return folder


def _edit(folder, change):
    doc = json.loads((folder / "results.json").read_text())
    change(doc)
    (folder / "results.json").write_text(json.dumps(doc))


def test_every_string_reaching_the_page_is_escaped(results, tmp_path):
    def inject(doc):
        doc["command"], doc["model"] = XSS.format(1), XSS.format(2)
        doc["sequences"] = [XSS.format(3)]
        doc["hardware"]["cpu" if "cpu" in doc["hardware"] else "processor"] = XSS.format(4)
        doc["config"]["notes"] = [XSS.format(5)]
        doc["ci_method"] = XSS.format(6)
        row = XSS.format(7)
        doc["rows"][0], doc["summary"][row] = row, doc["summary"].pop(doc["rows"][0])
    _edit(results, inject)
    (results / 'ablation_x" onerror="pwn(8).png').write_bytes(b"\x89PNG\r\n\x1a\n")
    page = report.build_report(results, tmp_path / "r.html").read_text()
    assert "<img src=x" not in page and 'onerror="pwn' not in page  # no payload as markup or as an attribute
    for i in range(1, 9):  # each one is on the page, escaped (as HTML text, or as \u003c in plotly's JSON)
        assert f'onerror=&quot;pwn({i})' in page or f'\\u003cimg src=x onerror=\\"pwn({i})' in page, i
    assert "&lt;img src=x onerror=&quot;pwn(1)&quot;&gt;" in page


@pytest.mark.parametrize("change, where", [
    (lambda d: d["config"].__setitem__("seeds", ["<script>pwn()</script>"]), "config.seeds[0]"),
    (lambda d: d.__setitem__("wall_time_s", "<script>pwn()</script>"), "wall_time_s"),
    (lambda d: d["hardware"].__setitem__("cpu_threads", "<script>pwn()</script>"), "hardware.cpu_threads"),
    (lambda d: d["runs"][0]["metrics"].__setitem__("track_apd_median", "<b>"), "runs[0].metrics"),
    (lambda d: d.pop("summary"), "missing the key 'summary'"),
    (lambda d: d.pop("config"), "missing the key 'config'"),
    (lambda d: d["rows"].append("extra"), "no entry for the row(s) 'extra'"),
])
def test_results_json_is_validated_in_one_line(results, tmp_path, capsys, change, where):
    _edit(results, change)
    with pytest.raises(InputError, match=re.escape(where)):
        report.build_report(results, tmp_path / "r.html")
    assert cli.main(["report", "--ablation", str(results), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and where in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r.html").exists()


def test_not_json_is_one_line(results, tmp_path):
    (results / "results.json").write_text("{not json")
    with pytest.raises(InputError, match="not a JSON file"):
        report.build_report(results, tmp_path / "r.html")


def test_the_shipped_results_are_valid():
    doc = json.loads((repo_data_dir() / "ablation_quick" / "results.json").read_text())
    assert validate_results(doc) is doc
