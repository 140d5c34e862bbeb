"""Pretraining loop: overfitting, exact resume, schedule, parameter groups, curriculum, logs, checkpoints, export.

Everything runs the tiny preset on CPU with a handful of steps (batch 1 clip of 2 frames = 2 pairs a step).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from st4r_lite.errors import InputError
from st4r_lite.model.network import build_model
from st4r_lite.model.pairs import PairRunner
from st4r_lite.train import loop
from st4r_lite.train.loop import TrainConfig, clip_pairs, export_weights, pretrain
from st4r_lite.train.losses import PretrainLoss
from st4r_lite.train.schedule import (
    WarmupCosine,
    frame_gap_at,
    make_optimizer,
    max_frame_gap_at,
    param_groups,
)
from st4r_lite.world.render import generate_clips

SMALL = dict(preset="tiny", batch=1, frames=2, warmup=2, lr=3e-4)


def _state_equal(a: dict, b: dict) -> bool:
    """Bit-for-bit equality of nested state dicts (tensors, numbers, lists)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_state_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_overfit_one_clip():
    """A fixed clip is fitted: the loss drops well below its start and the track error shrinks."""
    torch.manual_seed(0)
    model = loop.trainable_model(build_model("tiny"))
    clip = generate_clips(1, frames=2, height=64, width=96, seed=123)
    frames, targets = clip_pairs(clip)
    runner, loss_fn = PairRunner(model), PretrainLoss()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, betas=(0.9, 0.95))
    totals, errs = [], []
    for _ in range(25):
        terms = loss_fn(runner(frames), targets)
        opt.zero_grad()
        terms.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.8)
        opt.step()
        totals.append(float(terms.total.detach()))
        errs.append(float(terms.track_err))
    assert totals[-1] < totals[0] - 1.0, totals
    assert min(errs[-5:]) < 0.5 * errs[0], errs


def test_pair_batch_matches_plain_forward():
    """Encoding the anchor once per clip gives the same outputs as the plain pair forward."""
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    clip = generate_clips(2, frames=2, height=64, width=96, seed=5)
    frames, _ = clip_pairs(clip)
    with torch.no_grad():
        fast = PairRunner(model)(frames)
        plain = model(frames[:, 0].repeat_interleave(2, 0), frames.flatten(0, 1))
    torch.testing.assert_close(fast.track, plain.track, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fast.conf_recon, plain.conf_recon, atol=1e-5, rtol=1e-4)


def test_resume_is_bit_exact(tmp_path):
    """N steps == N/2 steps + resume + N/2 steps: same weights, optimiser and scheduler state, bit for bit."""
    cfg = TrainConfig(steps=4, **SMALL)
    full = pretrain(cfg, tmp_path / "full.pt", progress=False, final_eval=False)
    half = pretrain(cfg, tmp_path / "half.pt", stop_at=2, progress=False, final_eval=False)
    assert half["step"] == 2
    resumed = pretrain(cfg, tmp_path / "half.pt", resume=True, progress=False, final_eval=False)
    assert resumed["step"] == 4
    a = loop.load_train_checkpoint(tmp_path / "full.pt")
    b = loop.load_train_checkpoint(tmp_path / "half.pt")
    assert _state_equal(a["model"], b["model"])
    assert _state_equal(a["optimizer"], b["optimizer"])
    assert _state_equal(a["scheduler"], b["scheduler"])
    assert a["state"]["clip_counter"] == b["state"]["clip_counter"] == 4
    assert full["weights_digest"] == resumed["weights_digest"]
    # and training did change the weights (the comparison above is not between two untouched models)
    torch.manual_seed(cfg.seed)
    init = loop.weights_digest(build_model("tiny"))
    assert init != full["weights_digest"]


def test_dynamic_factor_is_a_setting_and_old_configs_keep_the_default(tmp_path):
    saved = {k: v for k, v in asdict(TrainConfig(steps=1, **SMALL)).items() if k != "dynamic_factor"}
    assert TrainConfig.from_dict(saved).dynamic_factor == 5.0  # checkpoints written before the setting existed
    runs = {}
    for factor in (5.0, 0.0):
        cfg = TrainConfig(steps=1, dynamic_factor=factor, **SMALL)
        runs[factor] = pretrain(cfg, tmp_path / f"f{factor}.pt", progress=False, final_eval=False)
    assert runs[5.0]["weights_digest"] != runs[0.0]["weights_digest"]  # the reweighting changes the update


