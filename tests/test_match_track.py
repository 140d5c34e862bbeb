"""The matched-geometry tracking (ModelConfig.match_track): off by default, reads frame k's reconstruction where the
anchor patch is found, never trains branch 2 through the track, loads onto a plain init, and trains with its lookup
supervised (train.correspondence.match_head_loss)."""

import json

import pytest
import roma
import torch

from st4r_lite.errors import InputError
from st4r_lite.model.checkpoint import load_model, save_checkpoint
from st4r_lite.model.config import PRESETS
from st4r_lite.model.match_track import GATE_BIAS, MatchTrack
from st4r_lite.model.network import build_model
from st4r_lite.model.pairs import PairRunner
from st4r_lite.train.correspondence import match_head_loss
from st4r_lite.train.loop import TrainConfig, initial_weights, pretrain

MATCHED = PRESETS["tiny"].with_(match_track=16)


def _images(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, 3, 64, 96, generator=g) * 2 - 1 for _ in range(2)]


def _lists(B=1, N=6, C=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, N, C, generator=g) for _ in range(2)], [torch.randn(B, N, C, generator=g) for _ in range(2)]


def test_off_by_default_so_released_layouts_keep_their_keys():
    keys = build_model("tiny").state_dict()
    assert PRESETS["full"].match_track == 0 and not any(k.startswith("match_track") for k in keys)
    added = set(build_model(MATCHED).state_dict()) - set(keys)
    assert added and {k.split(".")[0] for k in added} == {"match_track"}


def test_an_open_gate_and_a_sure_match_copy_the_found_patch_of_the_reconstruction():
    """Grid 2 x 3 of 2 x 2 patches; every anchor token i is 'found' at token perm[i]: track' = recon moved patch-wise."""
    mt = MatchTrack(8, 8, patch_size=2, width=4)
    torch.nn.init.constant_(mt.gate.bias, 60.0)                  # gate fully open
    perm = torch.tensor([1, 2, 0, 4, 5, 3])
    mt.match_logits = lambda d1, d2, grid: torch.nn.functional.one_hot(perm, 6)[None].float() * 80
    dec1, dec2 = _lists()
    track, recon = torch.randn(1, 4, 6, 3), torch.randn(1, 4, 6, 3)
    out, *_ = mt(dec1, dec2, track, recon)
    for i, j in enumerate(perm.tolist()):
        (ri, ci), (rj, cj) = divmod(i, 3), divmod(j, 3)
        assert torch.allclose(out[0, 2 * ri:2 * ri + 2, 2 * ci:2 * ci + 2], recon[0, 2 * rj:2 * rj + 2, 2 * cj:2 * cj + 2])


def test_the_locality_prior_prefers_near_tokens_and_a_closed_gate_keeps_the_track():
    mt = MatchTrack(8, 8, patch_size=2, width=4)
    torch.nn.init.zeros_(mt.q.weight), torch.nn.init.zeros_(mt.q.bias)   # no appearance: only the prior is left
    dec1, dec2 = _lists()
    logits = mt.match_logits(dec1, dec2, (2, 3))
    assert torch.equal(logits[0].argmax(-1), torch.arange(6))           # each token prefers itself
    assert logits[0, 0, 1] > logits[0, 0, 2]                            # one token away beats two
    torch.nn.init.constant_(mt.gate.bias, -60.0)
    track, recon = torch.randn(1, 4, 6, 3), torch.randn(1, 4, 6, 3)
    assert torch.allclose(mt(dec1, dec2, track, recon)[0], track)


def test_gradients_reach_the_lookup_and_the_gate_but_not_the_reconstruction():
    mt = MatchTrack(8, 8, patch_size=2, width=4).double()
    dec1, dec2 = _lists()
    dec1, dec2 = [t.double() for t in dec1], [t.double() for t in dec2]
    track = torch.randn(1, 4, 6, 3, dtype=torch.float64, requires_grad=True)
    recon = torch.randn(1, 4, 6, 3, dtype=torch.float64, requires_grad=True)
    out, *_ = mt(dec1, dec2, track, recon)
    out.square().sum().backward()
    assert recon.grad is None and track.grad.abs().sum() > 0
    assert mt.q.weight.grad.abs().sum() > 0 and mt.gate.bias.grad.abs().sum() > 0 and mt.locality.grad.abs() > 0
    # float64 gradcheck through the lookup and the gate (inputs: the anchor's tokens and the track)
    f = lambda e1, t: mt([e1, dec1[1]], dec2, t, recon.detach())[0]  # noqa: E731
    e1 = dec1[0].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (e1, track.detach().clone().requires_grad_(True)), eps=1e-6, atol=1e-5)


