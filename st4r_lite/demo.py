"""The main job on the embedded default (``make demo`` / ``st4r-lite demo``): the whole pipeline, offline.

Step by step, printing what it does and what it wrote:
1. generate the named synthetic benchmark ``worldtrack-lite`` (``pretrain`` and ``wild`` sequences) under
   ``OUT/benchmark`` and an interactive view of its first sequence (``OUT/scene.html``);
2. load the shipped checkpoint ``data/tiny.pt`` (if it is missing, say so and use an untrained tiny model, whose
   numbers then mean nothing) and evaluate it on the benchmark's ``pretrain`` part against the static baseline;
3. adapt it to the ``wild`` videos with every adaptation variant (none, baseline, mask, sigma, robust,
   oracle_mask, conf_sigma) with simulated pseudo-labels, next to the static and combinational peers
   (``st4r_lite.studies.ablation``; quick settings: 2 videos, 1 seed), and write the table under ``OUT/ablation``;
4. write the self-contained interactive report ``OUT/report.html`` (``st4r_lite.studies.report``).

Quick settings keep it under ~10 minutes on a 2-core CPU; ``full=True`` (``st4r-lite demo --full``) uses the
whole wild benchmark, 3 seeds and more adaptation steps (a GPU job).
"""

from __future__ import annotations

import time
from pathlib import Path

from st4r_lite.app import sequence_view
from st4r_lite.eval import evaluate
from st4r_lite.eval.baselines import static_prediction
from st4r_lite.model import resolve
from st4r_lite.runtime import check_output_folder, removed_on_failure
from st4r_lite.studies import ablation, ablation_stats, report
from st4r_lite.world import benchmarks


def _step(i: int, n: int, text: str) -> None:
    print(f"[{i}/{n}] {text} ...", flush=True)


def run_demo(out: str | Path, *, seed: int = 0, full: bool = False, checkpoint: str | Path | None = None
             ) -> dict[str, Path]:
    """Run the demo pipeline into ``out``; returns the paths it wrote by name (a failure removes a new ``out``)."""
    out = check_output_folder(out)
    with removed_on_failure(out):
        return _run_demo(out, seed=seed, full=full, checkpoint=checkpoint)


def _run_demo(out: Path, *, seed: int, full: bool, checkpoint: str | Path | None) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    start = time.perf_counter()
    n = 4

    _step(1, n, "generating the synthetic benchmark 'worldtrack-lite'")
    paths = benchmarks.write_named_benchmark("worldtrack-lite", out / "benchmark")
    written["benchmark"] = out / "benchmark"
    written["scene"] = sequence_view.write_sequence_html(out / "scene.html", npz=paths[0])
    print(f"      {len(paths)} sequences in {out / 'benchmark'}; 3D view: {written['scene']}", flush=True)

    _step(2, n, f"evaluating the model {resolve.describe(checkpoint)} on the 'pretrain' sequences")
    model = resolve.load(checkpoint, log=lambda s: print(f"      {s}", flush=True))
    seqs = [s.grid_subset(4) for s in evaluate.load_sequences(out / "benchmark")
            if "pretrain" in s.name]
    results = evaluate.evaluate_model(model, seqs, alignments=("median",))
    print("      " + evaluate.format_summary(results).replace("\n", "\n      "), flush=True)
    static = [evaluate.evaluate_prediction(s, static_prediction(evaluate.predict_model(model, s), s),
                                           ("median",)) for s in seqs]
    st = evaluate.mean_results(static)["tracking"]["median"]
    print(f"      static baseline (nothing moves): APD {st.apd:.2f} %  dynamic APD {st.apd_dynamic:.2f} %", flush=True)

    _step(3, n, "adapting to the 'wild' videos with every variant, next to the peers")
    cfg = ablation.AblationConfig(
        benchmark="worldtrack-lite", domain="wild", max_seqs=None if full else 2,
        seeds=(0, 1, 2) if full else (seed,), steps=30 if full else 10,
        checkpoint=None if checkpoint is None else str(checkpoint))
    doc = ablation.run_ablation(cfg, out / "ablation", progress=lambda s: print("      " + s, flush=True))
    written["ablation"] = out / "ablation"
    print(ablation_stats.markdown_table(doc), flush=True)

    _step(4, n, "writing the interactive report")
    written["report"] = report.build_report(out / "ablation", out / "report.html")
    print(f"      open {written['report']} in a browser (self-contained, works offline)", flush=True)
    print(f"done in {time.perf_counter() - start:.1f} s", flush=True)
    return written
