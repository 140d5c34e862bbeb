"""Released weights: registry, offline behaviour, cache layout and the licence notice (never downloads)."""

from __future__ import annotations

import argparse

import pytest
import torch
from safetensors.torch import save_file

from st4r_lite.model import pretrained
from st4r_lite.model.config import ModelConfig
from st4r_lite.model.network import build_model
from st4r_lite.model.pretrained import PRETRAINED, cache_root, find_cached, load_pretrained

MINI = ModelConfig(name="mini", img_size=(32, 48), patch_size=8, enc_dim=32, enc_depth=2, enc_heads=2,
                   dec_dim=32, dec_depth=4, dec_heads=2, head_type="dpt", dpt_feature_dim=16, dpt_last_dim=8,
                   dpt_layer_dims=(8, 8, 16, 16), dpt_hooks=(0, 2, 3, 4))


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """No test here may reach the network: any download attempt fails like an offline machine."""
    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(pretrained, "_fetch", refuse)
    monkeypatch.setattr(pretrained, "_list_repo_files", refuse)
    monkeypatch.delenv("ST4R_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def _released_state(seed: int = 1) -> tuple[dict[str, torch.Tensor], torch.nn.Module]:
    model = build_model(MINI, seed=seed)
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("sigma_head")}, model


def test_registry_names_and_repos():
    assert set(PRETRAINED) == {"st4rtrack_seq", "st4rtrack_pair", "monst3r", "dust3r"}
    assert PRETRAINED["st4rtrack_seq"].repo == PRETRAINED["st4rtrack_pair"].repo == "yupengchengg147/St4RTrack"
    assert PRETRAINED["st4rtrack_pair"].filename.startswith("Pair/") and PRETRAINED["st4rtrack_pair"].folder == "Pair"
    assert "/" not in PRETRAINED["st4rtrack_seq"].filename  # repo root
    assert PRETRAINED["dust3r"].repo == "naver/DUSt3R_ViTLarge_BaseDecoder_512_dpt"
    assert PRETRAINED["monst3r"].repo.startswith("Junyi42/MonST3R")
    assert pretrained.file_url(PRETRAINED["st4rtrack_pair"]).endswith("St4RTrack/resolve/main/Pair/model.safetensors")


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_offline_error_says_which_file_to_place_where(tmp_path, name):
    spec = PRETRAINED[name]
    with pytest.raises(RuntimeError) as err:
        load_pretrained(name, cache_dir=tmp_path)  # download attempted, fails (no network)
    text = str(err.value)
    assert spec.repo in text and spec.filename in text and str(tmp_path / name / spec.filename) in text
    assert "OSError" in text


def test_download_switch_and_env_never_touch_the_network(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("download must not be attempted")

    monkeypatch.setattr(pretrained, "download", boom)
    with pytest.raises(RuntimeError, match="downloading is off.*place it at"):
        load_pretrained("dust3r", cache_dir=tmp_path, allow_download=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert pretrained.offline()
    with pytest.raises(RuntimeError, match="downloading is off"):
        load_pretrained("monst3r", cache_dir=tmp_path)


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="st4rtrack_seq"):
        load_pretrained("st4rtrack-v2")


def test_cached_safetensors_loads_with_licence(tmp_path, monkeypatch, capsys):
    sd, source = _released_state()
    sd = {k: v.contiguous() for k, v in sd.items() if ".scratch.layer_rn." not in k}  # hub files drop aliases
    monkeypatch.setenv("ST4R_CACHE", str(tmp_path))  # the cache location comes from the environment
    target = tmp_path / "st4rtrack_pair" / "Pair" / "model.safetensors"
    target.parent.mkdir(parents=True)
    save_file(sd, str(target))
    assert cache_root() == tmp_path and find_cached("st4rtrack_pair") == target
    model = load_pretrained("st4rtrack_pair", config=MINI, allow_download=False)
    printed = capsys.readouterr().out
    assert "CC BY-NC-SA" in printed and "non-commercial" in printed and str(target) in printed
    assert model.load_report.ok and len(model.load_report.expected_missing) == 4
    assert torch.equal(model.sigma_head1.proj.weight, torch.zeros_like(model.sigma_head1.proj.weight))
    x = torch.zeros(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(model(x, x).track, source(x, x).track, rtol=0, atol=0)


def test_hand_placed_pth_in_the_name_folder_is_used(tmp_path, capsys):
    """E.g. the Google-Drive file St4RTrack_Seqmode_reweightMax5.pth, a training checkpoint with its args."""
    sd, source = _released_state(seed=3)
    folder = tmp_path / "st4rtrack_seq"
    folder.mkdir()
    torch.save({"model": sd, "args": argparse.Namespace(lr=5e-5), "epoch": 49}, folder / "St4RTrack_Seqmode.pth")
    model = load_pretrained("st4rtrack_seq", cache_dir=tmp_path, config=MINI)
    assert "non-commercial" in capsys.readouterr().out
    torch.testing.assert_close(model.dec_blocks2[1].mlp.fc1.weight, source.dec_blocks2[1].mlp.fc1.weight)
    # Two candidate files are ambiguous: not used, the error says where the file should be.
    torch.save({"model": sd}, folder / "other.pth")
    assert find_cached("st4rtrack_seq", tmp_path) is None
    with pytest.raises(RuntimeError, match="st4rtrack_seq"):
        load_pretrained("st4rtrack_seq", cache_dir=tmp_path, config=MINI, allow_download=False)


def test_wrong_architecture_in_cache_is_a_clear_error(tmp_path):
    folder = tmp_path / "dust3r"
    folder.mkdir()
    torch.save(build_model("tiny").state_dict(), folder / "model.pth")
    with pytest.raises(ValueError, match="shape mismatches"):
        load_pretrained("dust3r", cache_dir=tmp_path, config=MINI)


def test_download_falls_back_to_the_single_checkpoint_of_the_folder(tmp_path, monkeypatch):
    calls = []

    def fake_fetch(spec, filename, folder):
        calls.append(filename)
        if filename == spec.filename:
            raise FileNotFoundError(filename)
        return folder / filename

    monkeypatch.setattr(pretrained, "_fetch", fake_fetch)
    monkeypatch.setattr(pretrained, "_list_repo_files",
                        lambda repo: ["README.md", "config.json", "model.safetensors", "Pair/ckpt.pth", "Pair/config.json"])
    path = pretrained.download("st4rtrack_pair", tmp_path)
    assert calls == ["Pair/model.safetensors", "Pair/ckpt.pth"] and path == tmp_path / "st4rtrack_pair" / "Pair/ckpt.pth"