def test_added_onto_a_plain_init_it_starts_near_the_init_and_runs_through_every_pair_path(tmp_path):
    plain = build_model("tiny", seed=3).eval()
    path = save_checkpoint(tmp_path / "plain.pt", plain)
    matched = build_model(MATCHED, seed=5).eval()
    matched.load_state_dict(initial_weights(str(path), matched))
    a, b = _images()
    with torch.no_grad():
        p, m = plain(a, b), matched(a, b)
    assert torch.equal(p.recon, m.recon) and torch.equal(p.conf_track, m.conf_track)
    # track' − track = g · (matched − track), matched a convex blend of recon points, g = sigmoid(−4) at the start
    bound = torch.sigmoid(torch.tensor(GATE_BIAS)) * (p.track.norm(dim=-1) + p.recon.norm(dim=-1).amax((1, 2))[:, None, None])
    change = (m.track - p.track).norm(dim=-1)
    assert change.max() > 0 and (change <= bound * 1.001 + 1e-6).all()
    video = torch.rand(3, 3, 64, 96) * 2 - 1
    runner = PairRunner(matched, chunk=2)
    with torch.no_grad():
        direct = matched(video[:1].expand(3, -1, -1, -1), video)
        assert torch.allclose(runner(video).track, direct.track, atol=1e-4)
        assert torch.allclose(runner(tokens=runner.encode(video)).track, direct.track, atol=1e-4)
    assert set(map(id, matched.match_track.parameters())) <= set(map(id, matched.branch_parameters("track")))
    saved = save_checkpoint(tmp_path / "matched.pt", matched)
    assert load_model(saved).config.match_track == 16


