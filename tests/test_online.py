"""Learned pseudo-label models with their loaders replaced by fakes (no network), offline errors, fallbacks."""

from __future__ import annotations

import sys
import types
import urllib.error

import pytest
import torch

from st4r_lite.adapt import online
from st4r_lite.adapt.lk_tracker import LKTracker
from st4r_lite.adapt.online import (
    CoTrackerProvider,
    MonoDepthProvider,
    OnlineModelUnavailable,
    make_provider,
)


class FakeCoTracker(torch.nn.Module):
    """Moves every query by (+1, +0.5) px per frame; visibility False for query 1 in the last frame."""

    def forward(self, video, queries):
        B, T = video.shape[:2]
        assert video.max() > 1.5  # 0..255 as CoTracker expects
        xy = queries[..., 1:][:, None] + torch.arange(T).float()[None, :, None, None] * torch.tensor([1.0, 0.5])
        vis = torch.ones(B, T, queries.shape[1], dtype=torch.bool)
        vis[:, -1, 1] = False
        return xy, vis


class FakeMoGe(torch.nn.Module):
    def infer(self, images):
        b, _, h, w = images.shape
        depth = torch.full((b, h // 2, w // 2), 3.0)  # half resolution: the provider must resize
        mask = torch.ones_like(depth, dtype=torch.bool)
        mask[:, 0, 0] = False
        return {"depth": depth, "mask": mask}


def offline(*args, **kwargs):
    raise urllib.error.URLError("no network (test)")


@pytest.fixture
def video():
    return torch.rand(4, 3, 16, 20, generator=torch.Generator().manual_seed(0))


def test_cotracker_through_a_fake_hub(monkeypatch, video):
    calls = []

    def fake_load(repo, entry, **kwargs):
        calls.append((repo, entry))
        return FakeCoTracker()

    monkeypatch.setattr(torch.hub, "load", fake_load)
    q = torch.tensor([[2.0, 3.0], [10.0, 8.0]])
    labels = CoTrackerProvider()(video, q)
    assert calls == [online.COTRACKER_HUB]
    assert torch.allclose(labels.tracks_2d[3], q + torch.tensor([3.0, 1.5]))
    assert torch.equal(labels.tracks_2d[0], q) and labels.track_valid[0].all()
    assert not labels.track_valid[3, 1] and labels.track_valid[3, 0]
    assert labels.source.startswith("cotracker3")


def test_cotracker_offline_says_what_to_do(monkeypatch):
    monkeypatch.setattr(torch.hub, "load", offline)
    with pytest.raises(OnlineModelUnavailable, match="--tracker lk") as info:
        online.load_cotracker()
    assert "internet" in str(info.value) and "URLError" in str(info.value)


def test_moge_through_a_fake_package(monkeypatch, video):
    fake = types.ModuleType("moge.model.v2")
    fake.MoGeModel = types.SimpleNamespace(from_pretrained=lambda model_id: FakeMoGe())
    monkeypatch.setitem(sys.modules, "moge.model.v2", fake)
    provider = MonoDepthProvider(chunk=3)
    depth = provider(video)
    assert depth.shape == (4, 16, 20) and provider.name.startswith("moge")
    assert depth[0, 0, 0] == 0 and depth[0, 5, 5] == 3.0     # masked -> 0 (missing), resized nearest


def test_moge_missing_or_offline(monkeypatch):
    monkeypatch.setitem(sys.modules, "moge.model.v2", None)  # "not installed"
    with pytest.raises(OnlineModelUnavailable, match="--depth none"):
        online.load_moge()
    fake = types.ModuleType("moge.model.v2")
    fake.MoGeModel = types.SimpleNamespace(from_pretrained=offline)
    monkeypatch.setitem(sys.modules, "moge.model.v2", fake)
    with pytest.raises(OnlineModelUnavailable, match="huggingface"):
        online.load_moge()


def test_make_provider_falls_back_and_says_so(monkeypatch, video):
    monkeypatch.setattr(torch.hub, "load", offline)
    monkeypatch.setitem(sys.modules, "moge.model.v2", None)
    with pytest.raises(OnlineModelUnavailable):
        make_provider("cotracker")
    with pytest.warns(UserWarning) as caught:
        provider = make_provider("cotracker", "moge", fallback=True)
    messages = " | ".join(str(w.message) for w in caught)
    assert "falling back to the LK tracker" in messages and "continuing without mono-depth" in messages
    assert isinstance(provider.tracker, LKTracker) and provider.depth_model is None
    assert "fell back to lk" in provider.note and "no depth" in provider.note
    labels = provider(video, torch.tensor([[8.0, 8.0]]))
    assert "fell back to lk" in labels.source and labels.depth is None


def test_make_provider_names_and_sim(video):
    from st4r_lite.world.render import generate_clips

    clip = generate_clips(1, frames=4, height=16, width=20, seed=0)
    provider = make_provider("sim", "sim-affine", ground_truth=clip)
    labels = provider(clip.rgb[0].float(), torch.tensor([[5.0, 5.0], [12.0, 9.0]]))
    assert labels.source.startswith("sim-track") and "sim-depth(affine)" in labels.source
    assert labels.depth.shape == (4, 16, 20) and (labels.depth > 0).all()
    with pytest.raises(ValueError, match="ground_truth"):
        make_provider("sim")
    with pytest.raises(ValueError, match="unknown tracker"):
        make_provider("raft")
    with pytest.raises(ValueError, match="unknown depth"):
        make_provider("lk", "midas")