def test_motion_weight_changes_the_update_and_is_logged(tmp_path):
    """pretrain --motion-weight: L_motion joins the loss (a different update) and its value is logged."""
    runs = {}
    for w in (0.0, 3.0):
        cfg = TrainConfig(steps=1, dynamic_factor=0.0, motion_weight=w, **SMALL)
        runs[w] = pretrain(cfg, tmp_path / f"m{w}.pt", log_path=tmp_path / f"m{w}.jsonl", log_every=1,
                           progress=False, final_eval=False)
    assert runs[0.0]["weights_digest"] != runs[3.0]["weights_digest"]
    first = json.loads((tmp_path / "m3.0.jsonl").read_text().splitlines()[0])
    assert math.isfinite(first["motion"]) and first["motion"] > 0
    assert "motion" not in json.loads((tmp_path / "m0.0.jsonl").read_text().splitlines()[0])
    with pytest.raises(InputError, match="motion_weight"):
        TrainConfig(motion_weight=-1.0)


def test_training_record_follows_the_init_chain(tmp_path):
    """A fine-tune's record lists its stages (earliest first) and the totals; a model file ends the chain."""
    from st4r_lite.train.heldout import training_record

    pretrain(TrainConfig(steps=2, **SMALL), tmp_path / "a.pt", progress=False, final_eval=False)
    pretrain(TrainConfig(steps=1, init=str(tmp_path / "a.pt"), **SMALL), tmp_path / "b.pt", progress=False,
             final_eval=False)
    rec = training_record(tmp_path / "b.pt")
    assert [st["steps"] for st in rec["stages"]] == [2, 1]
    assert rec["total_pairs_seen"] == rec["stages"][0]["pairs_seen"] + rec["pairs_seen"]
    assert rec["total_wall_s"] >= rec["wall_s"]
    assert "stages" not in training_record(tmp_path / "a.pt")
    export_weights(tmp_path / "a.pt", tmp_path / "w.pt")
    pretrain(TrainConfig(steps=1, init=str(tmp_path / "w.pt"), **SMALL), tmp_path / "c.pt", progress=False,
             final_eval=False)
    assert "stages" not in training_record(tmp_path / "c.pt")


def test_init_starts_from_given_weights(tmp_path):
    """--init: the fine-tuning run starts from the named weights (training checkpoint or exported model file)."""
    first = pretrain(TrainConfig(steps=2, **SMALL), tmp_path / "a.pt", progress=False, final_eval=False)
    trained = loop.load_train_checkpoint(tmp_path / "a.pt")["model"]
    model = loop.trainable_model(build_model("tiny"))
    assert _state_equal(loop.initial_weights(str(tmp_path / "a.pt"), model), trained)
    export_weights(tmp_path / "a.pt", tmp_path / "w.pt")        # float16 model file: the same weights, rounded
    from_file = loop.initial_weights(str(tmp_path / "w.pt"), model)
    assert all(torch.allclose(from_file[k], trained[k].float(), atol=2e-3, rtol=1e-2) for k in trained)
    still = {**SMALL, "lr": 1e-12}                              # a step that barely moves the weights
    tuned = pretrain(TrainConfig(steps=1, init=str(tmp_path / "a.pt"), **still), tmp_path / "b.pt", progress=False,
                     final_eval=False)
    fresh = pretrain(TrainConfig(steps=1, **still), tmp_path / "c.pt", progress=False, final_eval=False)
    assert len({first["weights_digest"], tuned["weights_digest"], fresh["weights_digest"]}) == 3
    b = loop.load_train_checkpoint(tmp_path / "b.pt")["model"]
    c = loop.load_train_checkpoint(tmp_path / "c.pt")["model"]
    dist = lambda x: sum(float((x[k].float() - trained[k].float()).norm()) for k in trained)  # noqa: E731
    assert dist(b) < 1e-6 < dist(c)                             # the fine-tuning run started from a.pt
    with pytest.raises(ValueError, match="same --preset"):
        loop.initial_weights("fresh:small", model)


def test_resume_errors(tmp_path):
    cfg = TrainConfig(steps=2, **SMALL)
    with pytest.raises(FileNotFoundError, match="drop --resume"):
        pretrain(cfg, tmp_path / "missing.pt", resume=True, progress=False, final_eval=False)
    pretrain(cfg, tmp_path / "a.pt", stop_at=1, progress=False, final_eval=False)
    other = TrainConfig(steps=2, **{**SMALL, "lr": 1e-4})
    with pytest.raises(ValueError, match="different settings"):
        pretrain(other, tmp_path / "a.pt", resume=True, progress=False, final_eval=False)
    # a weights-only file is not a training checkpoint
    export_weights(tmp_path / "a.pt", tmp_path / "w.pt")
    with pytest.raises(ValueError, match="not a st4r_lite training checkpoint"):
        loop.load_train_checkpoint(tmp_path / "w.pt")


