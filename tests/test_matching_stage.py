"""studies.matching_stage: the contrastive matching loss on encoder tokens, the encoder-only stage, its record."""

from __future__ import annotations

import doctest
import json

import torch
import torch.nn.functional as F

from st4r_lite.model.config import PRESETS
from st4r_lite.model.network import build_model
from st4r_lite.studies import matching_stage
from st4r_lite.studies.matching_stage import ENCODER_PREFIXES, feature_match_loss, train_encoder


def test_doctests_pass():
    assert doctest.testmod(matching_stage).failed == 0


def test_loss_prefers_the_true_correspondent_and_weighs_moved_tokens():
    torch.manual_seed(0)
    f0 = F.normalize(torch.randn(1, 1, 12, 16), dim=-1)
    perm = torch.randperm(12)
    fk = f0[:, :, perm.argsort()]                       # frame k holds token i's feature at position perm[i]
    feats = torch.cat([f0, fk], 1)                      # (1, 2, 12, 16)
    valid = torch.ones(1, 2, 12, dtype=torch.bool)
    none = torch.zeros_like(valid)
    right = torch.stack([torch.arange(12), perm])[None]
    wrong = torch.stack([torch.arange(12), torch.arange(12)])[None]
    assert feature_match_loss(feats, right, valid, none, tau=0.05) < feature_match_loss(feats, wrong, valid, none, tau=0.05)
    moved = none.clone()
    moved[:, 1, :3] = True
    base = feature_match_loss(feats, wrong, valid, none)
    assert feature_match_loss(feats, wrong, valid, moved, moved_weight=2.0) > base
    hidden = valid.clone()
    hidden[:, 1] = False                                 # nothing visible in frame k: no loss, no NaN
    assert float(feature_match_loss(feats, wrong, hidden, none)) == 0.0


def test_only_the_encoder_trains_and_the_loss_is_logged():
    torch.manual_seed(0)
    model = build_model(PRESETS["tiny"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    curve = train_encoder(model, steps=2, batch=1, frames=2, lr=1e-3, log_every=1)
    assert [c["step"] for c in curve] == [1, 2] and all(c["loss"] > 0 for c in curve)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(ENCODER_PREFIXES) for k in changed)
    assert all(p.requires_grad for p in model.parameters())   # handed back trainable


def test_cli_writes_the_record_and_a_model_that_loads(tmp_path):
    from st4r_lite.model import resolve

    out, rec = tmp_path / "enc.pt", tmp_path / "m.json"
    assert matching_stage.main(["--init", "fresh:tiny", "--steps", "1", "--batch", "1", "--frames", "2",
                                "--out", str(out), "--json", str(rec)]) == 0
    doc = json.loads(rec.read_text())
    assert set(doc["before"]) == set(doc["after"]) == {"v2"} and "encoder" in doc["after"]["v2"]
    assert doc["command"].startswith("python -m st4r_lite.studies.matching_stage --init fresh:tiny")
    assert resolve.load(str(out)).config.patch_size == 8
