"""Correspondence supervision: the true correspondent tokens, the attention recorder and L_match."""

import torch

from st4r_lite.model.config import PRESETS
from st4r_lite.model.network import build_model
from st4r_lite.train.correspondence import AttentionRecorder, match_loss, patch_correspondence
from st4r_lite.world.render import generate_clips


def _clip(frames=3, seed=5):
    return generate_clips(1, frames=frames, height=64, width=96, domain="pretrain", seed=seed)


def test_frame_zero_corresponds_to_itself_and_targets_are_tokens():
    clip = _clip()
    target, valid, same = patch_correspondence(clip, 8)
    assert target.shape == valid.shape == same.shape == (1, 3, 8 * 12)
    assert valid[0, 0].all() and same[0, 0].all()                 # every anchor token is itself in frame 0
    assert int(target.min()) >= 0 and int(target.max()) < 96
    assert not valid[0, 1:].all() or not same[0, 1:].all()         # the camera moves: something changes


def test_match_loss_trains_the_attention_towards_the_true_token():
    torch.manual_seed(0)
    model = build_model(PRESETS["tiny"])
    clip = _clip(frames=2)
    target, valid, _ = (x.flatten(0, 1) for x in patch_correspondence(clip, 8))
    img = clip.rgb[0] * 2 - 1
    recorder = AttentionRecorder(model.dec_blocks)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        model(img[:1].expand(2, -1, -1, -1), img)                    # pairs (0, 0) and (0, 1)
        calls = recorder.take()
        assert len(calls) == len(model.dec_blocks)
        loss = match_loss(calls, target, valid)
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.dec_blocks.parameters() if p.grad is not None)
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    with torch.no_grad():                                            # held-out checks are not recorded
        model(img[:1], img[:1])
    assert recorder.take() == []
    recorder.close()
    model(img[:1], img[:1])
    assert recorder.take() == []
    probe = AttentionRecorder(model.dec_blocks, grad_only=False)      # a probe under no_grad records every call
    with torch.no_grad():
        model(img[:1], img[:1])
    assert len(probe.take()) == len(model.dec_blocks)
    probe.close()
    assert float(match_loss([], target, valid)) == 0.0


def test_pretrain_logs_the_match_term(tmp_path):
    import json

    from st4r_lite.train.loop import TrainConfig, pretrain

    cfg = TrainConfig(preset="tiny", steps=2, batch=1, frames=2, match_weight=0.05)
    pretrain(cfg, tmp_path / "run.pt", log_path=tmp_path / "log.jsonl", log_every=1, progress=False,
             final_eval=False)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all("match" in r and r["match"] > 0 for r in rows if "total" in r)


def test_doctests_pass():
    import doctest

    from st4r_lite.train import correspondence

    assert doctest.testmod(correspondence).failed == 0
