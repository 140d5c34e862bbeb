"""The lookup ceiling study: every row scored on the same pixels, the model's own lookup only when it has one."""

import json

import pytest
import torch

from st4r_lite.model.config import PRESETS
from st4r_lite.model.network import build_model
from st4r_lite.studies import lookup_ceiling
from st4r_lite.world.render import generate_clips


@pytest.fixture(scope="module")
def clips():
    return generate_clips(1, frames=4, height=64, width=96, domain="pretrain", seed=900_000)


@pytest.mark.parametrize("config", [PRESETS["tiny"], PRESETS["tiny"].with_(match_track=8),
                                    PRESETS["tiny"].with_(match_track=8, match_register=True, match_pixel=True)])
def test_every_row_is_scored_on_the_same_pixels(clips, config):
    model = build_model(config).eval()
    got = lookup_ceiling.lookup_errors(model, clips, far=1)
    expected = set(lookup_ceiling.ROWS) - (set() if config.match_track else {"lookup"})
    for group in ("moving", "static"):
        rows = got[group]
        assert rows["pixels"] > 0 and set(rows) - {"pixels", "lookup_px"} == expected
        assert ("lookup_px" in rows) == config.match_pixel
        assert all(0 <= r["median"] and 0 <= r["mean"] for k, r in rows.items() if k != "pixels")
    # frame 0 is excluded by far=1; a static pixel's "static" row equals the model's anchor track held still
    assert got["static"]["static"]["median"] >= 0


def test_true_lookups_of_a_perfect_reconstruction_are_near_exact(clips, monkeypatch):
    """With recon := the true points (and the track := the truth), the true pixel lookup errs by under a pixel."""
    from einops import rearrange

    from st4r_lite.model.network import PairOutput

    truth = rearrange(clips.points_world, "b s h w c -> (b s) h w c").float()
    track = rearrange(clips.track_world, "b s h w c -> (b s) h w c").float()
    ones = torch.ones(truth.shape[:3])
    fake = PairOutput(track, truth, ones + 1, ones + 1, ones * 0, ones * 0)
    monkeypatch.setattr(lookup_ceiling.PairRunner, "forward", lambda self, frames, **kw: fake)
    got = lookup_ceiling.lookup_errors(build_model("tiny").eval(), clips, far=1)
    assert got["static"]["true_pixel"]["median"] < 0.03 and got["static"]["track_head"]["median"] < 1e-5


def test_cli_writes_the_record(tmp_path):
    out = tmp_path / "l.json"
    assert lookup_ceiling.main(["fresh:tiny", "--num-clips", "1", "--far", "14", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["far"] == 14 and "--num-clips 1" in doc["command"] and set(doc["errors_m"]) == {"moving", "static"}
