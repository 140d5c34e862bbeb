"""Loading DUSt3R-layout state_dicts (aliases, missing branch, wrappers, safetensors) and our own checkpoints."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from safetensors.torch import save_file

from st4r_lite.model import checkpoint
from st4r_lite.model.checkpoint import LoadReport, load_model, load_weights, read_state_dict, save_checkpoint
from st4r_lite.model.config import ModelConfig
from st4r_lite.model.network import St4RTrack, build_model

# A DPT config small enough for tests (same layout as the released one, including the aliased DPT keys).
MINI_DPT = ModelConfig(name="mini_dpt", img_size=(32, 48), patch_size=8, enc_dim=32, enc_depth=2, enc_heads=2,
                       dec_dim=32, dec_depth=4, dec_heads=2, head_type="dpt", dpt_feature_dim=16, dpt_last_dim=8,
                       dpt_layer_dims=(8, 8, 16, 16), dpt_hooks=(0, 2, 3, 4))
ALIAS = ".dpt.scratch.layer_rn."


def _released_layout(model: St4RTrack) -> dict[str, torch.Tensor]:
    """What a released DUSt3R/MonST3R/St4RTrack file holds: our keys minus the sigma heads (aliases included)."""
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("sigma_head")}


def _outputs(model: St4RTrack) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x, y = (torch.rand(1, 3, 32, 48, generator=g) * 2 - 1 for _ in range(2))
    with torch.no_grad():
        out = model(x, y)
    return torch.cat([out.track.flatten(), out.recon.flatten(), out.conf_track.flatten(), out.log_sigma2_track.flatten()])


@pytest.fixture()
def source():
    return build_model(MINI_DPT, seed=1)


def test_released_layout_loads_and_reports(source):
    sd = _released_layout(source)
    assert any(ALIAS in k for k in sd)
    target = build_model(MINI_DPT, seed=2)
    with torch.no_grad():
        target.sigma_head1.proj.weight.fill_(0.3)  # stale values must not survive a released file
    report = load_weights(target, sd)
    assert isinstance(report, LoadReport) and report.ok
    assert sorted(report.expected_missing) == ["sigma_head1.proj.bias", "sigma_head1.proj.weight",
                                               "sigma_head2.proj.bias", "sigma_head2.proj.weight"]
    assert len(report.aliased) == 8 and all(ALIAS in k for k in report.aliased)
    assert torch.equal(_outputs(target), _outputs(source))
    assert target.sigma_head1.proj.weight.abs().sum() == 0, "sigma heads restart at zero (sigma^2 = 1)"


@pytest.mark.parametrize("keep", ["alias_only", "named_only"])
def test_either_name_of_the_dpt_alias_is_enough(source, keep):
    sd = _released_layout(source)
    if keep == "alias_only":  # e.g. what safetensors' save_model may keep of a shared tensor
        sd = {k: v for k, v in sd.items() if not (".dpt.scratch.layer" in k and "_rn." in k and ALIAS not in k)}
    else:
        sd = {k: v for k, v in sd.items() if ALIAS not in k}
    target = build_model(MINI_DPT, seed=2)
    report = load_weights(target, sd)
    assert report.ok and len(report.aliased) == 8
    assert torch.equal(_outputs(target), _outputs(source))
    # The two names still share one tensor after loading.
    s = target.downstream_head1.dpt.scratch
    assert s.layer_rn[0].weight is s.layer1_rn.weight


def test_second_decoder_copied_from_first_when_absent(source):
    sd = {k: v for k, v in _released_layout(source).items() if not k.startswith("dec_blocks2.")}
    target = build_model(MINI_DPT, seed=2)
    report = load_weights(target, sd)
    assert report.ok
    n = len([k for k in target.state_dict() if k.startswith("dec_blocks2.")])
    assert len(report.copied) == n > 0 and all(k.startswith("dec_blocks2.") for k in report.copied)
    for a, b in zip(target.dec_blocks.parameters(), target.dec_blocks2.parameters()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()  # equal values, separate tensors


def test_wrapped_file_with_training_args_loads_weights_only(tmp_path, source):
    path = tmp_path / "checkpoint-last.pth"
    torch.save({"model": _released_layout(source), "args": argparse.Namespace(lr=5e-5, model="AsymmetricCroCo3DStereo"),
                "epoch": 99}, path)
    sd, rest = read_state_dict(path)
    assert rest["epoch"] == 99 and isinstance(rest["args"], argparse.Namespace)
    target = build_model(MINI_DPT, seed=2)
    assert load_weights(target, path).ok
    assert torch.equal(_outputs(target), _outputs(source))


def test_ddp_prefix_is_stripped(source):
    sd = {"module." + k: v for k, v in _released_layout(source).items()}
    target = build_model(MINI_DPT, seed=2)
    assert load_weights(target, sd).ok
    assert torch.equal(_outputs(target), _outputs(source))


def test_safetensors_file_loads(tmp_path, source):
    sd = {k: v.contiguous() for k, v in _released_layout(source).items() if ALIAS not in k}  # no shared tensors
    path = tmp_path / "model.safetensors"
    save_file(sd, str(path))
    target = build_model(MINI_DPT, seed=2)
    assert load_weights(target, path).ok
    assert torch.equal(_outputs(target), _outputs(source))


def test_missing_and_unexpected_keys_are_named(source):
    sd = _released_layout(source)
    del sd["enc_blocks.1.mlp.fc2.bias"]
    sd["extra_head.weight"] = torch.zeros(3)
    target = build_model(MINI_DPT, seed=2)
    with pytest.raises(ValueError, match=r"1 missing \['enc_blocks.1.mlp.fc2.bias'\].*1 unexpected \['extra_head.weight'\]"):
        load_weights(target, sd)
    report = load_weights(target, sd, strict=False)
    assert report.missing == ["enc_blocks.1.mlp.fc2.bias"] and report.unexpected == ["extra_head.weight"]
    assert not report.ok and "missing" in report.summary()
    torch.testing.assert_close(target.enc_blocks[0].attn.qkv.weight, source.enc_blocks[0].attn.qkv.weight)


class _Trap:
    """Unpickling this would call _Trap.spring (arbitrary code); weights-only loading must refuse it."""

    sprung = False

    @staticmethod
    def spring():
        _Trap.sprung = True
        return {}

    def __reduce__(self):
        return (_Trap.spring, ())


def test_pickle_with_arbitrary_object_is_refused(tmp_path, source):
    path = tmp_path / "evil.pth"
    torch.save({"model": _released_layout(source), "payload": _Trap()}, path)
    with pytest.raises(ValueError, match="weights-only.*refused for safety"):
        load_weights(build_model(MINI_DPT, seed=2), path)
    assert _Trap.sprung is False


@pytest.mark.parametrize(("content", "message"), [
    (b"this is not a checkpoint", "could not read checkpoint"),
    ([1, 2, 3], "holds a list"),
    ({}, "it is empty"),
    ({"model": {"a": 1}}, "not tensors"),
])
def test_malformed_files_give_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(ValueError, match=message):
        load_weights(build_model("tiny"), path)


def test_bad_safetensors_and_absent_file(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="safetensors"):
        read_state_dict(bad)
    with pytest.raises(ValueError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pth")


def test_wrong_preset_names_both_layouts(tmp_path):
    path = save_checkpoint(tmp_path / "tiny.pt", build_model("tiny"))
    with pytest.raises(ValueError, match=r"shape mismatches.*preset 'tiny'.*matching preset"):
        load_weights(build_model(MINI_DPT), path)


def test_meta_model_is_refused(source):
    with pytest.raises(ValueError, match="meta device"):
        load_weights(build_model(MINI_DPT, device="meta"), _released_layout(source))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_own_checkpoint_round_trip_carries_config(tmp_path, suffix):
    model = build_model(MINI_DPT, seed=5)
    with torch.no_grad():
        model.sigma_head2.proj.bias.fill_(0.25)  # trained sigma heads must survive our own format
    path = save_checkpoint(tmp_path / f"mini{suffix}", model, step=7, note="hello")
    loaded = load_model(path)
    assert loaded.config == MINI_DPT
    assert torch.equal(_outputs(loaded), _outputs(model))
    assert torch.equal(loaded.sigma_head2.proj.bias, model.sigma_head2.proj.bias)
    _, rest = read_state_dict(path)
    extra = rest if suffix == ".pt" else rest["extra"]
    assert extra["step"] == 7 and extra["note"] == "hello"


def test_save_checkpoint_rejects_clashing_or_unserialisable_extras(tmp_path):
    model = build_model("tiny")
    with pytest.raises(ValueError, match="overwrite"):
        save_checkpoint(tmp_path / "a.pt", model, config={})
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(tmp_path / "a.safetensors", model, obj=object())
    assert not (tmp_path / "a.safetensors").exists()


def test_load_model_needs_our_config(tmp_path, source):
    path = tmp_path / "released.pth"
    torch.save({"model": _released_layout(source)}, path)
    with pytest.raises(ValueError, match="load_pretrained"):
        load_model(path)


def test_describe_state_dict_names_presets():
    text = checkpoint.describe_state_dict(build_model("tiny").state_dict())
    assert "preset 'tiny'" in text and "encoder 192x6" in text
    assert "unknown layout" in checkpoint.describe_state_dict({"w": torch.zeros(1)})
    json.dumps(MINI_DPT.to_dict())  # what save_checkpoint stores must be JSON-able