@pytest.mark.parametrize("bad", [dict(frames=1), dict(steps=0), dict(batch=0), dict(lr=0.0), dict(lr=-1e-3),
                                 dict(warmup=-1), dict(grad_clip=0.0), dict(dynamic_factor=-1.0)])
def test_bad_config_raises(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_cli_bad_config_is_a_user_error(tmp_path, capsys):
    from st4r_lite.cli import main

    rc = main(["pretrain", "--steps", "2", "--frames", "1", "--out", str(tmp_path / "x.pt"), "--no-progress"])
    assert rc == 2
    assert "frames must be" in capsys.readouterr().err
    rc = main(["export", str(tmp_path / "missing.pt"), str(tmp_path / "y.pt")])
    assert rc == 2


def test_warmup_cosine_values():
    f = WarmupCosine(total_steps=110, warmup_steps=10, min_ratio=0.05)
    assert f(0) == pytest.approx(0.1)
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.05 + 0.95 * 0.5)           # half-way down the cosine
    assert f(110) == pytest.approx(0.05)
    assert f(500) == pytest.approx(0.05)                        # stays at the floor
    ramp = [f(s) for s in range(10)]
    assert all(b > a for a, b in zip(ramp, ramp[1:]))
    decay = [f(s) for s in range(10, 111)]
    assert all(b <= a + 1e-12 for a, b in zip(decay, decay[1:]))
    # the LambdaLR built by make_optimizer follows it
    model = torch.nn.Linear(3, 3)
    opt, sched = make_optimizer(model, lr=1e-3, total_steps=110, warmup_steps=10, min_ratio=0.05)
    lrs = []
    for _ in range(61):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert lrs[60] == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5))
    with pytest.raises(ValueError):
        WarmupCosine(total_steps=5, warmup_steps=6)


def test_param_groups_no_decay_on_norms_and_biases():
    model = loop.trainable_model(build_model("tiny"))
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert no_decay_names and decay_names and not (no_decay_names & decay_names)
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert n not in decay_names | no_decay_names
        elif n.endswith(".bias") or "norm" in n:
            assert n in no_decay_names, n
        elif p.ndim >= 2:
            assert n in decay_names, n
    assert len(decay_names) + len(no_decay_names) == sum(p.requires_grad for p in model.parameters())
    assert "mask_token" not in decay_names | no_decay_names      # frozen: never reached by the loss
    with pytest.raises(ValueError):
        param_groups(model, -0.1)


def test_frame_gap_curriculum():
    total, max_gap = 100, 3.0
    assert max_frame_gap_at(0, total, max_gap) == pytest.approx(1.0)
    assert max_frame_gap_at(25, total, max_gap) == pytest.approx(2.0)
    assert max_frame_gap_at(50, total, max_gap) == pytest.approx(3.0)
    assert max_frame_gap_at(99, total, max_gap) == pytest.approx(3.0)
    gaps = [frame_gap_at(s, total, max_gap, seed=0) for s in range(total)]
    assert all(1.0 <= g <= max_frame_gap_at(s, total, max_gap) + 1e-9 for s, g in enumerate(gaps))
    assert max(gaps[50:]) > 2.0                                  # long gaps do appear late
    assert gaps == [frame_gap_at(s, total, max_gap, seed=0) for s in range(total)]   # stateless, reproducible
    assert frame_gap_at(60, total, max_gap, seed=0, rank=1) != gaps[60]
    with pytest.raises(ValueError):
        max_frame_gap_at(0, total, 0.5)