def test_match_head_loss_weights_moving_tokens_and_ignores_hidden_ones():
    logits = torch.zeros(1, 3, 3)
    logits[0, 0, 0] = logits[0, 1, 1] = 10.0                            # tokens 0 and 1 right, token 2 wrong
    target = torch.tensor([[0, 1, 2]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    none = torch.zeros(1, 3, dtype=torch.bool)
    plain = match_head_loss(logits, target, valid, none)
    moving_wrong = match_head_loss(logits, target, valid, torch.tensor([[False, False, True]]))
    hidden_wrong = match_head_loss(logits, target, torch.tensor([[True, True, False]]), none)
    assert moving_wrong > plain > hidden_wrong >= 0


def test_training_supervises_the_lookup_and_bad_settings_say_what_to_do(tmp_path):
    with pytest.raises(InputError, match="--match-track"):
        TrainConfig(steps=1, match_head_weight=0.1)
    with pytest.raises(InputError, match="match_track"):
        TrainConfig(steps=1, match_track=-1)
    cfg = TrainConfig(steps=2, batch=1, frames=2, match_track=8, match_head_weight=0.1, refine_lr_mult=5.0)
    assert cfg.model_config() == PRESETS["tiny"].with_(match_track=8)
    res = pretrain(cfg, tmp_path / "run.pt", log_path=tmp_path / "log.jsonl", log_every=1, progress=False,
                   final_eval=False)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert res["step"] == 2 and all(r["match_head"] > 0 for r in rows)


def test_oracle_match_reads_the_true_pixel_of_the_reconstruction_and_keeps_the_track_where_hidden():
    from st4r_lite.eval.evaluate import sequence_from_clip
    from st4r_lite.train.heldout import oracle_match_tracks
    from st4r_lite.world.render import generate_clips

    clip = generate_clips(1, frames=4, height=32, width=48, domain="pretrain", seed=5)
    seq = sequence_from_clip(clip, 0, query_stride=4)
    fallback = torch.full_like(seq.gt_tracks, 7.0)
    found = oracle_match_tracks(fallback, seq.gt_points, seq.gt_tracks, seq.gt_visible, seq.K, seq.T_world_cam)
    assert torch.allclose(found[0], seq.gt_tracks[0])                    # frame 0: the query pixel itself
    hidden = ~seq.gt_visible
    assert hidden.any() and (found[hidden] == 7.0).all()                  # hidden: the model's own track
    err = (found - seq.gt_tracks).norm(dim=-1)[seq.gt_visible]
    assert err.median() < 0.05   # visible: the surface at the nearest pixel (half a pixel is ~2.5 cm at 32 x 48)


def test_registration_brings_the_found_geometry_onto_the_track_and_keeps_a_moving_part_as_motion():
    from st4r_lite.model.match_track import register_onto

    g = torch.Generator().manual_seed(1)
    track = torch.randn(2, 200, 3, generator=g, dtype=torch.float64)
    R = roma.random_rotmat(2, dtype=torch.float64)
    found = (track - 0.3) @ R / 1.7                                      # the same points, misplaced by a similarity
    found[:, :20] += 0.5                                                 # a tenth of them moved: not fitted away
    out = register_onto(found, track, torch.ones(2, 200, dtype=torch.float64))
    assert torch.allclose(out[:, 20:], track[:, 20:], atol=1e-6)
    moved = (out[:, :20] - track[:, :20]).norm(dim=-1)
    assert torch.allclose(moved, torch.full_like(moved, 0.5 * 3**0.5 * 1.7), atol=1e-6)  # the motion, track scale
    x = found.clone().requires_grad_(True)
    register_onto(x, track, torch.ones(2, 200, dtype=torch.float64)).sum().backward()
    assert x.grad.abs().sum() > 0                                        # gradients pass through the source


def test_a_registered_model_trains_from_a_plain_init_and_the_setting_is_checked(tmp_path):
    with pytest.raises(InputError, match="--match-track"):
        TrainConfig(steps=1, match_register=True)
    with pytest.raises(InputError, match="match_register"):
        PRESETS["tiny"].with_(match_register=True)
    plain = build_model("tiny", seed=3)
    path = save_checkpoint(tmp_path / "plain.pt", plain)
    cfg = TrainConfig(steps=1, batch=1, frames=2, init=str(path), match_track=8, match_register=True,
                      match_head_weight=0.1)
    assert cfg.model_config() == PRESETS["tiny"].with_(match_track=8, match_register=True)
    res = pretrain(cfg, tmp_path / "run.pt", log_path=tmp_path / "log.jsonl", progress=False, final_eval=False)
    assert res["step"] == 1 and load_model(tmp_path / "run.pt").config.match_register is True


def test_a_registered_lookup_of_a_misplaced_frame_reads_the_track_branchs_placement():
    mt = MatchTrack(8, 8, patch_size=2, width=4, register=True)
    torch.nn.init.constant_(mt.gate.bias, 60.0)
    mt.match_logits = lambda d1, d2, grid: torch.eye(6)[None] * 80          # every patch found in place
    dec1, dec2 = _lists()
    track = torch.randn(1, 4, 6, 3)
    recon = 1.3 * track @ roma.random_rotmat().T + torch.tensor([0.2, -0.1, 0.4])   # the same frame, misplaced
    out, *_ = mt(dec1, dec2, track, recon)
    assert torch.allclose(out, track, atol=1e-4)


def test_the_registered_oracle_undoes_a_misplaced_reconstruction():
    from st4r_lite.eval.evaluate import sequence_from_clip
    from st4r_lite.train.heldout import oracle_match_tracks
    from st4r_lite.world.render import generate_clips

    clip = generate_clips(1, frames=3, height=32, width=48, domain="pretrain", seed=6)
    seq = sequence_from_clip(clip, 0, query_stride=4)
    misplaced = 1.2 * seq.gt_points @ roma.random_rotmat(dtype=torch.float64).T + 0.3   # every frame misplaced
    args = (seq.gt_tracks, seq.gt_visible, seq.K, seq.T_world_cam)
    raw = oracle_match_tracks(seq.gt_tracks, misplaced, *args)
    reg = oracle_match_tracks(seq.gt_tracks, misplaced, *args, register=True)
    err = lambda x: (x - seq.gt_tracks).norm(dim=-1)[seq.gt_visible].median()  # noqa: E731
    assert err(reg) < 0.05 < 0.5 < err(raw)


def test_a_pixel_lookup_finds_each_pixel_where_its_token_went_and_reads_the_reconstruction_there():
    mt = MatchTrack(8, 8, patch_size=2, width=4, pixel=True)
    torch.nn.init.constant_(mt.gate.bias, 60.0)
    perm = torch.tensor([1, 2, 0, 4, 5, 3])
    mt.match_logits = lambda d1, d2, grid: torch.nn.functional.one_hot(perm, 6)[None].float() * 80
    dec1, dec2 = _lists()
    track, recon = torch.randn(1, 4, 6, 3), torch.randn(1, 4, 6, 3)
    out, _, uv, _ = mt(dec1, dec2, track, recon)
    for i, j in enumerate(perm.tolist()):
        (ri, ci), (rj, cj) = divmod(i, 3), divmod(j, 3)
        assert torch.allclose(out[0, 2 * ri:2 * ri + 2, 2 * ci:2 * ci + 2], recon[0, 2 * rj:2 * rj + 2, 2 * cj:2 * cj + 2],
                              atol=1e-5)
        assert torch.allclose(uv[0, 2 * ri, 2 * ci], torch.tensor([2.0 * cj, 2.0 * rj]))   # (column, row) pixels
    # halfway between two tokens: the soft-argmax lands between their centres (sub-token positions)
    mt.match_logits = lambda d1, d2, grid: torch.log(torch.tensor([0.5, 0.5, 1e-9, 1e-9, 1e-9, 1e-9])).expand(1, 6, 6)
    uv = mt(dec1, dec2, track, recon)[2]
    assert torch.allclose(uv[0, 0, 0], torch.tensor([1.0, 0.0]), atol=1e-4)


def test_pixel_lookup_training_supervises_the_looked_up_pixels(tmp_path):
    from st4r_lite.train.correspondence import match_flow_loss

    uv = torch.zeros(1, 2, 2, 2)
    ok = torch.ones(1, 2, 2, dtype=torch.bool)
    assert match_flow_loss(uv + 8, uv, ok, ~ok, patch=8) == pytest.approx(1.0)       # one token off: 0.5 + 0.5
    assert match_flow_loss(uv + 8, uv, ~ok, ~ok, patch=8) == 0                         # hidden pixels do not count
    cfg = TrainConfig(steps=1, batch=1, frames=2, match_track=8, match_pixel=True, match_head_weight=0.1)
    assert cfg.model_config().match_pixel
    res = pretrain(cfg, tmp_path / "run.pt", log_path=tmp_path / "log.jsonl", progress=False, final_eval=False)
    model = load_model(tmp_path / "run.pt")
    assert res["step"] == 1 and model.match_track.offset.weight.abs().sum() > 0      # the offset head learned


def test_the_local_refinement_finds_a_shifted_image_to_the_pixel():
    from st4r_lite.model.match_track import LocalRefine

    torch.manual_seed(0)
    refine = LocalRefine(radius=3, channels=16)   # random features: 16 channels tell this texture apart
    torch.nn.init.constant_(refine.log_tau, 6.0)                                # a sharp softmax
    img = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 34, 50) * 2 - 1, 3, stride=1)   # smooth texture, 32 x 48
    other = torch.roll(img, shifts=(2, 4), dims=(2, 3))                         # frame k: everything moved (4, 2) px
    v, u = torch.meshgrid(torch.arange(32.0), torch.arange(48.0), indexing="ij")
    start = torch.stack([u, v], -1)[None]                                       # the guess: nothing moved
    uv = refine(start, img, other)
    inner = (slice(None), slice(8, 24), slice(8, 40))
    err = (uv - start - torch.tensor([4.0, 2.0]))[inner].norm(dim=-1)
    assert err.median() < 0.5                                                   # found to the pixel


