"""The network: parity with the reference DUSt3R implementation, checkpoint layout, shapes and properties.

Parity uses ../shared/fixtures/dust3r_parity (reference outputs of naver/dust3r with small random weights);
those tests skip when ../shared is absent.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch.overrides import TorchFunctionMode

from st4r_lite.model.blocks import RoPE2D
from st4r_lite.model.checkpoint import load_weights
from st4r_lite.model.config import PRESETS, ModelConfig, get_config
from st4r_lite.model.network import St4RTrack, build_model, count_parameters
from st4r_lite.model.pairs import predict_video

CASES = ("landscape_64x96", "square_64x64", "portrait_96x64")
SIGMA_KEYS = {"sigma_head1.proj.weight", "sigma_head1.proj.bias", "sigma_head2.proj.weight", "sigma_head2.proj.bias"}


def _close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} vs reference {tuple(ref.shape)}"
    torch.testing.assert_close(ours, ref.to(ours.dtype), rtol=1e-4, atol=2e-5, msg=lambda m: f"{what}: {m}")


@pytest.fixture(scope="module")
def parity_models(request):
    shared = request.getfixturevalue("shared_dir")
    root = shared / "fixtures" / "dust3r_parity"
    models = {}
    for kind in ("linear", "dpt"):
        cfg = ModelConfig.from_dust3r(json.loads((root / kind / "config.json").read_text()), name=f"parity_{kind}")
        model = St4RTrack(cfg).eval()
        report = load_weights(model, root / kind / "state_dict.pt")
        assert report.missing == [] and report.unexpected == []
        cases = torch.load(root / kind / "cases.pt", map_location="cpu", weights_only=True)
        models[kind] = (model, cases)
    return models


@pytest.mark.parametrize("kind", ["linear", "dpt"])
@pytest.mark.parametrize("case", CASES)
def test_parity_with_reference(parity_models, kind, case):
    model, cases = parity_models[kind]
    c = cases[case]
    with torch.no_grad():
        dbg = model.forward_debug(c["img1"], c["img2"])
    _close(dbg.enc1, c["enc1"], "enc1")
    _close(dbg.enc2, c["enc2"], "enc2")
    assert torch.equal(dbg.pos1.long(), c["pos1"].long()), "patch positions (y, x) differ"
    assert len(dbg.dec1) == len(c["dec1"]) == len(dbg.dec2) == len(c["dec2"]) == model.config.dec_depth + 1
    for i, (a, b) in enumerate(zip(dbg.dec1, c["dec1"])):
        _close(a, b, f"dec1[{i}]")
    for i, (a, b) in enumerate(zip(dbg.dec2, c["dec2"])):
        _close(a, b, f"dec2[{i}]")
    out = dbg.output
    _close(out.track, c["pts3d_1"], "track (head 1 pts3d)")
    _close(out.conf_track, c["conf_1"], "conf_track")
    _close(out.recon, c["pts3d_2"], "recon (head 2 pts3d_in_other_view)")
    _close(out.conf_recon, c["conf_2"], "conf_recon")


def test_parity_fixture_is_not_trivial(parity_models):
    """The comparison above can fail: a perturbed weight changes the outputs far beyond the tolerance."""
    model, cases = parity_models["linear"]
    c = cases["square_64x64"]
    with torch.no_grad():
        model.dec_blocks[0].norm1.weight.mul_(1.5)
        try:
            out = model(c["img1"], c["img2"])
        finally:
            model.dec_blocks[0].norm1.weight.div_(1.5)
    assert (out.track - c["pts3d_1"]).abs().max() > 1e-3


@pytest.mark.parametrize(("preset", "layout"), [
    ("full", "DUSt3R_ViTLarge_BaseDecoder_512_dpt (also MonST3R, St4RTrack)"),
    ("full_linear", "DUSt3R_ViTLarge_BaseDecoder_224_linear"),
])
def test_full_presets_match_released_checkpoint_layout(shared_dir, preset, layout):
    released = json.loads((shared_dir / "fixtures" / "dust3r_parity" / "released_checkpoint_keys.json").read_text())
    ref = {k: tuple(v) for k, v in released[layout].items()}
    model = build_model(preset, device="meta")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    extra = sorted(set(ours) - set(ref))
    assert set(extra) == SIGMA_KEYS, f"keys of ours that released files lack (only our sigma heads allowed): {extra}"
    assert sorted(set(ref) - set(ours)) == [], "released keys the full preset lacks"
    wrong = {k: (ours[k], s) for k, s in ref.items() if ours[k] != s}
    assert wrong == {}, f"shape mismatches (ours, released): {wrong}"
    assert len(ref) == (1009 if preset == "full" else 877)


def test_full_parameter_count_on_meta():
    n = count_parameters(build_model("full", device="meta"))
    assert 5.5e8 < n < 6.0e8, n  # ViT-L encoder (~303 M) + two ViT-B decoders + DPT heads


@pytest.mark.parametrize("preset", ["tiny", "small"])
@pytest.mark.parametrize("orientation", ["landscape", "portrait"])
def test_output_shapes_and_ranges(preset, orientation):
    cfg = get_config(preset)
    p = cfg.patch_size
    H, W = (cfg.img_size if preset == "tiny" else (4 * p, 6 * p))  # small: a reduced size keeps the test fast
    if orientation == "portrait":
        H, W = W, H
    model = build_model(preset)
    g = torch.Generator().manual_seed(1)
    img1, img2 = (torch.rand(2, 3, H, W, generator=g) * 2 - 1 for _ in range(2))
    with torch.no_grad():
        out = model(img1, img2)
    for name in ("track", "recon"):
        assert getattr(out, name).shape == (2, H, W, 3)
    for name in ("conf_track", "conf_recon", "log_sigma2_track", "log_sigma2_recon"):
        assert getattr(out, name).shape == (2, H, W)
    assert (out.conf_track > 1).all() and (out.conf_recon > 1).all()
    assert torch.isfinite(out.track).all() and torch.isfinite(out.recon).all()
    # Zero-initialised sigma heads: log sigma^2 == 0 exactly (sigma^2 = 1) until trained.
    assert torch.equal(out.log_sigma2_track, torch.zeros_like(out.log_sigma2_track))
    assert torch.equal(out.log_sigma2_recon, torch.zeros_like(out.log_sigma2_recon))


def test_pointmap_activation_formula():
    from st4r_lite.model.heads import pointmap_activation

    raw = torch.tensor([0.3, -0.4, 1.2, -0.7]).reshape(1, 4, 1, 1)
    pts, conf = pointmap_activation(raw)
    xyz = raw[0, :3, 0, 0]
    d = xyz.norm()
    torch.testing.assert_close(pts[0, 0, 0], xyz / d * torch.expm1(d))  # X = xyz/|xyz| * (e^|xyz| - 1)
    torch.testing.assert_close(conf[0, 0, 0], 1 + torch.exp(torch.tensor(-0.7)))  # C = 1 + e^c
    zero, _ = pointmap_activation(torch.zeros(1, 4, 1, 1))
    assert torch.equal(zero, torch.zeros_like(zero)), "a zero raw vector must give the origin, not NaN"


def test_build_model_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = build_model("tiny", seed=3), build_model("tiny", seed=3), build_model("tiny", seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["enc_blocks.0.attn.qkv.weight"], sc["enc_blocks.0.attn.qkv.weight"])


def test_forward_is_deterministic():
    model = build_model("tiny")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 96, generator=g) * 2 - 1
    y = torch.rand(2, 3, 64, 96, generator=g) * 2 - 1
    with torch.no_grad():
        o1, o2 = model(x, y), model(x, y)
    assert torch.equal(o1.track, o2.track) and torch.equal(o1.conf_recon, o2.conf_recon)


def test_pair_order_matters_and_branches_differ():
    """Head 1 reads branch 1 (anchor), head 2 branch 2 (other): swapping the pair changes the outputs."""
    model = build_model("tiny")
    g = torch.Generator().manual_seed(0)
    x, y = (torch.rand(1, 3, 64, 96, generator=g) * 2 - 1 for _ in range(2))
    with torch.no_grad():
        a, b = model(x, y), model(y, x)
    assert not torch.allclose(a.track, b.track)
    assert not torch.allclose(a.track, a.recon)


def test_gradients_are_finite_and_reach_every_parameter():
    model = build_model("tiny")
    g = torch.Generator().manual_seed(0)
    x, y = (torch.rand(2, 3, 32, 48, generator=g) * 2 - 1 for _ in range(2))
    out = model(x, y)
    loss = (out.track.abs().mean() + out.recon.abs().mean() + out.conf_track.log().mean()
            + out.conf_recon.log().mean() + out.log_sigma2_track.exp().mean() + out.log_sigma2_recon.exp().mean())
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None and n != "mask_token"]
    assert no_grad == [], f"parameters without gradient: {no_grad[:5]}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert bad == []
    assert model.sigma_head1.proj.weight.grad.abs().sum() > 0, "zero-initialised sigma head must still learn"


def test_heads_run_in_float32_under_autocast():
    model = build_model("tiny")
    x = torch.zeros(1, 3, 32, 48)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, x)
    assert out.track.dtype == torch.float32 and out.conf_track.dtype == torch.float32


class _CountCalls(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def test_no_python_loop_over_tokens_or_pixels(monkeypatch):
    """The number of torch calls of a forward pass does not depend on the image size (everything batched).

    RoPE's cos/sin cache is switched off here: whether a lookup hits depends on the identity of tensors Python
    may reuse, which changes the call count (not any value) from one forward to the next."""
    monkeypatch.setattr(RoPE2D, "CACHE_SIZE", 0)
    model = build_model("tiny")
    counts = []
    for H, W in ((32, 48), (64, 96), (96, 64)):
        x = torch.zeros(1, 3, H, W)
        with torch.no_grad(), _CountCalls() as mode:
            model(x, x)
        counts.append(mode.calls)
    assert counts[0] > 50 and counts[0] == counts[1] == counts[2], counts


def test_predict_video_chunks_equal_one_batch_and_bound_memory():
    model = build_model("tiny")
    g = torch.Generator().manual_seed(2)
    video = torch.rand(5, 3, 32, 48, generator=g) * 2 - 1
    with torch.no_grad():
        ref = model(video[:1].expand(5, -1, -1, -1), video)  # pairs (0, t) in one batch
    seen: list[int] = []
    hook = model.patch_embed.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[0]))
    try:
        outs = {chunk: predict_video(model, video, chunk=chunk) for chunk in (1, 2, 5)}
    finally:
        hook.remove()
    assert max(seen[: 1 + 5]) <= 1 and max(seen) <= 5  # chunk=1 encodes one frame at a time
    for chunk, out in outs.items():
        assert out.track.shape == (5, 32, 48, 3)
        for name in ("track", "recon", "conf_track", "conf_recon", "log_sigma2_track"):
            torch.testing.assert_close(getattr(out, name), getattr(ref, name), rtol=1e-4, atol=1e-5,
                                       msg=lambda m, c=chunk, n=name: f"chunk={c} {n}: {m}")


def test_predict_video_rejects_bad_input():
    model = build_model("tiny")
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\)"):
        predict_video(model, torch.zeros(3, 32, 48))
    with pytest.raises(ValueError, match="chunk"):
        predict_video(model, torch.zeros(2, 3, 32, 48), chunk=0)
    with pytest.raises(ValueError, match="anchor"):
        predict_video(model, torch.zeros(2, 3, 32, 48), anchor=2)


def test_bad_images_give_clear_errors():
    model = build_model("tiny")
    with pytest.raises(ValueError, match="multiple of the patch size 8"):
        model(torch.zeros(1, 3, 30, 48), torch.zeros(1, 3, 30, 48))
    with pytest.raises(ValueError, match="same shape"):
        model(torch.zeros(1, 3, 32, 48), torch.zeros(2, 3, 32, 48))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.zeros(3, 32, 48), torch.zeros(3, 32, 48))


def test_rope_scores_depend_on_relative_position_only():
    rope = RoPE2D(100.0)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 16, generator=g)

    def score(pq, pk):
        return (rope(q, torch.tensor([[pq]])) * rope(k, torch.tensor([[pk]]))).sum()

    base = score((2, 3), (5, 1))
    torch.testing.assert_close(score((7, 10), (10, 8)), base)  # both moved by (5, 7)
    assert not torch.allclose(score((2, 3), (5, 2)), base)  # another offset, another score
    torch.testing.assert_close(rope(q, torch.zeros(1, 1, 2, dtype=torch.long)), q)  # position 0: identity


def test_branch_parameters_split_the_decoders():
    model = build_model("tiny")
    track = {id(p) for p in model.branch_parameters("track")}
    recon = {id(p) for p in model.branch_parameters("recon")}
    assert track and recon and not track & recon
    assert {id(p) for p in model.dec_blocks.parameters()} <= track
    assert {id(p) for p in model.sigma_head1.parameters()} <= track
    assert not {id(p) for p in model.enc_blocks.parameters()} & (track | recon)
    with pytest.raises(ValueError, match="branch"):
        model.branch_parameters("both")


def test_config_round_trip_and_validation():
    for cfg in PRESETS.values():
        assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="multiple of 4"):
        ModelConfig(enc_dim=30, enc_heads=3)
    with pytest.raises(ValueError, match="head_type"):
        ModelConfig(head_type="mlp")
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        ModelConfig.from_dict({"nope": 1})
    with pytest.raises(ValueError, match="unknown model preset"):
        get_config("huge")


def test_tiny_preset_is_small_enough_for_a_laptop():
    n = count_parameters(build_model("tiny", device="meta"))
    assert n < 10e6, n
