"""The heads' image-guided pixel refinement (ModelConfig.pixel_refine): off by default, exact at zero, trainable,
and the same through every path that runs pairs."""

import pytest
import torch

from st4r_lite.errors import InputError
from st4r_lite.model.checkpoint import save_checkpoint
from st4r_lite.model.config import PRESETS
from st4r_lite.model.heads import PixelRefine
from st4r_lite.model.network import build_model
from st4r_lite.model.pairs import PairRunner
from st4r_lite.train.loop import TrainConfig, initial_weights

REFINED = PRESETS["tiny"].with_(pixel_refine=8)


def _images(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, 3, 64, 96, generator=g) * 2 - 1 for _ in range(2)]


def test_off_by_default_so_released_layouts_keep_their_keys():
    keys = build_model("tiny").state_dict()
    assert PRESETS["full"].pixel_refine == 0 and not any(k.startswith("pixel_refine") for k in keys)
    refined = build_model(REFINED).state_dict()
    assert {k.split(".")[0] for k in set(refined) - set(keys)} == {"pixel_refine1", "pixel_refine2"}


def test_a_fresh_refinement_computes_exactly_the_init_models_function(tmp_path):
    plain = build_model("tiny", seed=3).eval()
    path = save_checkpoint(tmp_path / "plain.pt", plain)
    refined = build_model(REFINED, seed=5).eval()
    refined.load_state_dict(initial_weights(str(path), refined))
    a, b = _images()
    with torch.no_grad():
        p, r = plain(a, b), refined(a, b)
    assert torch.equal(p.track, r.track) and torch.equal(p.recon, r.recon) and torch.equal(p.conf_track, r.conf_track)


def test_gradients_reach_the_refinement_and_change_its_output():
    model = build_model(REFINED)
    a, b = _images(1)
    out = model(a, b)
    (out.track.square().mean() + out.recon.square().mean()).backward()
    last1, last2 = model.pixel_refine1.net[-1].weight, model.pixel_refine2.net[-1].weight
    assert last1.grad.abs().sum() > 0 and last2.grad.abs().sum() > 0
    refine = PixelRefine(4)
    torch.nn.init.normal_(refine.net[-1].weight)
    raw = torch.randn(1, 4, 8, 8)
    assert not torch.allclose(refine(raw, torch.zeros(1, 3, 8, 8)), raw)
    assert set(map(id, model.pixel_refine1.parameters())) <= set(map(id, model.branch_parameters("track")))
    assert set(map(id, model.pixel_refine2.parameters())) <= set(map(id, model.branch_parameters("recon")))


def test_pairs_from_frames_from_tokens_and_the_plain_forward_agree():
    model = build_model(REFINED).eval()
    torch.nn.init.normal_(model.pixel_refine1.net[-1].weight, std=0.05)   # a refinement that does something
    torch.nn.init.normal_(model.pixel_refine2.net[-1].weight, std=0.05)
    video = torch.rand(3, 3, 64, 96) * 2 - 1
    runner = PairRunner(model, chunk=2)
    with torch.no_grad():
        from_frames = runner(video)
        from_tokens = runner(tokens=runner.encode(video))
        direct = model(video[:1].expand(3, -1, -1, -1), video)
    for f in ("track", "recon", "conf_track"):
        assert torch.allclose(getattr(from_frames, f), getattr(direct, f), atol=1e-4)
        assert torch.allclose(getattr(from_tokens, f), getattr(direct, f), atol=1e-4)


def test_bad_settings_and_missing_images_say_what_to_do():
    with pytest.raises(InputError, match="pixel_refine"):
        PRESETS["tiny"].with_(pixel_refine=-1)
    with pytest.raises(InputError, match="pixel_refine"):
        TrainConfig(steps=1, pixel_refine=-2)
    with pytest.raises(InputError, match="--pixel-refine"):
        TrainConfig(steps=1, refine_lr_mult=10.0)             # nothing to speed up
    assert TrainConfig(steps=1, pixel_refine=8).model_config() == REFINED
    model = build_model(REFINED)
    dec = model.forward_debug(*_images(1))
    with pytest.raises(ValueError, match="images"):
        model.predict_heads(dec.dec1, dec.dec2, (64, 96))