def test_refining_models_need_the_images_on_every_path():
    cfg = PRESETS["tiny"].with_(match_track=8, match_pixel=True, match_refine=2)
    assert cfg.reads_pixels
    with pytest.raises(InputError, match="match_pixel"):
        PRESETS["tiny"].with_(match_track=8, match_refine=2)
    with pytest.raises(InputError, match="--match-pixel"):
        TrainConfig(steps=1, match_track=8, match_refine=2)
    model = build_model(cfg).eval()
    video = torch.rand(3, 3, 64, 96) * 2 - 1
    runner = PairRunner(model, chunk=2)
    with torch.no_grad():
        direct = model(video[:1].expand(3, -1, -1, -1), video)
        assert torch.allclose(runner(video).track, direct.track, atol=1e-4)
        assert torch.allclose(runner(tokens=runner.encode(video)).track, direct.track, atol=1e-4)
        dec = model.forward_debug(video[:1], video[1:2])
        with pytest.raises(ValueError, match="images"):
            model.predict_heads(dec.dec1, dec.dec2, (64, 96))


def test_a_saved_and_loaded_refining_model_computes_the_same_tracks(tmp_path):
    """Regression: the refinement's offsets were a non-persistent buffer, uninitialised after a meta-device load."""
    model = build_model(PRESETS["tiny"].with_(match_track=8, match_pixel=True, match_refine=2), seed=1).eval()
    torch.nn.init.constant_(model.match_track.gate.bias, 2.0)             # let the lookup show in the track
    loaded = load_model(save_checkpoint(tmp_path / "m.pt", model)).eval()
    a, b = _images(1)
    with torch.no_grad():
        assert torch.allclose(model(a, b).track, loaded(a, b).track, atol=1e-5)