def test_log_and_periodic_eval(tmp_path):
    """The metrics log gets a record every log_every steps and a held-out evaluation every eval_every."""
    cfg = TrainConfig(steps=4, **SMALL)
    log = tmp_path / "log.jsonl"
    res = pretrain(cfg, tmp_path / "c.pt", log_path=log, log_every=1, eval_every=2, progress=False,
                   eval_clips=1)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    steps = [r["step"] for r in records if "eval" not in r]
    evals = [r for r in records if "eval" in r]
    assert steps == [1, 2, 3, 4]
    assert [r["step"] for r in evals] == [2, 4]
    first = records[0]
    for key in ("lr", "total", "track", "recon", "track_err", "grad_norm", "frame_gap", "pairs_per_s"):
        assert key in first and math.isfinite(first[key]), key
    ev = evals[-1]["eval"]
    for group in ("track", "static"):
        for al in ("median", "sim3"):
            assert 0 <= ev[group][al]["apd"] <= 100
    assert 0 <= ev["recon"]["median"]["apd"] <= 100
    assert res["eval"] == ev


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    """A crash while saving keeps the previous checkpoint intact and leaves no temporary file."""
    cfg = TrainConfig(steps=2, **SMALL)
    out = tmp_path / "c.pt"
    pretrain(cfg, out, stop_at=1, progress=False, final_eval=False)
    before = out.read_bytes()

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(loop.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        pretrain(cfg, out, resume=True, progress=False, final_eval=False)
    monkeypatch.undo()
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]
    assert loop.load_train_checkpoint(out)["state"]["step"] == 1


def test_export_roundtrip(tmp_path):
    from st4r_lite.model.checkpoint import load_model

    cfg = TrainConfig(steps=1, **SMALL)
    pretrain(cfg, tmp_path / "c.pt", progress=False, final_eval=False)
    path = export_weights(tmp_path / "c.pt", tmp_path / "w.pt")
    assert path.stat().st_size < (tmp_path / "c.pt").stat().st_size / 4   # float16, no optimiser state
    model = load_model(path)
    blob = loop.load_train_checkpoint(tmp_path / "c.pt")
    for name, t in model.state_dict().items():
        ref = blob["model"][name]
        if ref.is_floating_point():
            torch.testing.assert_close(t.float(), ref.half().float(), atol=0, rtol=0)
    clip = generate_clips(1, frames=2, height=64, width=96, seed=9)
    frames, _ = clip_pairs(clip)
    with torch.no_grad():
        out = PairRunner(model.float().eval())(frames)
    assert torch.isfinite(out.track).all() and torch.isfinite(out.conf_track).all()
    assert (out.conf_track > 1).all()
    # the held-out report of the exported file (what data/tiny_eval.json holds), by its command line
    from st4r_lite.cli import main
    from st4r_lite.train import heldout

    assert main(["heldout", str(path), "--json", str(tmp_path / "e.json"), "--num-clips", "1",
                 "--train-ckpt", str(tmp_path / "c.pt")]) == 0
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["heldout"]["num_clips"] == 1 and report["training"]["steps"] == 1
    assert report["training"]["pairs_seen"] == 2 and report["training"]["wall_s"] >= 0
    for al in ("median", "sim3"):
        h = report["headline"][al]
        assert {"apd", "apd_dyn", "static_apd", "static_apd_dyn", "epe", "recon_apd"} <= set(h)
        assert h["apd"] == report["result"]["track"][al]["apd"]
    bar = report["quality_bar"]
    assert bar["gap_points"] == round(report["headline"]["median"]["apd_dyn"]
                                      - report["headline"]["median"]["static_apd_dyn"], 2)
    assert bar["met"] == (bar["gap_points"] >= heldout.QUALITY_MARGIN)


def test_shipped_tiny_checkpoint_runs():
    """data/tiny.pt (when shipped) loads, runs on held-out clips, and its report file matches its format."""
    from st4r_lite.model.checkpoint import load_model
    from st4r_lite.runtime import repo_data_dir
    from st4r_lite.train import heldout

    path = Path(repo_data_dir()) / "tiny.pt"
    if not path.is_file():
        pytest.skip(f"{path} not shipped yet")
    model = load_model(path).float()
    clips = heldout.heldout_clips(model.config, num_clips=2)
    res = heldout.evaluate_clips(model, clips)
    head = heldout.headline(res)
    assert all(0 <= head[k] <= 100 for k in ("apd", "apd_dyn", "static_apd", "static_apd_dyn", "recon_apd")), head
    assert head["apd"] != head["static_apd"]           # the track branch is not just the anchor reconstruction
    report = path.with_name("tiny_eval.json")
    if report.is_file():
        rep = json.loads(report.read_text())
        assert rep["training"]["steps"] >= 1 and "command" in rep["training"] and "hardware" in rep["training"]
        assert {"median", "sim3"} <= set(rep["headline"])


