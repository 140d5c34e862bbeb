"""The GPU check of `small` (tools/gpu_small.sh, data/gpu_small): the script parses, its records say what made
them, and the README's numbers are the records' (no GPU needed: the records were made on one)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "data" / "gpu_small"
SCRIPT = ROOT / "tools" / "gpu_small.sh"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_records_say_how_they_were_made():
    bench = json.loads((RECORDS / "bench_gpu.json").read_text())
    assert bench["command"].startswith("st4r-lite bench --preset tiny small --device cuda")
    assert "H200" in bench["hardware"]["gpu"]
    small = next(r for r in bench["results"] if r["preset"] == "small")
    assert 0 < small["train_mfu"] < 1 and small["render_clips_per_s"] > 0
    # the MFU is the FLOP count times the rate over the datasheet peak
    assert small["train_mfu"] == pytest.approx(
        small["train_flops_per_pair"] * small["train_pairs_per_s"] / small["peak_bf16_flops"])
    card = json.loads((RECORDS / "small_scorecard.json").read_text())
    assert card["settings"]["image_hw"] == [128, 192] and card["settings"]["num_clips"] == 16
    stages = card["training"]["stages"]
    assert [s["steps"] for s in stages] == [580, 640]
    assert card["training"]["total_pairs_seen"] == (580 + 640) * 64
    # the script's stage flags are the ones the records ran with
    text = SCRIPT.read_text()
    for flag in ("--lr 3e-4", "--max-frame-gap 2 ", "--lr 2e-4", "--max-frame-gap 3", "--motion-weight 3"):
        assert flag in text, flag
    assert "--lr 3e-4" in stages[0]["command"] and "--lr 2e-4 --warmup 50 --max-frame-gap 3" in stages[1]["command"]


def test_readme_quotes_the_records():
    readme = (ROOT / "README.md").read_text()
    card = json.loads((RECORDS / "small_scorecard.json").read_text())["methods"]
    bench = next(r for r in json.loads((RECORDS / "bench_gpu.json").read_text())["results"] if r["preset"] == "small")
    row = re.search(r"\| tracking APD, all points \| ([\d.]+) \| \*\*([\d.]+)\*\* \|", readme)
    assert row and float(row.group(2)) == round(card["model"]["apd"], 1)
    assert "moving 41.2 (static 42.0)" in readme
    assert round(card["model"]["apd_dynamic"], 1) == 41.2 and round(card["static"]["apd_dynamic"], 1) == 42.0
    assert f"{100 * bench['train_mfu']:.1f} %" in readme
    assert f"{bench['train_pairs_per_s']:.0f} pairs/s" in readme


def test_readme_end_to_end_mfu_follows_from_the_records():
    readme = (ROOT / "README.md").read_text()
    training = json.loads((RECORDS / "small_scorecard.json").read_text())["training"]
    rate = training["total_pairs_seen"] / training["total_wall_s"]
    flops = json.loads((RECORDS / "flops_cpu.json").read_text())["results"][0]
    peak = next(r for r in json.loads((RECORDS / "bench_gpu.json").read_text())["results"])["peak_bf16_flops"]
    mfu = flops["pretrain_flops_per_pair"] * rate / peak
    assert f"{rate:.0f} pairs/s end to end" in readme
    assert f"MFU about {100 * mfu:.1f} %" in readme
    # the CPU count agrees with the GPU's where both counted the same step (inference)
    gpu = next(r for r in json.loads((RECORDS / "bench_gpu.json").read_text())["results"] if r["preset"] == "small")
    assert flops["infer_flops_per_pair"] == gpu["infer_flops_per_pair"]