def test_the_gate_is_taught_to_open_on_moving_objects_with_both_sides_balanced(tmp_path):
    from st4r_lite.train.correspondence import match_gate_loss

    dyn = torch.zeros(1, 4, 4, dtype=torch.bool)
    dyn[0, 0, 0] = True                                                  # one moving pixel among sixteen
    ok = torch.ones_like(dyn)
    right = torch.where(dyn, 0.9, 0.1)
    shut = torch.full((1, 4, 4), 0.1)
    assert match_gate_loss(right, dyn, ok) < match_gate_loss(shut, dyn, ok)   # the one moving pixel counts half
    assert match_gate_loss(shut, dyn, ok & ~dyn) < match_gate_loss(shut, dyn, ok)   # hidden pixels are left out
    with pytest.raises(InputError, match="--match-head-weight"):
        TrainConfig(steps=1, match_track=8, match_gate_weight=0.1)
    cfg = TrainConfig(steps=1, batch=1, frames=2, match_track=8, match_head_weight=0.1, match_gate_weight=0.1)
    pretrain(cfg, tmp_path / "run.pt", log_path=tmp_path / "log.jsonl", log_every=1, progress=False,
             final_eval=False)
    row = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])
    assert row["match_gate"] > 0 and row["match_head"] > 0


def test_train_only_teaches_the_added_module_and_leaves_the_network_bit_identical(tmp_path):
    from st4r_lite.train.checkpoint import load_train_checkpoint
    from st4r_lite.train.loop import trainable_model
    base = TrainConfig(steps=1, batch=1, frames=2)
    pretrain(base, tmp_path / "base.pt", progress=False, final_eval=False)
    cfg = TrainConfig(steps=2, batch=1, frames=2, lr=1e-3, init=str(tmp_path / "base.pt"), match_track=8,
                      match_head_weight=0.1, train_only=["match_track"])
    pretrain(cfg, tmp_path / "stage.pt", progress=False, final_eval=False)
    before = load_train_checkpoint(tmp_path / "base.pt")["model"]
    after = load_train_checkpoint(tmp_path / "stage.pt")["model"]
    fresh = build_model(cfg.model_config()).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)           # the network did not move
    moved = [k for k in after if k.startswith("match_track") and not torch.equal(after[k], fresh[k])]
    assert moved                                                            # the added module did
    with pytest.raises(InputError, match="matches no parameter"):
        trainable_model(build_model(PRESETS["tiny"]), ["match_trak"])
    with pytest.raises(InputError, match="prefixes"):
        TrainConfig(steps=1, train_only=[""])
