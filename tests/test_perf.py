"""Speed and memory work: the RoPE2D cache, the DPT head's memory, the tensor-memory tracker and the
side-by-side comparison with the reference code (its plumbing, with a stand-in "reference" package)."""

from __future__ import annotations

import copy
import json
import pickle
import sys

import pytest
import torch

from st4r_lite.cli import main as cli_main
from st4r_lite.errors import InputError
from st4r_lite.model.blocks import RoPE2D, patch_positions
from st4r_lite.model.network import build_model
from st4r_lite.studies.reference_compare import (
    TensorMemoryTracker,
    compare_reference,
    peak_forward_bytes,
    reference_kwargs,
)


def _uncached(rope: RoPE2D, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    return RoPE2D(rope.base)(x, pos.clone())  # a fresh module and a fresh positions tensor: no cache


def test_rope_cache_hits_on_the_same_positions_and_changes_no_value():
    rope = RoPE2D(100.0)
    x = torch.randn(2, 3, 12, 16)
    pos = patch_positions(2, 3, 4).contiguous()  # (expanded over the batch: make it writable)
    first = rope.cos_sin(pos, 16, torch.float32)
    again = rope.cos_sin(pos, 16, torch.float32)
    assert again[0] is first[0] and again[1] is first[1]  # served from the cache
    assert rope.cos_sin(pos, 32, torch.float32)[0].shape[-1] == 32  # another head width: another entry
    assert rope.cos_sin(pos, 16, torch.float64)[0].dtype == torch.float64
    torch.testing.assert_close(rope(x, pos), _uncached(rope, x, pos), rtol=0, atol=1e-6)
    pos.add_(1)  # in place: the version counter changes, the cached table must not be used
    assert rope.cos_sin(pos, 16, torch.float32)[0] is not first[0]
    torch.testing.assert_close(rope(x, pos), _uncached(rope, x, pos), rtol=0, atol=1e-6)
    assert len(rope._cache) <= RoPE2D.CACHE_SIZE


def test_rope_cache_keeps_gradients_and_survives_copies():
    rope = RoPE2D(100.0)
    pos = patch_positions(1, 2, 3)
    x = torch.randn(1, 2, 6, 8, requires_grad=True)
    rope(x, pos)  # fill the cache outside the graph
    rope(x, pos).square().sum().backward()
    ref = x.detach().clone().requires_grad_(True)
    _uncached(rope, ref, pos).square().sum().backward()
    torch.testing.assert_close(x.grad, ref.grad)
    for clone in (copy.deepcopy(rope), pickle.loads(pickle.dumps(rope))):
        assert clone._cache == {}
        torch.testing.assert_close(clone(x.detach(), pos), rope(x.detach(), pos))
    with torch.inference_mode():  # inference tensors have no version counter: computed, not cached
        out = rope(x.detach(), patch_positions(1, 2, 3))
    torch.testing.assert_close(out, rope(x.detach(), pos))


def test_memory_tracker_counts_live_new_storages_only():
    w = torch.ones(1000)  # made outside: not counted, nor are its views or in-place results

    def two_alive():
        a, b = torch.ones(1000), torch.ones(1000)
        w.view(10, 100).t()
        return a + b

    def one_at_a_time():
        for _ in range(3):
            t = torch.ones(1000)
            t.add_(1)
            del t

    assert peak_forward_bytes(two_alive) == 3 * 4000
    assert peak_forward_bytes(one_at_a_time) == 4000
    with TensorMemoryTracker() as tr:
        kept = torch.zeros(250)
    assert tr.live_bytes == 1000 and kept.numel() == 250


def test_dpt_head_peak_memory_is_bounded():
    """The head's largest live set (p = 8: refinenet1's upsampled map and its 1x1 conv output, both at full
    resolution and fusion width, plus the half-resolution inputs): 2.58 maps now, 2.83 before the in-place work."""
    model = build_model("small", seed=0).eval()
    cfg = model.config
    img = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        dec = model.forward_debug(img, img).dec1
    peak = peak_forward_bytes(lambda: model.downstream_head1(dec, (64, 96)))
    full_map = 64 * 96 * cfg.dpt_feature_dim * 4  # p = 8: the finest fusion stage runs at full resolution
    assert peak <= 2.7 * full_map, peak / full_map


def _fake_reference(root):
    """A stand-in 'reference checkout': dust3r.model.AsymmetricCroCo3DStereo wrapping our own network."""
    pkg = root / "dust3r"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "model.py").write_text(
        "from st4r_lite.model.config import ModelConfig\n"
        "from st4r_lite.model.network import St4RTrack\n"
        "class AsymmetricCroCo3DStereo(St4RTrack):\n"
        "    def __init__(self, **kw):\n"
        "        super().__init__(ModelConfig(name='fake', img_size=kw['img_size'], patch_size=kw['patch_size'],\n"
        "            enc_dim=kw['enc_embed_dim'], enc_depth=kw['enc_depth'], enc_heads=kw['enc_num_heads'],\n"
        "            dec_dim=kw['dec_embed_dim'], dec_depth=kw['dec_depth'], dec_heads=kw['dec_num_heads'],\n"
        "            head_type=kw['head_type'], sigma_heads=False))\n"
        "    def forward(self, view1, view2):\n"
        "        o = St4RTrack.forward(self, view1['img'], view2['img'])\n"
        "        return {'pts3d': o.track, 'conf': o.conf_track}, {'pts3d_in_other_view': o.recon, 'conf': o.conf_recon}\n")


def test_compare_reference_plumbing_with_a_stand_in(tmp_path, capsys):
    _fake_reference(tmp_path / "ref")
    try:
        r = compare_reference(tmp_path / "ref", "tiny", batch=1, repeats=1, warmup=0)
        assert r["max_abs_diff"] == 0.0  # same weights, same code
        assert r["time_ratio"] > 0 and 0.5 < r["memory_ratio"] < 2.0
        out = tmp_path / "cmp.json"
        cli_main(["bench", "--preset", "tiny", "--compare-reference", str(tmp_path / "ref"), "--steps", "1",
                  "--warmup", "0", "--json", str(out)])
        doc = json.loads(out.read_text())
        assert "--compare-reference" in doc["command"] and doc["results"][0]["preset"] == "tiny"
    finally:
        for name in [n for n in sys.modules if n == "dust3r" or n.startswith("dust3r.")]:
            del sys.modules[name]
    with pytest.raises(InputError, match="dust3r/model.py"):
        compare_reference(tmp_path / "nowhere", "tiny")


def test_reference_kwargs_describe_the_full_preset():
    from st4r_lite.model.config import get_config
    kw = reference_kwargs(get_config("full"), (224, 224))
    assert (kw["enc_embed_dim"], kw["enc_depth"], kw["dec_embed_dim"], kw["dec_depth"]) == (1024, 24, 768, 12)
    assert kw["pos_embed"] == "RoPE100" and kw["head_type"] == "dpt" and kw["landscape_only"] is False
    with pytest.raises(InputError, match="DPT sizes"):
        reference_kwargs(get_config("small"), (64, 96))