def test_heldout_baselines_on_ground_truth():
    """With the true anchor points: the static baseline loses exactly on moving tracks, the oracle-motion
    diagnostic is perfect, and a perfect track prediction scores 100."""
    from einops import rearrange

    from st4r_lite.geometry import track_metrics
    from st4r_lite.train import heldout

    clip = generate_clips(1, frames=4, height=32, width=48, seed=11)
    gt = rearrange(clip.track_world[0], "t h w c -> t (h w) c")
    if not track_metrics.dynamic_tracks(gt).any():
        pytest.skip("this clip has no moving object")
    static = track_metrics.static_tracks(0.5 * gt[0], gt.shape[0])       # right shape, wrong scale: alignment fixes it
    oracle = heldout.oracle_motion_tracks(0.5 * gt[0], gt)
    torch.testing.assert_close(oracle, 0.5 * gt.double())
    res = heldout.evaluate_predictions([0.5 * gt], [static], [gt])
    head = heldout.headline(res)
    assert head["apd"] == pytest.approx(100.0) and head["oracle_motion_apd_dyn"] == pytest.approx(100.0)
    assert head["static_apd_dyn"] < 100.0 - 1.0                      # nothing moves: wrong where things move
    st = res["static"]["median"]
    assert st["apd"] > st["apd_dynamic"]                              # static tracks are right off the objects


def test_cli_stop_at_stops_inside_the_schedule(tmp_path):
    """`pretrain --steps 3 --stop-at 1` writes a step-1 checkpoint whose schedule still spans 3 steps."""
    from st4r_lite import cli
    from st4r_lite.train.checkpoint import load_train_checkpoint

    out = tmp_path / "run.pt"
    rc = cli.main(["pretrain", "--preset", "tiny", "--steps", "3", "--stop-at", "1", "--batch", "1", "--frames",
                   "2", "--out", str(out), "--no-progress", "--device", "cpu"])
    assert rc == 0
    blob = load_train_checkpoint(out)
    assert blob["state"]["step"] == 1 and blob["train_config"]["steps"] == 3


def test_world_shift_trains_on_the_candidate_world_and_resumes_exactly(tmp_path):
    """pretrain --shift: the clips (and the held-out check) come from the shifted world; the shift is stored in
    the checkpoint, so --resume continues bit for bit, and a resume without it is refused."""
    shift = {"depth_range": (1.2, 2.6), "object_speed": 1.5}
    cfg = TrainConfig(steps=2, world_shift=shift, **SMALL)
    assert cfg.world_shift == {"depth_range": [1.2, 2.6], "object_speed": 1.5}  # lists survive the checkpoint
    assert cfg.shift() == shift and TrainConfig(**SMALL).shift() is None
    full = pretrain(cfg, tmp_path / "full.pt", progress=False, final_eval=False)
    pretrain(cfg, tmp_path / "half.pt", stop_at=1, progress=False, final_eval=False)
    resumed = pretrain(cfg, tmp_path / "half.pt", resume=True, progress=False, final_eval=False)
    assert resumed["weights_digest"] == full["weights_digest"]
    plain = pretrain(TrainConfig(steps=2, **SMALL), tmp_path / "plain.pt", progress=False, final_eval=False)
    assert plain["weights_digest"] != full["weights_digest"]  # other clips, another update
    with pytest.raises(ValueError, match="different settings"):
        pretrain(TrainConfig(steps=2, **SMALL), tmp_path / "half.pt", resume=True, progress=False, final_eval=False)
    with pytest.raises(InputError, match="unknown domain setting 'bogus'"):
        TrainConfig(world_shift={"bogus": 1.0})


def test_cli_shift_reaches_the_config_and_bad_ones_are_user_errors(tmp_path, capsys):
    from st4r_lite.cli import main

    out = tmp_path / "s.pt"
    rc = main(["pretrain", "--steps", "1", "--batch", "1", "--frames", "2", "--out", str(out), "--no-progress",
               "--shift", "depth_range=1.2:2.6", "--shift", "object_speed=1.5"])
    assert rc == 0
    saved = TrainConfig.from_dict(loop.load_train_checkpoint(out)["train_config"])
    assert saved.world_shift == {"depth_range": [1.2, 2.6], "object_speed": 1.5}
    for bad, word in (("speedy=2", "unknown domain setting"), ("depth_range=2", "is a range"),
                      ("object_speed", "expected KEY=NUMBER")):
        rc = main(["pretrain", "--steps", "1", "--out", str(tmp_path / "b.pt"), "--no-progress", "--shift", bad])
        assert rc == 2
        assert word in capsys.readouterr().err
