"""Statistics, tables and reference checks of ablation results (``results.json`` of ``st4r-lite ablation``).

A unit of comparison is one (sequence, seed) pair. Per row and metric: the mean over units, the std across
seeds (of the per-seed means over sequences), and the paired difference to a reference row,

    d_i = m_i(row) − m_i(reference),   mean(d) ± t_{0.975, n−1} · sd(d)/√n     (Student-t 95 % interval),

plus the Markdown table of ``results.md`` and :func:`check_against_reference` (does a rerun reproduce the
shipped reference within tolerance?). Pure functions of the results dicts: no model, no data.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from st4r_lite.errors import InputError
from st4r_lite.studies.results_schema import validate_results

__all__ = ["KEY_METRICS", "hardware_summary", "t_quantile_975", "paired_interval", "summarize", "paired_differences", "markdown_table",
           "CheckResult", "load_results", "check_against_reference"]

# (metric key, label, unit, higher is better)
KEY_METRICS = (("track_apd_median", "APD", "%", True), ("track_epe_median", "EPE", "m", False),
               ("track_apd_dyn_median", "APD dyn", "%", True), ("track_apd_sim3", "APD sim3", "%", True),
               ("recon_apd_median", "recon APD", "%", True), ("depth_abs_rel", "AbsRel", "", False),
               ("cam_ate", "ATE", "m", False), ("occl_recall", "occl. recall", "%", True),
               ("occl_precision", "occl. prec.", "%", True))
# t_{0.975, dof} for dof = 1..30 (beyond: 1.96 + 2.4 / dof, within 0.003 of the exact value)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t_quantile_975(dof: int) -> float:
    """The 0.975 quantile of Student's t with ``dof`` degrees of freedom (table for 1..30)."""
    if dof < 1:
        return math.nan
    return _T975[dof - 1] if dof <= 30 else 1.96 + 2.4 / dof


def paired_interval(diffs) -> tuple[float, float]:
    """Student-t 95 % interval (low, high) of the mean of paired differences (NaN, NaN) with fewer than 2."""
    d = np.asarray(list(diffs), dtype=float)
    n = len(d)
    if n < 2:
        return math.nan, math.nan
    mean, half = float(d.mean()), t_quantile_975(n - 1) * float(np.std(d, ddof=1)) / math.sqrt(n)
    return mean - half, mean + half


# ----------------------------------------------------------------------------------------------- statistics
def hardware_summary(hw: dict) -> dict:
    """cpu, torch_threads, torch, gpu, load_avg_1_5_15min of a results.json "hardware" entry: today's
    ``runtime.hardware_info`` keys, or those of files recorded before it (processor, cpu_threads, cuda)."""
    return {"cpu": hw.get("cpu", hw.get("processor")),
            "torch_threads": hw.get("torch_threads", hw.get("cpu_threads")),
            "torch": hw.get("torch"), "gpu": hw.get("gpu", hw.get("cuda")),
            "load_avg_1_5_15min": hw.get("load_avg_1_5_15min")}


def _finite(xs) -> list[float]:
    return [x for x in xs if x is not None and isinstance(x, (int, float)) and math.isfinite(x)]


def summarize(runs: list[dict], rows: list[str], seeds) -> dict:
    """{row: {metric: {"mean", "std_seeds", "n"}}}: mean over runs; std (ddof 1) of the per-seed means."""
    out = {}
    for row in rows:
        rr = [r for r in runs if r["row"] == row]
        keys = sorted({k for r in rr for k in r["metrics"]})
        out[row] = {}
        for k in keys:
            vals = _finite(r["metrics"].get(k) for r in rr)
            per_seed = [np.mean(v) for s in seeds
                        if (v := _finite(r["metrics"].get(k) for r in rr if r["seed"] == s))]
            out[row][k] = {"mean": float(np.mean(vals)) if vals else math.nan,
                           "std_seeds": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else math.nan,
                           "n": len(vals)}
    return out


