"""The match-resolution study: object shift in pixels and the plain matchers' hit rates."""

import json
from dataclasses import replace

import pytest
import torch

from st4r_lite.model import resolve
from st4r_lite.studies import match_resolution
from st4r_lite.train.correspondence import patch_correspondence
from st4r_lite.world.render import generate_clips


@pytest.fixture(scope="module")
def clips():
    return generate_clips(1, frames=16, height=64, width=96, domain="pretrain", seed=123)


def test_objects_that_do_not_move_shift_zero_pixels(clips):
    moving = match_resolution.object_shift(clips)
    assert moving[-1]["px_median"] > 0 and moving[-1]["m_median"] > 0 and moving[-1]["points"] > 0
    frozen = replace(clips, track_world=clips.track_world[:, :1].expand_as(clips.track_world))
    for row in match_resolution.object_shift(frozen):
        assert row["px_median"] == 0 and row["m_median"] == 0


def test_same_position_hits_exactly_the_tokens_that_stayed(clips):
    torch.manual_seed(0)
    model = resolve.load("fresh:tiny").float().eval()
    got = match_resolution.token_matching(model, clips)
    target, visible, same = patch_correspondence(clips, model.config.patch_size)
    k = torch.tensor(match_resolution.OTHERS)
    stayed = (same & visible)[:, k].sum() / visible[:, k].sum()
    assert got["same_position"]["hit"] == pytest.approx(float(stayed), abs=1e-4)
    assert got["same_position"]["moved_hit"] == 0 and got["same_position"]["moved_tokens"] > 0
    assert set(got) == set(match_resolution.MATCHERS)
    for m in got.values():
        assert 0 <= m["hit"] <= m["near"] <= 1 and m["tokens"] == int(visible[:, k].sum())


def test_cli_writes_the_record(tmp_path):
    out = tmp_path / "m.json"
    assert match_resolution.main(["--checkpoint", "fresh:tiny", "--num-clips", "1", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["patch_size"] == 8 and len(doc["object_shift"]) == len(match_resolution.OTHERS)
    assert set(doc["token_matching"]) == set(match_resolution.MATCHERS) and "--num-clips 1" in doc["command"]


def test_cli_shift_renders_the_candidate_world(tmp_path):
    out = tmp_path / "m.json"
    assert match_resolution.main(["--checkpoint", "fresh:tiny", "--num-clips", "1", "--json", str(out),
                                  "--shift", "object_speed=2"]) == 0
    doc = json.loads(out.read_text())
    assert doc["world_shift"] == {"object_speed": 2.0} and doc["command"].endswith("--shift object_speed=2")


def test_a_matched_tracking_model_adds_its_lookup_with_the_gate(clips):
    from st4r_lite.model.config import PRESETS
    from st4r_lite.model.network import build_model

    model = build_model(PRESETS["tiny"].with_(match_track=8)).eval()
    got = match_resolution.token_matching(model, clips)
    assert set(got) == {*match_resolution.MATCHERS, "lookup"}
    lookup = got["lookup"]
    assert 0 <= lookup["hit"] <= lookup["near"] <= 1
    assert lookup["gate"] == pytest.approx(float(torch.sigmoid(torch.tensor(-4.0))), abs=1e-4)   # a fresh gate
