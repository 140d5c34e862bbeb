"""Untrusted files never run code: no unpickling anywhere, object arrays refused with a clear error."""

from __future__ import annotations

import io
import pathlib
import pickle
import re

import numpy as np
import pytest

from st4r_lite import cli
from st4r_lite.errors import InputError
from st4r_lite.runtime import repo_data_dir
from st4r_lite.world import npy_bytes, render, worldtrack

PACKAGE = pathlib.Path(worldtrack.__file__).resolve().parents[1]


class _WritesAFile:
    """Unpickling this calls open(path, "w"): the file appears iff something unpickled it."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def good_arrays(tmp_path_factory) -> dict:
    clip = render.generate_clips(1, domain="pretrain", seed=1, frames=3, height=12, width=16)
    path = worldtrack.save_npz(tmp_path_factory.mktemp("good") / "good.npz", worldtrack.clip_to_sequence(clip, 0))
    with np.load(path) as data:
        return dict(data)


def _payload_array(marker, n=3) -> np.ndarray:
    arr = np.empty(n, dtype=object)
    arr[:] = [_WritesAFile(marker) for _ in range(n)]
    return arr


@pytest.mark.parametrize("key", ["tracks_XYZ", "depth_map", "images_jpeg_bytes", "visibility", "meta_json"])
def test_pickled_payload_is_never_run(good_arrays, tmp_path, key):
    marker = tmp_path / "pwned.txt"
    arrays = dict(good_arrays)
    arrays[key] = _payload_array(marker)
    path = tmp_path / "evil.npz"
    np.savez(path, **arrays)  # savez pickles object arrays
    with pytest.raises(InputError, match=key) as err:
        worldtrack.load_npz(path)
    assert "never unpickles" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("argv", [
    ["evaluate", "--checkpoint", "{tiny}", "--data", "{npz}"],
    ["view", "--npz", "{npz}", "--out", "{tmp}/v.html"],
])
def test_cli_refuses_a_pickled_payload_in_one_line(good_arrays, tmp_path, capsys, argv):
    marker = tmp_path / "pwned.txt"
    arrays = dict(good_arrays, tracks_XYZ=_payload_array(marker))
    np.savez(tmp_path / "evil.npz", **arrays)
    argv = [a.format(npz=tmp_path / "evil.npz", tmp=tmp_path, tiny=repo_data_dir() / "tiny.pt") for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "tracks_XYZ" in err and "never unpickles" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


def test_official_object_array_of_bytes_is_read_without_unpickling(monkeypatch):
    frames = [b"\xff\xd8 frame zero \xff\xd9", b"\xff\xd8 one \xff\xd9", b"\xff\xd8 frame zero \xff\xd9"]
    arr = np.empty(3, dtype=object)
    arr[:] = frames
    for protocol in (2, 3, 4, 5):
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(arr))
        pickle.dump(arr, buf, protocol=protocol)  # what numpy writes, at each protocol
        buf.seek(0)
        monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
        monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
        out = npy_bytes.read_bytes_array(buf, "images_jpeg_bytes")
        assert [bytes(b) for b in out] == frames, protocol


@pytest.mark.parametrize("items, word", [
    ([b"ok", "a str"], "str"),
    ([b"ok", 3], "int"),
])
def test_object_arrays_of_other_things_are_refused(items, word):
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=True)
    buf.seek(0)
    with pytest.raises(InputError, match=word):
        npy_bytes.read_bytes_array(buf, "images_jpeg_bytes")


def test_the_package_never_allows_pickle():
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if "allow_pickle=True" in p.read_text() or "weights_only=False" in p.read_text()
                 or re.search(r"pickle\.loads?\(|Unpickler\(", p.read_text())]
    assert offenders == []