def paired_differences(runs: list[dict], rows: list[str], reference: str = "baseline") -> dict:
    """{row: {metric: {"mean_diff", "ci_low", "ci_high", "n"}}} of row − reference over matching
    (sequence, seed) units (Student-t 95 % interval); empty when there is no reference row."""
    ref = {(r["sequence"], r["seed"]): r["metrics"] for r in runs if r["row"] == reference}
    if not ref:
        return {}
    out = {}
    for row in rows:
        if row == reference:
            continue
        out[row] = {}
        for key, *_ in KEY_METRICS:
            d = []
            for r in runs:
                unit = (r["sequence"], r["seed"])
                if r["row"] != row or unit not in ref:
                    continue
                a, b = r["metrics"].get(key), ref[unit].get(key)
                if len(_finite([a, b])) == 2:
                    d.append(a - b)
            lo, hi = paired_interval(d)
            out[row][key] = {"mean_diff": float(np.mean(d)) if d else math.nan, "ci_low": lo, "ci_high": hi,
                             "n": len(d)}
    return out


def _fmt(x, unit: str) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.3f}" if unit in ("m", "") else f"{x:.2f}"


def markdown_table(doc: dict) -> str:
    """The ablation as Markdown: mean ± std across seeds per row, then paired differences to baseline."""
    summ, rows = doc["summary"], doc["rows"]
    cfg = doc["config"]
    head = "| row | " + " | ".join(f"{lab}{f' ({u})' if u else ''}" for _, lab, u, _ in KEY_METRICS) + " |"
    acfg = doc.get("adapt_config") or cfg
    lines = [f"Ablation on {len(doc['sequences'])} '{cfg['domain']}' sequence(s) of {cfg['benchmark']} x seeds "
             f"{cfg['seeds']}, {acfg.get('steps')} adaptation steps (lr {acfg.get('lr')}, "
             f"{acfg.get('pairs_per_step') or 'all'} pairs/step), tracker '{cfg['tracker']}', model: {doc['model']}.",
             "Mean over (sequence, seed) runs ± std across seeds (of per-seed means). APD: median scale, "
             "δ ∈ {0.1, 0.3, 0.5, 1.0} m.", "", head, "|" + "---|" * (len(KEY_METRICS) + 1)]
    for row in rows:
        cells = []
        for key, _, unit, _ in KEY_METRICS:
            m = summ.get(row, {}).get(key)
            if m is None or m["mean"] is None:
                cells.append("–")
            else:
                sd = m.get("std_seeds")
                cells.append(_fmt(m["mean"], unit) + ("" if sd is None or not math.isfinite(sd)
                                                      else f" ± {_fmt(sd, unit)}"))
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    if doc.get("paired"):
        lines += ["", f"Paired difference to `baseline` (row − baseline), mean [95% CI], {doc['ci_method']}:", "",
                  head, "|" + "---|" * (len(KEY_METRICS) + 1)]
        for row, per in doc["paired"].items():
            cells = []
            for key, _, unit, _ in KEY_METRICS:
                d = per.get(key)
                if not d or d["mean_diff"] is None:
                    cells.append("–")
                    continue
                ci = ("" if d["ci_low"] is None else f" [{_fmt(d['ci_low'], unit)}, {_fmt(d['ci_high'], unit)}]")
                cells.append(f"{_fmt(d['mean_diff'], unit)}{ci}")
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
    hw = hardware_summary(doc["hardware"])
    lines += ["", f"Command: `{doc['command']}`; wall time {doc['wall_time_s']} s; hardware: "
              f"{hw['cpu']}, {hw['torch_threads']} thread(s), torch {hw['torch']}"
              + (f", {hw['gpu']}" if hw["gpu"] else "")
              + (f"; load average {hw['load_avg_1_5_15min']} (shared machine: wall time varies)"
                 if hw["load_avg_1_5_15min"] else "")]
    lines += [f"Note: {n}" for n in cfg.get("notes", [])]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- checking
@dataclass
class CheckResult:
    """Outcome of :func:`check_against_reference`: ok, and one line per compared number that is off."""

    ok: bool
    compared: int
    mismatches: list[str]
    notes: list[str]

    def report(self) -> str:
        head = (f"MATCH: {self.compared} numbers agree with the reference within tolerance" if self.ok else
                f"MISMATCH: {len(self.mismatches)} of {self.compared} numbers differ from the reference")
        return "\n".join([head] + self.mismatches[:30] + [f"note: {n}" for n in self.notes])


def load_results(path) -> dict:
    """Read a results.json (or the results.json inside a folder), checked against ``results_schema``."""
    path = Path(path)
    path = path / "results.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no ablation results at {str(path)!r}; run `st4r-lite ablation --out DIR` first")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path} is not a JSON file ({err}); expected the results.json of `st4r-lite ablation`") from None
    return validate_results(doc, str(path))


# Adaptation settings added after references were recorded, with the value that reproduces those runs: a
# results.json without one ran without it (read so by --check, the report and ablation --check's re-run).
BEFORE_SETTING_EXISTED = {"reanchor": False}


def check_against_reference(results, reference, atol_percent: float = 1.0, atol_metres: float = 0.01,
                            rtol: float = 0.02) -> CheckResult:
    """Do the per-row means of ``results`` match ``reference`` (dicts or paths) within tolerance?

    A number matches when |new − ref| ≤ atol + rtol·|ref| with atol = ``atol_percent`` for % metrics and
    ``atol_metres`` for metres / ratios. Differing configs (seeds, variants, steps, ...) are reported as notes
    and fail the check, because the numbers are then not comparable.
    """
    new = results if isinstance(results, dict) else load_results(results)
    ref = reference if isinstance(reference, dict) else load_results(reference)
    notes, mism, compared = [], [], 0
    for k in ("benchmark", "domain", "max_seqs", "frames", "seeds", "tracker", "depth", "steps", "lr",
              "pairs_per_step", "query_stride"):
        if new["config"].get(k) != ref["config"].get(k):
            notes.append(f"config differs: {k} = {new['config'].get(k)!r} here, {ref['config'].get(k)!r} in the "
                         "reference")
    na, ra = new.get("adapt_config") or {}, ref.get("adapt_config") or {}
    na, ra = ({**BEFORE_SETTING_EXISTED, **d} if d else d for d in (na, ra))   # older than a setting: ran without it
    if ra.get("reanchor") is False and na.get("reanchor") is False:
        na, ra = ({k: v for k, v in d.items() if k != "reanchor_tau"} for d in (na, ra))   # unused when off
    for k in sorted(set(na) | set(ra)):
        if k not in ("variant", "seed") and na.get(k) != ra.get(k):
            notes.append(f"config differs: adaptation setting {k} = {na.get(k)!r} here, {ra.get(k)!r} in the "
                         "reference (adapt.AdaptConfig defaults changed?)")
    if new.get("model") != ref.get("model"):
        same_file = "sha256" in str(new.get("model")) and str(new.get("model")).split("sha256")[-1] == str(
            ref.get("model")).split("sha256")[-1]
        prefix = "" if same_file else "config differs: "
        notes.append(f"{prefix}model differs: {new.get('model')!r} here, {ref.get('model')!r} in the reference")
    for row in ref["rows"]:
        if row not in new["summary"]:
            mism.append(f"row {row!r} is missing")
            continue
        for key, label, unit, _ in KEY_METRICS:
            r = ref["summary"][row].get(key, {}).get("mean")
            v = new["summary"][row].get(key, {}).get("mean")
            if r is None and v is None:
                continue
            compared += 1
            atol = atol_percent if unit == "%" else atol_metres
            if r is None or v is None or abs(v - r) > atol + rtol * abs(r):
                mism.append(f"{row} {label}: {v} here vs {r} in the reference (tolerance {atol + rtol * abs(r or 0):.3g})")
    ok = not mism and not [n for n in notes if n.startswith("config differs")]
    return CheckResult(ok=ok, compared=compared, mismatches=mism, notes=notes)
